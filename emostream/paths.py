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
