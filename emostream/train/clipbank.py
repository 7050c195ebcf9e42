"""Whole-clip features for evaluation and augmented training, computed once and cached on disk.

For every clip and variant (the original, or one waveform augmentation with a per-clip seed):
- ``db``: dB frames of the whole clip (n_mels, n_frames), float16 — random 100-frame crops of these,
  put through ``standardise_db``, are training windows;
- for the original only, ``windows``: the exact windows the daemon classifies while the clip streams
  past inside a quiet noise floor (``inference.scoring.clip_windows``: hop 11 frames, level gate),
  float16 — the test-time inputs. Clips shorter than a window are embedded the same way, never dB-padded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emostream.features import DEFAULT_CONFIG, FEATURE_VERSION, load_audio, mel_power, power_db
from emostream.inference.scoring import (
    DEFAULT_CONTEXT,
    StreamContext,
    clip_seed,
    clip_windows,
    embed_in_noise_floor,
    is_short,
)
from emostream.train.augment import AUGMENTATION_VERSIONS, AUGMENTATIONS, floor_under
from emostream.train.featurize import default_cache_dir, save_npz_atomically

logger = logging.getLogger(__name__)

TEST_HOP_FRAMES = 11


@dataclass
class ClipBank:
    paths: list[str]
    db: list[np.ndarray]  # per clip (n_mels, n_frames) float16
    windows: list[np.ndarray] | None  # per clip (n_windows, n_mels, frames) float16; original variant only


def training_signal(y: np.ndarray, context_s: float, rng: np.random.Generator) -> np.ndarray:
    """The stretch of stream training crops are cut from.

    ``context_s`` > 0: the clip inside a noise floor (random level −75…−50 dBFS, random lead and tail up to
    ``context_s``), so crops hold onsets, offsets and partial speech as the daemon's windows do. A clip shorter
    than one window always gets a floor around it: crops are never padded in the dB domain.
    """
    if context_s <= 0 and not is_short(y.size):
        return y
    floor = StreamContext(context_s=float(rng.uniform(0, context_s)) if context_s > 0 else 0.0,
                          floor_dbfs=float(rng.uniform(-75, -50)))
    return embed_in_noise_floor(y, floor, seed=int(rng.integers(2**31)))


def _clip(args: tuple[str, str, int, float, tuple[int, int]]):
    path, variant, seed, context_s, floor_snr_db = args
    y = load_audio(path)
    rng = np.random.default_rng([seed, zlib.crc32(Path(path).name.encode())])
    if variant != "orig":
        y = AUGMENTATIONS[variant](y, rng)
        y = y / max(1.0, float(np.abs(y).max()))  # keep within full scale like a real recording
    heard = y
    if any(floor_snr_db):  # its own draws, so the copies' other draws stay as they were without a floor
        floor_rng = np.random.default_rng([seed, zlib.crc32(f"{Path(path).name} floor {variant}".encode())])
        heard = floor_under(y, floor_rng, floor_snr_db)
    db = power_db(mel_power(training_signal(heard, context_s, rng))).astype(np.float16)
    if variant != "orig":
        return db, None
    # Test-time inputs: the clip inside a quiet stream, the daemon's windows over it, its level gate.
    return db, clip_windows(y, seed=clip_seed(Path(path).name, seed)).astype(np.float16)


def bank_file_name(paths: list[str], variant: str, seed: int, context_s: float = 0.0,
                   floor_snr_db: tuple[int, int] = (0, 0)) -> str:
    """The cache file of a bank: named by everything its contents depend on, a copy's own version included
    (``augment.AUGMENTATION_VERSIONS``), so a changed augmentation is computed afresh, never read stale."""
    # The bank holds dB frames and version 1 windows whatever version trains (``from_version_1`` derives the others).
    signal = {k: v for k, v in DEFAULT_CONFIG.to_dict().items() if k != "feature_version"}
    augment = {"augment": AUGMENTATION_VERSIONS[variant]} if variant in AUGMENTATION_VERSIONS else {}
    key = hashlib.sha256(json.dumps({"v": FEATURE_VERSION, "variant": variant, "seed": seed, "paths": paths,
                                     "config": signal, "hop": TEST_HOP_FRAMES,
                                     "scoring": dataclasses.asdict(DEFAULT_CONTEXT), "context_s": context_s,
                                     "bank": 2} | ({"floor_snr_db": list(floor_snr_db)} if any(floor_snr_db) else {})
                                    | augment).encode())
    return f"clipbank-{variant}-{key.hexdigest()[:16]}.npz"


def clip_bank(root: Path, paths: list[str], variant: str = "orig", seed: int = 0,
              cache_dir: Path | None = None, workers: int | None = None, context_s: float = 0.0,
              floor_snr_db: tuple[int, int] = (0, 0)) -> ClipBank:
    """Features of ``paths`` (relative to ``root``, or absolute) for one variant, cached on disk.

    ``floor_snr_db`` other than (0, 0): the training frames (not the test windows) hear a white floor that many dB
    (drawn per clip) below the clip's loud frames (``augment.floor_under``)."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache = cache_dir / bank_file_name(paths, variant, seed, context_s, floor_snr_db)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            db = np.split(z["db"], z["db_offsets"][1:-1], axis=1)
            windows = np.split(z["windows"], z["win_offsets"][1:-1]) if "windows" in z else None
        logger.info("clip bank %s: %d clips from cache", variant, len(paths))
        return ClipBank(paths, db, windows)
    jobs = [(str(root / p), variant, seed, context_s, tuple(floor_snr_db)) for p in paths]
    with ProcessPoolExecutor(max_workers=workers or min(os.cpu_count() or 1, 4)) as pool:
        results = list(tqdm(pool.map(_clip, jobs, chunksize=8), total=len(jobs), desc=f"clips ({variant})"))
    db = [r[0] for r in results]
    windows = [r[1] for r in results] if variant == "orig" else None
    arrays = {"db": np.concatenate(db, axis=1), "db_offsets": np.cumsum([0] + [d.shape[1] for d in db])}
    if windows is not None:
        arrays["windows"] = np.concatenate(windows)
        arrays["win_offsets"] = np.cumsum([0] + [len(w) for w in windows])
    save_npz_atomically(cache, **arrays)
    return ClipBank(paths, db, windows)
