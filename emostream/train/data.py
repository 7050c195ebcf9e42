"""RAVDESS file discovery and labels from file names.

A RAVDESS root holds ``Audio_Speech_Actors_01-24/Actor_XX/MM-VC-EE-II-SS-RR-AA.wav`` (and the same
under ``Audio_Song_Actors_01-24``); the compact copy in ``../shared/data/ravdess`` uses ``.flac``.
Every audio file found is either parsed into a row or reported as a problem, never dropped silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from emostream.paths import DATA_DIR_ENVS
from emostream.paths import data_dir as data_dir_of

logger = logging.getLogger(__name__)

EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
VOCAL_CHANNELS = {"01": "speech", "02": "song"}
CHANNEL_FOLDERS = {"speech": "Audio_Speech_Actors_01-24", "song": "Audio_Song_Actors_01-24"}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
AUDIO_SUFFIXES = (".wav", ".flac")
EXPECTED_COUNTS = {"speech": 1440, "song": 1012}

DATA_DIR_ENV = DATA_DIR_ENVS["ravdess"]


class DatasetError(RuntimeError):
    """A data set root that cannot be used (missing, empty, wrong layout)."""


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """``data_dir`` if given, else ``$RAVDESS_DIR``, else ``../shared/data/ravdess``."""
    return data_dir_of("ravdess", data_dir)


def parse_ravdess_name(name: str) -> dict:
    """Parse ``MM-VC-EE-II-SS-RR-AA.ext`` into its fields.

    Raises ``ValueError`` naming the field that does not parse.
    """
    stem = Path(name).stem
    parts = stem.split("-")
    if len(parts) != 7 or not all(len(p) == 2 and p.isdigit() for p in parts):
        raise ValueError(f"{name}: expected 7 two-digit fields MM-VC-EE-II-SS-RR-AA")
    modality, channel, emotion, intensity, statement, repetition, actor = parts
    if modality != "03":
        raise ValueError(f"{name}: modality {modality} is not 03 (audio only)")
    if channel not in VOCAL_CHANNELS:
        raise ValueError(f"{name}: unknown vocal channel {channel}")
    if emotion not in EMOTIONS:
        raise ValueError(f"{name}: unknown emotion code {emotion}")
    if intensity not in INTENSITIES:
        raise ValueError(f"{name}: unknown intensity {intensity}")
    if statement not in STATEMENTS:
        raise ValueError(f"{name}: unknown statement {statement}")
    if repetition not in ("01", "02"):
        raise ValueError(f"{name}: unknown repetition {repetition}")
    if not 1 <= int(actor) <= 24:
        raise ValueError(f"{name}: actor {actor} outside 01-24")
    return {
        "emotion": EMOTIONS[emotion],
        "channel": VOCAL_CHANNELS[channel],
        "intensity": INTENSITIES[intensity],
        "statement": int(statement),
        "repetition": int(repetition),
        "actor": int(actor),
    }


@dataclass
class RavdessIndex:
    """The files of a RAVDESS root: parsed rows plus every file that could not be parsed."""

    root: Path
    frame: pd.DataFrame
    problems: list[tuple[str, str]] = field(default_factory=list)


def channel_frame(root: Path, channel: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """One DataFrame for one vocal channel (``speech`` or ``song``), and the files that did not parse."""
    folder = root / CHANNEL_FOLDERS[channel]
    rows, problems = [], []
    if not folder.is_dir():
        return pd.DataFrame(rows), problems
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        rel = path.relative_to(root).as_posix()
        try:
            fields = parse_ravdess_name(path.name)
        except ValueError as exc:
            problems.append((rel, str(exc)))
            continue
        if fields["channel"] != channel:
            problems.append((rel, f"vocal channel {fields['channel']} found under {folder.name}"))
            continue
        rows.append({"path": rel, **fields})
    return pd.DataFrame(rows), problems


def index_ravdess(data_dir: str | Path | None = None, seed: int = 42) -> RavdessIndex:
    """Speech and song frames concatenated and shuffled with ``seed``.

    Raises ``DatasetError`` (one line) when the root is missing or holds no parsable clip.
    """
    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        raise DatasetError(
            f"RAVDESS root {root} does not exist; pass --data-dir, set ${DATA_DIR_ENV}, "
            "or fetch it with `emostream-download --dest DIR`"
        )
    frames, problems = [], []
    for channel in CHANNEL_FOLDERS:
        frame, bad = channel_frame(root, channel)
        frames.append(frame)
        problems.extend(bad)
    frame = pd.concat(frames, ignore_index=True) if any(len(f) for f in frames) else pd.DataFrame()
    if frame.empty:
        raise DatasetError(
            f"no RAVDESS clips under {root}: expected {'/ and '.join(CHANNEL_FOLDERS.values())}/Actor_XX/*.wav|.flac"
        )
    for rel, why in problems:
        logger.warning("skipped %s: %s", rel, why)
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return RavdessIndex(root=root, frame=frame, problems=problems)


def class_distribution(frame: pd.DataFrame) -> pd.DataFrame:
    """Clips per emotion and channel, with totals, in the label order of ``EMOTIONS``."""
    table = pd.crosstab(frame["emotion"], frame["channel"])
    table = table.reindex([e for e in EMOTIONS.values() if e in table.index])
    table["total"] = table.sum(axis=1)
    return table
