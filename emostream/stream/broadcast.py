"""``ScoreBroadcaster``: fan score messages out to WebSocket subscribers without letting any hold others back.

``publish`` runs on the event loop. A subscriber that keeps up gets the message written straight to
its socket on that same loop turn; one that has fallen behind (messages queued, or its socket buffer
full) gets it through its own bounded queue and sender task instead: when the queue is full its oldest
message is dropped and counted. Every message carries the subscriber's running ``dropped`` count.
Messages are JSON-encoded once, not once per subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import numpy as np
from websockets.asyncio.server import broadcast

from emostream.messages import encode

logger = logging.getLogger(__name__)


class Subscriber:
    def __init__(self, websocket, max_queue: int, write_limit_bytes: int = 32768):
        self.websocket = websocket
        self.queue: deque[str] = deque()
        self.max_queue = max_queue
        self.write_limit_bytes = write_limit_bytes
        self.dropped = 0
        self.sent = 0
        self._sending = False
        self._wakeup = asyncio.Event()

    def writes_freely(self) -> bool:
        """Nothing queued or in flight and the socket's buffer nearly empty: a direct write cannot block."""
        transport = getattr(self.websocket, "transport", None)
        return (not self.queue and not self._sending and transport is not None
                and transport.get_write_buffer_size() < self.write_limit_bytes)

    def enqueue(self, encoded_without_brace: str) -> None:
        """The slow path: this subscriber's own bounded queue, drained by its sender task."""
        if len(self.queue) >= self.max_queue:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(encoded_without_brace)
        self._wakeup.set()

    async def pump(self) -> None:
        """Send queued messages in order until the connection closes (then the handler cleans up)."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self.queue:
                head = self.queue.popleft()
                self._sending = True
                try:
                    await self.websocket.send(f'{head},"dropped":{self.dropped}}}')
                finally:
                    self._sending = False
                self.sent += 1

    async def drain(self, timeout_s: float) -> None:
        """Wait until the queue is empty (used at shutdown so a finished stream is delivered whole)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.queue and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)


class ScoreBroadcaster:
    """The set of subscribers and the latest messages' counters; lives on the event loop's thread."""

    def __init__(self, max_queue: int = 64, write_limit_bytes: int = 32768):
        if max_queue < 1:  # a queue of 0 would pop from an empty deque on every window for a stuck client
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.max_queue = max_queue
        self.write_limit_bytes = write_limit_bytes
        self.subscribers: set[Subscriber] = set()
        self.published = 0
        self.dropped_by_departed = 0
        self.publish_seconds: deque[float] = deque(maxlen=1000)  # event-loop time per window, all subscribers

    def add(self, websocket) -> Subscriber:
        subscriber = Subscriber(websocket, self.max_queue, self.write_limit_bytes)
        self.subscribers.add(subscriber)
        return subscriber

    def remove(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.discard(subscriber)
            self.dropped_by_departed += subscriber.dropped

    def publish(self, message: dict, is_window: bool | None = None) -> None:
        """Send ``message`` to every subscriber; a ``scores`` message (unless ``is_window`` says otherwise)
        also counts as a published window."""
        if is_window is None:
            is_window = message.get("type") == "scores"
        started = time.perf_counter()
        encoded = encode(message)
        head = encoded[:-1]  # the closing brace is added per subscriber, after its drop count
        keeping_up: dict[int, list[Subscriber]] = {}
        for subscriber in self.subscribers:
            if subscriber.writes_freely():
                keeping_up.setdefault(subscriber.dropped, []).append(subscriber)
            else:
                subscriber.enqueue(head)
        # Fast path: written now, on this loop turn, without waking a task; one text per drop count.
        for dropped, group in keeping_up.items():
            broadcast([s.websocket for s in group], f'{head},"dropped":{dropped}}}')
            for s in group:
                s.sent += 1
        if is_window:
            self.published += 1
            self.publish_seconds.append(time.perf_counter() - started)

    def publish_ms(self) -> dict:
        """The daemon's own share of fan-out: p50/p99 of the time ``publish`` took over the last windows."""
        if not self.publish_seconds:
            return {"p50": None, "p99": None}
        a = np.array(self.publish_seconds) * 1e3
        return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3)}

    @property
    def dropped_total(self) -> int:
        return self.dropped_by_departed + sum(s.dropped for s in self.subscribers)
