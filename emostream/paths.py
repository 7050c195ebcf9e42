"""Where things are: the files shipped inside the package, and the data sets' default locations.

Installed code finds its own files through ``importlib.resources`` (never the repository layout), so a
wheel installed anywhere serves the same model, sample and dashboard as a checkout does.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def asset(name: str) -> Path:
    """A file shipped in ``emostream/assets`` (the default model, the sample clip, the dashboard)."""
    return Path(str(files("emostream").joinpath("assets", name)))


def why_not_a_file(path: Path, what: str) -> str | None:
    """None when ``path`` is a file to open; otherwise the one-line reason, naming it as ``what`` ("audio file",
    "model file"): a folder given where a file belongs is said to be a folder, not "not found"."""
    if path.is_file():
        return None
    if path.is_dir():
        return f"{what} {path} is a folder, not a file"
    return f"{what} {path} is not a regular file" if path.exists() else f"{what} {path} not found"


DEFAULT_MODEL_PATH = asset("emotion_crnn.onnx")
DEFAULT_SAMPLE = asset("sample.flac")
DASHBOARD = asset("dashboard.html")

#: Data sets: an explicit path wins, then the environment variable, then ``../shared/data/<name>``
#: beside the working directory (where a checkout's tests and CI run).
DATA_DIR_ENVS = {"ravdess": "RAVDESS_DIR", "emodb": "EMODB_DIR"}


def data_dir(corpus: str, explicit: str | Path | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    env = DATA_DIR_ENVS[corpus]
    if os.environ.get(env):
        return Path(os.environ[env])
    return Path.cwd().parent / "shared" / "data" / corpus
