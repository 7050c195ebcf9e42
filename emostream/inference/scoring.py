"""Scoring speech as the daemon hears it: an utterance inside a continuous stream.

One definition serves evaluation, file scoring, the public API and the daemon's utterance results:
- ``embed_in_noise_floor``: a clip becomes a stretch of stream — a quiet noise floor before and after
  it (and under it), never a pad in the dB domain. A clip shorter than one window is scored this way too,
  with the floor filling the rest of the window, as a live stream would present it.
- ``stream_windows``: the daemon's sliding windows over that stream (``LogMelStream``), with the level
  gate the daemon applies (windows quieter than ``silence_dbfs`` are not classified).
- ``UtteranceTracker``: runs of classified windows → one utterance result each (mean probabilities).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from emostream.features import DEFAULT_CONFIG, LogMelConfig
from emostream.inference.logmel_stream import LogMelStream, Window, level_dbfs


@dataclass(frozen=True)
class StreamContext:
    """How a clip is laid into a stream for scoring. Units in the names."""

    context_s: float = 0.5  # noise floor before and after the clip
    floor_dbfs: float = -60.0  # RMS level of the floor (below the daemon's −50 dBFS gate)
    hop_frames: int = 11  # 0.255 s at 22050 Hz, the daemon's default hop
    silence_dbfs: float = -50.0  # windows quieter than this are skipped, as the daemon skips them


DEFAULT_CONTEXT = StreamContext()


def noise_floor(n: int, floor_dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """White noise with RMS ``floor_dbfs`` relative to full scale."""
    return (rng.standard_normal(n) * 10 ** (floor_dbfs / 20)).astype(np.float32)


def clip_seed(name: str, seed: int = 0) -> int:
    """A stable per-clip seed (the floor under a clip is the same in every run)."""
    return zlib.crc32(f"{seed}:{name}".encode())


def embed_in_noise_floor(y: np.ndarray, context: StreamContext = DEFAULT_CONTEXT, seed: int = 0,
                         config: LogMelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """``y`` (mono, at the model's rate) with ``context_s`` of noise floor before and after and the floor under it.

    The tail grows when needed so that the stream holds at least one full window.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    lead = int(round(context.context_s * config.sample_rate_hz))
    tail = max(lead, config.window_samples - lead - y.size)
    stream = noise_floor(lead + y.size + tail, context.floor_dbfs, rng)
    stream[lead : lead + y.size] += y
    return stream


def is_short(n_samples: int, config: LogMelConfig = DEFAULT_CONFIG) -> bool:
    """A clip shorter than one window: no window holds only the clip."""
    return n_samples < config.window_samples


def level_gate_hears(y: np.ndarray, windows: list[Window], context: StreamContext = DEFAULT_CONTEXT,
                     config: LogMelConfig = DEFAULT_CONFIG) -> bool:
    """Does the level gate hear the clip ``y`` at all: one shorter than a window by its own level (as the daemon
    judges a stream that short), a longer one by any of its ``windows`` (``stream_windows``) at or above the gate."""
    if is_short(y.size, config):
        return level_dbfs(y) >= context.silence_dbfs
    return any(w.level_dbfs >= context.silence_dbfs for w in windows)


def stream_windows(y: np.ndarray, context: StreamContext = DEFAULT_CONTEXT, seed: int = 0,
                   config: LogMelConfig = DEFAULT_CONFIG) -> tuple[list[Window], list[Window]]:
    """All windows of the embedded clip, and those loud enough to be classified (all, if none is), at the version a
    window alone determines (``config.per_window()``: feature version 4's baseline is the caller's state)."""
    windows = LogMelStream(config.per_window(), context.hop_frames).push(embed_in_noise_floor(y, context, seed,
                                                                                               config))
    voiced = [w for w in windows if w.level_dbfs >= context.silence_dbfs]
    return windows, voiced or windows


def clip_windows(y: np.ndarray, context: StreamContext = DEFAULT_CONTEXT, seed: int = 0,
                 config: LogMelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """The (n, n_mels, frames) windows whose mean probability is the clip's score (feature versions a window alone
    determines; version 4 needs the stream's baseline on top: ``inference.baseline``)."""
    if config.needs_baseline:
        raise ValueError(f"feature version {config.feature_version}: clip windows are config.per_window()'s; "
                         "apply inference.baseline.StreamBaseline to them")
    _, voiced = stream_windows(y, context, seed, config)
    return np.stack([w.features for w in voiced])


class UtteranceTracker:
    """Consecutive classified windows form an utterance; the first unclassified window (or ``finish``) ends it.

    ``push(start_s, end_s, p)`` with ``p`` None for a window that was not classified (silence, no speech)
    returns the finished utterance as ``(start_s, end_s, n_windows, mean_p)``, or None.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._sum = None
        self._count = 0
        self._start_s = self._end_s = 0.0
        self.finished = 0

    def push(self, start_s: float, end_s: float, p) -> tuple[float, float, int, np.ndarray] | None:
        if p is None:
            return self.finish()
        p = np.asarray(p, dtype=np.float64)
        if self._count == 0:
            self._sum, self._start_s = np.zeros_like(p), start_s
        self._sum += p
        self._count += 1
        self._end_s = end_s
        return None

    def finish(self) -> tuple[float, float, int, np.ndarray] | None:
        if self._count == 0:
            return None
        result = (self._start_s, self._end_s, self._count, (self._sum / self._count).astype(np.float32))
        self._sum, self._count = None, 0
        self.finished += 1
        return result
