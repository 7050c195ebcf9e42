"""EmoDB (Berlin Database of Emotional Speech) file discovery: the second corpus, for cross-corpus tests.

File name ``SSTTTEV``: speaker ``SS``, text ``TTT``, emotion letter ``E`` (German initials), version ``V``.
Six of its seven emotions exist in RAVDESS; boredom (``L``) has no RAVDESS class and is left out.
Accepts the official ``wav/*.wav`` layout and the project's ``wav/*.flac`` copy.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from emostream.paths import data_dir

logger = logging.getLogger(__name__)

#: Emotion letter → RAVDESS label (None: no RAVDESS class).
EMOTIONS = {"W": "angry", "L": None, "E": "disgust", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral"}
SPEAKERS = (3, 8, 9, 10, 11, 12, 13, 14, 15, 16)
FOUR_CLASSES = ("angry", "happy", "neutral", "sad")


class EmoDBError(RuntimeError):
    """An EmoDB root that cannot be used."""


def parse_emodb_name(name: str) -> dict:
    stem = Path(name).stem
    if len(stem) != 7 or not stem[:2].isdigit() or stem[5] not in EMOTIONS:
        raise ValueError(f"{name}: expected SSTTTEV (speaker, text, emotion letter, version)")
    speaker = int(stem[:2])
    if speaker not in SPEAKERS:
        raise ValueError(f"{name}: unknown speaker {stem[:2]}")
    return {"speaker": speaker, "text": stem[2:5], "letter": stem[5], "emotion": EMOTIONS[stem[5]]}


def index_emodb(root: str | Path | None = None, include_unmapped: bool = False) -> pd.DataFrame:
    """Rows ``path`` (absolute), ``file`` (relative to the root), ``emotion``, ``actor`` (speaker number),
    ``corpus``; sorted by file name."""
    root = data_dir("emodb", root)
    folder = root / "wav" if (root / "wav").is_dir() else root
    if not folder.is_dir():
        raise EmoDBError(f"EmoDB root {root} does not exist; pass --emodb-dir or set $EMODB_DIR")
    rows = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".wav", ".flac"):
            continue
        try:
            fields = parse_emodb_name(path.name)
        except ValueError as exc:
            logger.warning("skipped %s: %s", path.name, exc)
            continue
        if fields["emotion"] is None and not include_unmapped:
            continue
        rows.append({"path": str(path.resolve()), "file": str(path.relative_to(root)), "emotion": fields["emotion"],
                     "actor": fields["speaker"],
                     "corpus": "emodb", "channel": "speech"})
    if not rows:
        raise EmoDBError(f"no EmoDB clips under {folder} (expected SSTTTEV.wav or .flac)")
    return pd.DataFrame(rows)
