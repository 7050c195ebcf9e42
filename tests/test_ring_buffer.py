import threading

import numpy as np
import pytest

from emostream.stream.ring_buffer import RingBuffer


def test_wraps_around_and_keeps_order():
    ring = RingBuffer(10)
    assert ring.write(np.arange(7, dtype=np.float32)) == 7
    np.testing.assert_array_equal(ring.read(5)[:, 0], np.arange(5))
    assert ring.write(np.arange(7, 15, dtype=np.float32)) == 8
    np.testing.assert_array_equal(ring.read()[:, 0], np.arange(5, 15))
    assert ring.available == 0 and ring.overrun_frames == 0


def test_overrun_is_counted_not_hidden():
    ring = RingBuffer(8, channels=2)
    assert ring.write(np.ones((6, 2), np.float32)) == 6
    assert ring.write(np.full((5, 2), 2, np.float32)) == 2
    assert ring.overrun_frames == 3 and ring.overrun_events == 1
    out = ring.read()
    assert out.shape == (8, 2) and out[-1, 1] == 2


def test_rejects_bad_sizes():
    with pytest.raises(ValueError):
        RingBuffer(0)


def test_concurrent_producer_and_consumer_lose_and_reorder_nothing():
    """A producer writing odd-sized blocks as fast as it can, a consumer reading odd amounts."""
    ring = RingBuffer(1000, channels=2)
    total = 300_000
    data = np.stack([np.arange(total), -np.arange(total)], axis=1).astype(np.float32)
    received = []
    stop = threading.Event()

    def produce():
        rng = np.random.default_rng(1)
        pos = 0
        while pos < total:
            n = int(rng.integers(1, 700))
            assert ring.write_all(data[pos : pos + n], stop)
            pos += n
        ring.close()

    def consume():
        rng = np.random.default_rng(2)
        while True:
            ring.wait_for_data(0.5)
            chunk = ring.read(int(rng.integers(1, 900)))
            received.append(chunk)
            if ring.closed and ring.available == 0:
                break

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    out = np.concatenate(received)
    np.testing.assert_array_equal(out, data)
    assert ring.overrun_frames == 0


def test_live_producer_never_waits_when_consumer_stalls():
    ring = RingBuffer(100)
    written = [ring.write(np.zeros(30, np.float32)) for _ in range(5)]
    assert written == [30, 30, 30, 10, 0]
    assert ring.overrun_frames == 50 and ring.overrun_events == 2
