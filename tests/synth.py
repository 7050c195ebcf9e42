"""Synthetic test audio with fixed seeds."""

from __future__ import annotations

import numpy as np

from emostream.features import DEFAULT_CONFIG

SR = DEFAULT_CONFIG.sample_rate_hz


def tone(seconds: float, freq_hz: float = 440.0, amplitude: float = 0.3, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def speechlike(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """A chirp with amplitude modulation and a little noise: varied spectra across frames."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 80 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t) ** 2
    return (0.2 * voiced * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
