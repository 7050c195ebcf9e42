"""``LogMelStream``: sliding log-Mel windows over an endless signal, each interior STFT frame computed once.

Window ``k`` covers samples ``[k·hop, k·hop + window_samples)`` and equals
``compute_log_mel_spect`` of exactly that span. Its interior frames (whose 2048-sample analysis
window lies inside the span) are shared with neighbouring windows and come from a frame cache; only
the few edge frames, which ``compute_log_mel_spect`` zero-pads at the span's borders, are computed
per window. Frames are cached in dB (``power_db`` works bin by bin), so only ``standardise_db`` runs
over the whole window. Nothing is emitted before the first window is full.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emostream.features import DEFAULT_CONFIG, LogMelConfig, mel_power_of_frames, power_db, standardise_db


@dataclass(frozen=True)
class Window:
    """One model input. Sample positions count from the start of the stream."""

    index: int
    start_sample: int
    end_sample: int  # exclusive
    features: np.ndarray  # (n_mels, window_frames) float32, standardised
    level_dbfs: float  # RMS level of the span's samples


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level relative to full scale (1.0); −inf dB is floored at −200."""
    if not samples.size:
        return -200.0
    power = float(np.dot(samples, samples))
    if not math.isfinite(power):  # float32 squares overflow beyond ~1e19: redo in float64, never return Inf
        x = samples.astype(np.float64)
        power = float(np.dot(x, x)) if np.isfinite(x).all() else math.inf
    rms = math.sqrt(power / samples.size) if math.isfinite(power) else 1e10
    return 20 * math.log10(min(max(rms, 1e-10), 1e10))


class LogMelStream:
    """Push samples (mono, at the contract's rate) in any chunk size; get the windows completed by them."""

    def __init__(self, config: LogMelConfig = DEFAULT_CONFIG, hop_frames: int = 11):
        if hop_frames < 1:
            raise ValueError("hop_frames must be at least 1 (one STFT hop)")
        if config.needs_baseline:
            raise ValueError(f"feature version {config.feature_version}'s windows depend on the stream's speaker "
                             "baseline: stream config.per_window() and apply inference.baseline.StreamBaseline")
        self.config = config
        self.hop_frames = hop_frames
        self.hop_samples = hop_frames * config.hop_samples
        half = config.n_fft_samples // 2
        # Local frames t whose analysis window crosses the span's borders: computed per window.
        self.left_edge = min(math.ceil(half / config.hop_samples), config.window_frames)
        last_inside = (config.window_samples - half) // config.hop_samples
        self.right_edge_from = max(last_inside + 1, self.left_edge)
        self._cache_size = config.window_frames + hop_frames + 2
        self.reset()

    def reset(self) -> None:
        """Forget all audio: the next sample pushed is sample 0 of a new stream."""
        self._cache = np.zeros((self.config.n_mels, self._cache_size), dtype=np.float32)
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_start = 0  # stream position of self._audio[0]
        self._total = 0  # samples pushed so far
        self._next_frame = math.ceil((self.config.n_fft_samples // 2) / self.config.hop_samples)
        self._next_window = 0

    @property
    def samples_seen(self) -> int:
        return self._total

    @property
    def windows_emitted(self) -> int:
        return self._next_window

    def held_audio(self) -> np.ndarray:
        """A copy of the samples kept for the next window: the whole stream so far while no window is out."""
        return self._audio.copy()

    def _frame_slices(self, first_frame: int, n: int) -> np.ndarray:
        """(n, n_fft) frames of real samples centred at ``(first_frame + i) · hop``."""
        c = self.config
        offset = first_frame * c.hop_samples - c.n_fft_samples // 2 - self._audio_start
        view = np.lib.stride_tricks.sliding_window_view(self._audio[offset:], c.n_fft_samples)
        return view[:: c.hop_samples][:n]

    def _span(self, start: int, stop: int) -> np.ndarray:
        return self._audio[start - self._audio_start : stop - self._audio_start]

    def _compute_frames_through(self, last_frame: int) -> None:
        """Compute cached frames up to ``last_frame`` (inclusive) as far as the audio allows, each once."""
        c = self.config
        available_last = (self._total - c.n_fft_samples // 2) // c.hop_samples
        n = min(last_frame, available_last) + 1 - self._next_frame
        if n > 0:
            db = power_db(mel_power_of_frames(self._frame_slices(self._next_frame, n), c))
            self._cache[:, np.arange(self._next_frame, self._next_frame + n) % self._cache_size] = db
            self._next_frame += n

    def push(self, samples: np.ndarray) -> list[Window]:
        c = self.config
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._audio = np.concatenate([self._audio, samples])
        self._total += samples.size

        windows = []
        while (start := self._next_window * self.hop_samples) + c.window_samples <= self._total:
            # Frames only as far as this window needs, so the cache never overwrites what it still uses.
            self._compute_frames_through(start // c.hop_samples + self.right_edge_from - 1)
            windows.append(self._window(self._next_window, start))
            self._next_window += 1
        self._compute_frames_through(self._total)  # all complete frames: less work at the next window

        # Keep only the audio still needed: the next window's span and the next frame's context.
        keep_from = min(self._next_window * self.hop_samples,
                        self._next_frame * c.hop_samples - c.n_fft_samples // 2)
        if keep_from > self._audio_start:
            self._audio = self._audio[keep_from - self._audio_start :]
            self._audio_start = keep_from
        return windows

    def _window(self, index: int, start: int) -> Window:
        c = self.config
        span = self._span(start, start + c.window_samples)
        half = c.n_fft_samples // 2
        hop = c.hop_samples
        # Edge frames exactly as a centred STFT of the span alone sees them: zero-padded outside it.
        left = np.concatenate([np.zeros(half, np.float32), span[: (self.left_edge - 1) * hop + half]])
        right_start = self.right_edge_from * hop - half
        right = np.concatenate([span[right_start:], np.zeros(half, np.float32)])
        n_right = c.window_frames - self.right_edge_from
        frames = np.concatenate([
            np.lib.stride_tricks.sliding_window_view(left, c.n_fft_samples)[::hop][: self.left_edge],
            np.lib.stride_tricks.sliding_window_view(right, c.n_fft_samples)[::hop][:n_right],
        ])
        edges = power_db(mel_power_of_frames(frames, c))
        first_global = start // hop
        interior = (np.arange(self.left_edge, self.right_edge_from) + first_global) % self._cache_size
        db = np.concatenate([edges[:, : self.left_edge], self._cache[:, interior], edges[:, self.left_edge :]], axis=1)
        # normalise_window = standardise_db(power_db(mel)); power_db is per bin, so cached frames keep their dB.
        return Window(index, start, start + c.window_samples, standardise_db(db, c), level_dbfs(span))
