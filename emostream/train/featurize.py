"""Feature extraction for a list of clips, in parallel, cached on disk.

The cache key covers the feature settings, the feature code's version and the exact file list (path
and size), so a change to any of them recomputes instead of reusing stale windows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emostream.features import DEFAULT_CONFIG, FEATURE_VERSION, AudioDecodeError, LogMelConfig, compute_log_mel_spect

logger = logging.getLogger(__name__)


def save_npz_atomically(path: Path, **arrays: np.ndarray) -> None:
    """Write ``path`` so a reader sees the old file or the whole new one, never half of it; each process writes its
    own temporary, so two runs building the same cache at once cannot rename each other's file away."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


CACHE_ENV = "EMOSTREAM_CACHE"


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "emostream" / "features"


@dataclass
class FeatureSet:
    """Windows for the clips that decoded, and the clips that did not (path, reason)."""

    windows: np.ndarray  # (n_ok, n_mels, window_frames) float32
    paths: list[str]  # relative paths of the rows of ``windows``
    failures: list[tuple[str, str]]


def cache_key(root: Path, rel_paths: list[str], config: LogMelConfig) -> str:
    listing = [(p, (root / p).stat().st_size) for p in rel_paths]
    payload = json.dumps({"config": config.to_dict(), "version": FEATURE_VERSION, "files": listing})
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _window_or_error(args: tuple[str, LogMelConfig]) -> np.ndarray | str:
    path, config = args
    try:
        return compute_log_mel_spect(path, config)
    except AudioDecodeError as exc:
        return str(exc)


def extract_features(
    root: Path,
    rel_paths: list[str],
    config: LogMelConfig = DEFAULT_CONFIG,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> FeatureSet:
    """Windows for ``rel_paths`` under ``root``; undecodable files are logged by name and counted."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(root, rel_paths, config)
    cache_file = cache_dir / f"logmel-{key}.npz"
    if cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as cached:
            failures = [tuple(f) for f in json.loads(str(cached["failures"]))]
            logger.info("features: %d windows from cache %s", len(cached["paths"]), cache_file)
            return FeatureSet(cached["windows"], list(cached["paths"]), failures)

    workers = workers or min(os.cpu_count() or 1, 4)
    jobs = [(str(root / p), config) for p in rel_paths]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(
            tqdm(pool.map(_window_or_error, jobs, chunksize=16), total=len(jobs), desc="log-Mel", unit="clip")
        )
    ok = [(p, r) for p, r in zip(rel_paths, results, strict=True) if not isinstance(r, str)]
    failures = [(p, r) for p, r in zip(rel_paths, results, strict=True) if isinstance(r, str)]
    for path, why in failures:
        logger.warning("could not decode %s: %s", path, why)
    shape = (0, config.n_mels, config.window_frames)
    windows = np.stack([r for _, r in ok]) if ok else np.zeros(shape, np.float32)
    paths = [p for p, _ in ok]
    save_npz_atomically(cache_file, windows=windows, paths=np.array(paths), failures=np.array(json.dumps(failures)))
    logger.info("features: computed %d windows (%d failed), cached in %s", len(paths), len(failures), cache_file)
    return FeatureSet(windows, paths, failures)
