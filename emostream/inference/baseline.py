"""A stream's speaker baseline (feature version 4): state the daemon keeps per stream, one step per window.

The baseline is a running mean of the band profiles (``features.band_profile``) of the stream's classified windows.
It starts at the prior the model carries (its training speakers' mean baseline) counted as
``BASELINE_PRIOR_WINDOWS`` windows, so a stream's first seconds are heard against an average speaker and the
stream's own voice takes over as it talks; after ``BASELINE_MEMORY_WINDOWS`` windows (≈ 1 minute of speech at
the 0.25 s hop) every new window moves it by the same small step, so a new speaker replaces an old one within
minutes. Both counts are at a hop of ``BASELINE_HOP_FRAMES`` frames: a stream at another hop counts the same
seconds (a hop of 1 frame weighs the prior as 220 windows). Each window is heard relative to the baseline
*including* itself.
"""

from __future__ import annotations

import numpy as np

from emostream.features import (
    BASELINE_HOP_FRAMES,
    BASELINE_MEMORY_WINDOWS,
    BASELINE_PRIOR_LIMIT,
    BASELINE_PRIOR_WINDOWS,
    band_profile,
    relative_to_baseline,
    usable_baseline_prior,
)


class StreamBaseline:
    """Feed per-window-version windows in stream order; get them back relative to the running baseline."""

    def __init__(self, prior, hop_frames: int = BASELINE_HOP_FRAMES):
        self.replace_prior(prior)
        if hop_frames < 1:
            raise ValueError("hop_frames must be at least 1")
        per_hop = BASELINE_HOP_FRAMES / hop_frames
        self.prior_windows = BASELINE_PRIOR_WINDOWS * per_hop  # the prior's weight, in windows of this hop
        self.memory_windows = max(1, round(BASELINE_MEMORY_WINDOWS * per_hop))
        self.reset()

    def replace_prior(self, prior) -> None:
        """Where the next stream starts (a reloaded model's prior); the current stream's baseline goes on."""
        if not usable_baseline_prior(prior):
            raise ValueError(f"a baseline prior is one finite number per mel band, below {BASELINE_PRIOR_LIMIT:g}")
        self.prior = np.asarray(prior, dtype=np.float64).copy()

    def reset(self) -> None:
        self.mean = self.prior.copy()
        self.windows = 0  # counted up to memory_windows

    def update(self, window: np.ndarray) -> np.ndarray:
        """Count one classified window (n_mels, frames) into the baseline; returns the baseline (n_mels,)."""
        self.windows = min(self.windows + 1, self.memory_windows)
        self.mean += (band_profile(window) - self.mean) / (self.prior_windows + self.windows)
        return self.mean

    def relative(self, windows: np.ndarray) -> np.ndarray:
        """(n, n_mels, frames) windows in stream order → feature version 4, each after counting it in."""
        return np.stack([relative_to_baseline(w, self.update(w)) for w in windows]) if len(windows) else \
            np.asarray(windows, dtype=np.float32)
