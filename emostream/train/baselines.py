"""Speaker baselines for feature version 4, from the clip banks, per fold.

A speaker's baseline is the mean band profile (``features.band_profile``) of their per-window-version windows,
taken the way the windows it is subtracted from are cut (the two ways differ by more than speakers differ: the
scored windows carry the noise floor around a clip, the dB frames do not). ``ClipProfiles`` holds each clip's
profile sums once; ``ClipProfiles.for_fold`` gives a fold's ``FoldBaselines``, each from the fold's own rows:
- ``training``: per augmentation variant, over 100-frame stretches of the dB frames training crops come from, at
  the test hop, over the speaker's *training* clips of that variant (a training actor's stream would have heard
  that channel all along; no validation or test clip contributes, whatever the protocol);
- ``heard``: over the speaker's *other* clips' scored windows within the same part (validation, test, another
  corpus) — the clip is scored by a stream that has heard the rest of the speaker first (all their emotions; a
  speaker with one clip in the part gets that clip's own profile);
- ``prior``: the mean over the training speakers of their training clips' scored-window baseline: where a stream
  of the fold's model starts (the exported contract's ``baseline_prior``).
Rows a fold does not use hold NaN, so a baseline taken from the wrong part cannot pass unnoticed.
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
class FoldBaselines:
    training: dict[str, np.ndarray]  # variant → (n_rows, n_mels): a training row's speaker's baseline in that variant
    heard: np.ndarray  # (n_rows, n_mels): a scored row's speaker's baseline over their other clips in its part
    prior: np.ndarray  # (n_mels,) the training speakers' mean baseline


@dataclass(frozen=True)
class ClipProfiles:
    """Per clip (row): its profile sums and window counts, per variant from the dB frames and from its scored
    windows; one speaker key per row (``speaker_keys``)."""

    db_sums: dict[str, tuple[np.ndarray, np.ndarray]]  # variant → ((n_rows, n_mels) sums, (n_rows,) counts)
    window_sums: tuple[np.ndarray, np.ndarray]  # the scored windows' ((n_rows, n_mels), (n_rows,))
    speakers: np.ndarray

    def for_fold(self, train: np.ndarray, parts: list[np.ndarray]) -> FoldBaselines:
        """Baselines of a fold: ``train`` rows, and the scored ``parts`` (validation, test, cross; each its own)."""
        n_rows, n_mels = self.window_sums[0].shape
        training = {variant: per_speaker(sums, counts, self.speakers, train, leave_out=False)
                    for variant, (sums, counts) in self.db_sums.items()}
        heard = np.full((n_rows, n_mels), np.nan)
        for rows in parts:
            if rows is not None and len(rows):
                heard[rows] = per_speaker(*self.window_sums, self.speakers, rows, leave_out=True)[rows]
        streamed = per_speaker(*self.window_sums, self.speakers, train, leave_out=False)
        _, first = np.unique(self.speakers[train], return_index=True)
        return FoldBaselines(training, heard, streamed[train[first]].mean(axis=0))


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


def per_speaker(sums: np.ndarray, counts: np.ndarray, speakers: np.ndarray, rows: np.ndarray,
                leave_out: bool) -> np.ndarray:
    """(n_rows, n_mels): for each of ``rows``, its speaker's mean profile over the speaker's windows among ``rows``
    (``leave_out``: among the speaker's other clips in ``rows``); NaN for the rows not in ``rows``."""
    out = np.full(sums.shape, np.nan)
    rows = np.asarray(rows)
    for speaker in np.unique(speakers[rows]):
        mine = rows[speakers[rows] == speaker]
        total, n = sums[mine].sum(axis=0), counts[mine].sum()
        if not leave_out or len(mine) == 1:
            out[mine] = total / n
        else:
            out[mine] = (total - sums[mine]) / (n - counts[mine])[:, None]
    return out


def clip_profiles(banks: dict[str, ClipBank], speakers: np.ndarray, config: LogMelConfig) -> ClipProfiles:
    """The profile sums of every row of the banks (``speakers``: one key per row, ``speaker_keys``)."""
    db_sums = {variant: db_profile_sums(bank, config) for variant, bank in banks.items()}
    logger.info("speaker profiles of %d clips, %d speakers (%s)", len(speakers), len(np.unique(speakers)),
                ", ".join(db_sums))
    return ClipProfiles(db_sums, window_profile_sums(banks["orig"], config), np.asarray(speakers))
