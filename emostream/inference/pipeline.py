"""From raw source frames to score messages: mix down → resample → log-Mel windows → model → gate/smooth.

``EmotionPipeline`` is plain and synchronous: the offline path, file scoring and tests call it directly;
the daemon's ``AnalysisWorker`` (``emostream.stream.worker``) runs it on its own thread.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from emostream import messages as msg
from emostream.inference.logmel_stream import LogMelStream
from emostream.inference.model import EmotionModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    """Streaming settings. The hop is rounded to whole STFT hops (512 samples at 22050 Hz)."""

    hop_s: float = 0.25
    smoothing: float = 0.0  # share of the previous smoothed scores kept per window (EMA); 0 = off
    silence_dbfs: float = -50.0  # windows quieter than this (RMS, dBFS) are marked silence, not classified

    def hop_frames(self, sample_rate_hz: int, stft_hop_samples: int) -> int:
        return max(1, round(self.hop_s * sample_rate_hz / stft_hop_samples))


class EmotionPipeline:
    """Feed (frames, channels) float32 at ``input_rate_hz``; get one score message (dict) per window."""

    def __init__(self, model: EmotionModel, config: PipelineConfig, input_rate_hz: int, input_channels: int = 1):
        if not 0.0 <= config.smoothing < 1.0:
            raise ValueError("smoothing must be in [0, 1)")
        self.model, self.config = model, config
        self.features = model.contract.feature_config()
        self.input_rate_hz, self.input_channels = input_rate_hz, input_channels
        self.stream = LogMelStream(self.features, config.hop_frames(self.features.sample_rate_hz,
                                                                    self.features.hop_samples))
        self.hop_s = self.stream.hop_samples / self.features.sample_rate_hz
        self.nonfinite_samples = 0
        self.reset()

    def reset(self) -> None:
        self.stream.reset()
        self._resampler = None
        if self.input_rate_hz != self.features.sample_rate_hz:
            import soxr

            self._resampler = soxr.ResampleStream(self.input_rate_hz, self.features.sample_rate_hz, 1,
                                                  dtype="float32", quality="HQ")
        self._smoothed = None
        self.windows_out = 0

    def warm_up(self) -> None:
        """Run one silent window through features and model, then forget it: the first real window
        must not pay for lazy set-up (filterbank, allocator, onnxruntime's first run)."""
        n = self.features.window_samples
        self.stream.push(np.zeros(n, np.float32) + 1e-3 * np.sin(np.arange(n, dtype=np.float32)))
        self.model.predict(np.zeros((1, self.features.n_mels, self.features.window_frames), np.float32))
        self.reset()

    def to_model_rate(self, frames: np.ndarray, last: bool = False) -> np.ndarray:
        """Mono float32 at the model's rate; NaN/Inf samples become 0 and are counted."""
        frames = np.asarray(frames, dtype=np.float32)
        mono = frames.mean(axis=1) if frames.ndim == 2 and frames.shape[1] > 1 else frames.reshape(-1)
        bad = ~np.isfinite(mono)
        if bad.any():
            if not self.nonfinite_samples:
                logger.warning("input holds NaN/Inf samples: replaced by 0 (counted in /healthz)")
            self.nonfinite_samples += int(bad.sum())
            mono = np.where(bad, 0.0, mono).astype(np.float32)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last)
        return mono

    def process(self, frames: np.ndarray, last: bool = False) -> list[dict]:
        ready_time = time.time()  # the samples completing these windows are in hand from here on
        started = time.perf_counter()
        windows = self.stream.push(self.to_model_rate(frames, last))
        if not windows:
            return []
        features_ms = (time.perf_counter() - started) * 1e3 / len(windows)
        sr = self.features.sample_rate_hz
        voiced = [w for w in windows if w.level_dbfs >= self.config.silence_dbfs]
        inference_ms = 0.0
        scores = {}
        if voiced:
            started = time.perf_counter()
            probabilities = self.model.predict(np.stack([w.features for w in voiced]))
            inference_ms = (time.perf_counter() - started) * 1e3 / len(voiced)
            scores = {w.index: p for w, p in zip(voiced, probabilities, strict=True)}
        messages = []
        for w in windows:
            p = scores.get(w.index)
            if p is not None and self.config.smoothing > 0:
                s = self.config.smoothing
                self._smoothed = p if self._smoothed is None else s * self._smoothed + (1 - s) * p
                p = self._smoothed
            messages.append(msg.scores(seq=w.index, start_s=w.start_sample / sr, end_s=w.end_sample / sr,
                                       ready_time=ready_time, level_dbfs=w.level_dbfs, labels=self.model.labels,
                                       p=p, features_ms=features_ms, inference_ms=inference_ms))
        self.windows_out += len(messages)
        return messages
