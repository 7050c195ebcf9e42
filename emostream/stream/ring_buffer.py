"""``RingBuffer``: fixed-size single-producer/single-consumer audio buffer between two threads.

The producer (an audio callback) never blocks and never allocates: it copies into preallocated
memory what fits and counts the rest as overrun. Positions only grow, so each side reads the other's
position without a lock (one Python int assignment each, atomic under the GIL).
"""

from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    """``capacity_frames`` frames of ``channels`` float32 samples."""

    def __init__(self, capacity_frames: int, channels: int = 1):
        if capacity_frames <= 0 or channels <= 0:
            raise ValueError("capacity_frames and channels must be positive")
        self.capacity = capacity_frames
        self.channels = channels
        self._data = np.zeros((capacity_frames, channels), dtype=np.float32)
        self._written = 0  # frames ever written (producer-owned)
        self._read = 0  # frames ever read (consumer-owned)
        self.overrun_frames = 0  # frames the producer had to drop because the buffer was full
        self.overrun_events = 0
        self._data_ready = threading.Event()
        self._space_ready = threading.Event()
        self.closed = False

    @property
    def available(self) -> int:
        return self._written - self._read

    @property
    def free(self) -> int:
        return self.capacity - (self._written - self._read)

    def write(self, frames: np.ndarray) -> int:
        """Copy ``frames`` ((n, channels) or (n,) for mono) in; returns how many fit. Never blocks."""
        n = len(frames)
        fit = min(n, self.capacity - (self._written - self._read))
        if fit < n:
            self.overrun_frames += n - fit
            self.overrun_events += 1
        if fit > 0:
            start = self._written % self.capacity
            first = min(fit, self.capacity - start)
            src = frames if frames.ndim == 2 else frames[:, np.newaxis]
            self._data[start : start + first] = src[:first]
            if fit > first:
                self._data[: fit - first] = src[first:fit]
            self._written += fit
            self._data_ready.set()
        return fit

    def read(self, max_frames: int | None = None) -> np.ndarray:
        """Up to ``max_frames`` (default: all available) frames, oldest first, as a new (n, channels) array."""
        n = self.available if max_frames is None else min(max_frames, self.available)
        start = self._read % self.capacity
        first = min(n, self.capacity - start)
        out = np.empty((n, self.channels), dtype=np.float32)
        out[:first] = self._data[start : start + first]
        out[first:] = self._data[: n - first]
        self._read += n
        self._space_ready.set()
        return out

    def wait_for_data(self, timeout_s: float) -> bool:
        """Block the consumer until something is available, the buffer closes, or the timeout passes."""
        self._data_ready.clear()
        if self.available or self.closed:
            return True
        return self._data_ready.wait(timeout_s)

    def write_all(self, frames: np.ndarray, stop: threading.Event) -> bool:
        """For sources that may wait (files, stdin): write everything, waiting for space; False if stopped."""
        done = 0
        while done < len(frames):
            self._space_ready.clear()
            done += self.write_nonoverrunning(frames[done:])
            if done < len(frames) and (stop.is_set() or self.closed):
                return False
            if done < len(frames):
                self._space_ready.wait(0.05)
        return True

    def write_nonoverrunning(self, frames: np.ndarray) -> int:
        """Like ``write`` but only what fits, without counting the rest as overrun."""
        fit = min(len(frames), self.free)
        return self.write(frames[:fit]) if fit else 0

    def close(self) -> None:
        """No more data will come: wake the consumer."""
        self.closed = True
        self._data_ready.set()
        self._space_ready.set()
