import asyncio
import json

from emostream.stream.broadcast import ScoreBroadcaster


class FakeSocket:
    """Records what it is sent; ``stuck`` sockets never finish a send (a client that stopped reading)."""

    def __init__(self, stuck=False):
        self.stuck = stuck
        self.received = []

    async def send(self, text):
        if self.stuck:
            await asyncio.Event().wait()
        self.received.append(json.loads(text))


def test_a_stuck_subscriber_never_delays_the_others_and_its_drops_are_counted():
    async def scenario():
        broadcaster = ScoreBroadcaster(max_queue=5)
        fast, stuck = FakeSocket(), FakeSocket(stuck=True)
        subs = [broadcaster.add(fast), broadcaster.add(stuck)]
        pumps = [asyncio.create_task(s.pump()) for s in subs]
        for seq in range(100):
            broadcaster.publish({"type": "scores", "seq": seq})
            await asyncio.sleep(0)  # one loop turn per window, as the daemon gives
        await asyncio.sleep(0.01)
        for p in pumps:
            p.cancel()
        return broadcaster, fast, subs[1]

    broadcaster, fast, stuck_sub = asyncio.run(scenario())
    assert [m["seq"] for m in fast.received] == list(range(100))
    assert all(m["dropped"] == 0 for m in fast.received)
    assert len(stuck_sub.queue) == 5  # bounded: the newest five wait, older ones were dropped
    assert stuck_sub.dropped == 100 - 5 - 1  # one message is stuck in send
    assert broadcaster.dropped_total == stuck_sub.dropped
    broadcaster.remove(stuck_sub)
    assert broadcaster.dropped_total == stuck_sub.dropped and len(broadcaster.subscribers) == 1


def test_drop_count_travels_with_each_message():
    async def scenario():
        broadcaster = ScoreBroadcaster(max_queue=2)
        sock = FakeSocket()
        sub = broadcaster.add(sock)
        for seq in range(5):  # the pump is not running yet: the queue overflows
            broadcaster.publish({"type": "scores", "seq": seq})
        pump = asyncio.create_task(sub.pump())
        await asyncio.sleep(0.01)
        pump.cancel()
        return sock

    sock = asyncio.run(scenario())
    assert [(m["seq"], m["dropped"]) for m in sock.received] == [(3, 3), (4, 3)]
