"""Speaker baselines for feature version 4, from the clip banks.

A speaker's baseline is the mean band profile (``features.band_profile``) of their per-window-version windows,
taken the way the windows it is subtracted from are cut (the two ways differ by more than speakers differ: the
scored windows carry the noise floor around a clip, the dB frames do not):
- ``training``: per augmentation variant, over 100-frame stretches of the dB frames training crops come from, at
  the test hop, over all the speaker's clips of that variant (a training actor's stream would have heard that
  channel all along);
- ``heard``: over the speaker's *other* clips' scored windows — the clip is scored by a stream that has heard the
  rest of the speaker first (all their emotions; a speaker with one clip gets that clip's own profile);
- ``streamed``: over all the speaker's scored windows (what a long stream of the speaker converges to; the prior
  a model carries is the mean of its training speakers' ``streamed``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from emostream.features import LogMelConfig, band_profile, from_version_1, standardise_db
from emostream.train.clipbank import TEST_HOP_FRAMES, ClipBank

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeakerBaselines:
    training: dict[str, np.ndarray]  # variant → (n_rows, n_mels): the row's speaker's baseline in that variant
    heard: np.ndarray  # (n_rows, n_mels): the row's speaker's baseline over their other clips (scoring)
    streamed: np.ndarray  # (n_rows, n_mels): the row's speaker's baseline over all their clips' scored windows
    speakers: np.ndarray  # (n_rows,) the speaker keys (``speaker_keys``)

    def prior(self, rows: np.ndarray) -> np.ndarray:
        """(n_mels,) the mean of the baselines of the speakers of ``rows`` (each speaker once): where a stream of a
        model trained on ``rows`` starts."""
        _, first = np.unique(self.speakers[rows], return_index=True)
        return self.streamed[rows[first]].mean(axis=0)


def speaker_keys(corpus, actors) -> np.ndarray:
    """One key per row naming its speaker across corpora ("ravdess-3", "emodb-11")."""
    return np.array([f"{c}-{a}" for c, a in zip(corpus, actors, strict=True)])


def window_profile_sums(bank: ClipBank, config: LogMelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per clip: the sum of its scored windows' band profiles (n_clips, n_mels) and how many windows."""
    base = config.per_window()
    sums = np.stack([band_profile(from_version_1(w, base)).sum(axis=0) for w in bank.windows])
    return sums, np.array([len(w) for w in bank.windows], dtype=float)


def db_profile_sums(bank: ClipBank, config: LogMelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per clip: the band profiles summed over 100-frame stretches of its dB frames, every ``TEST_HOP_FRAMES``."""
    base, frames = config.per_window(), config.window_frames
    sums, counts = [], []
    for db in tqdm(bank.db, desc="baselines", leave=False):
        db = db.astype(np.float32)
        starts = range(0, max(1, db.shape[1] - frames + 1), TEST_HOP_FRAMES)
        sums.append(sum(band_profile(standardise_db(db[:, s : s + frames], base)) for s in starts))
        counts.append(len(starts))
    return np.stack(sums), np.array(counts, dtype=float)


def per_speaker(sums: np.ndarray, counts: np.ndarray, speakers: np.ndarray, leave_out: bool) -> np.ndarray:
    """(n_rows, n_mels) each row's speaker's mean profile over their windows, or over their other clips'."""
    out = np.empty_like(sums)
    for speaker in np.unique(speakers):
        rows = np.flatnonzero(speakers == speaker)
        total, n = sums[rows].sum(axis=0), counts[rows].sum()
        if not leave_out or len(rows) == 1:
            out[rows] = total / n
        else:
            out[rows] = (total - sums[rows]) / (n - counts[rows])[:, None]
    return out


def speaker_baselines(banks: dict[str, ClipBank], speakers: np.ndarray, config: LogMelConfig) -> SpeakerBaselines:
    """Baselines of every row of the banks (``speakers``: one key per row, ``speaker_keys``)."""
    training = {variant: per_speaker(*db_profile_sums(bank, config), speakers, leave_out=False)
                for variant, bank in banks.items()}
    sums, counts = window_profile_sums(banks["orig"], config)
    logger.info("speaker baselines of %d speakers (%s)", len(np.unique(speakers)), ", ".join(training))
    return SpeakerBaselines(training, per_speaker(sums, counts, speakers, leave_out=True),
                            per_speaker(sums, counts, speakers, leave_out=False), np.asarray(speakers))
