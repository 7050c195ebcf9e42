"""The committed model reproduces its card on the clips its run lists, through the daemon's own code path.

The list (``models/test_files.csv``) is the run's test part, or its validation part when every other clip trained
(the shipped model); paths are relative to each corpus's root (column ``corpus``).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emostream.inference.model import EmotionModel
from emostream.paths import DEFAULT_MODEL_PATH

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def shipped():
    summary = json.loads((MODELS / "summary.json").read_text())
    listed = pd.read_csv(MODELS / "test_files.csv")
    labels = json.loads((MODELS / "labels.json").read_text())
    return EmotionModel(DEFAULT_MODEL_PATH), summary, listed, labels


def test_one_window_per_clip_accuracy_matches_the_export_parity_record(shipped, ravdess_dir, emodb_dir, tmp_path):
    """Each listed clip's first window (the model's per-window version; a model that hears a speaker baseline hears
    each window from its prior, one array per input), as emostream-export scored them."""
    from emostream.export.cli import parity_windows
    from emostream.features import relative_to_baseline, windows_for_inputs

    model, summary, listed, labels = shipped
    assert model.labels == labels and model.contract.test_accuracy == summary["test_accuracy"]
    assert model.contract.run_id == summary["run_id"]
    parity = json.loads((MODELS / "emotion_crnn.parity.json").read_text())
    windows, y = parity_windows(MODELS / "test_files.csv", labels, ravdess_dir, tmp_path, model.features.per_window(),
                                emodb_dir)
    assert len(windows) == len(listed) == parity["n_windows"]
    relative = relative_to_baseline(windows, np.asarray(model.contract.baseline_prior)) \
        if model.features.needs_baseline else None
    accuracy = np.mean(model.predict(windows_for_inputs(model.input_versions, windows, relative)).argmax(axis=1) == y)
    assert accuracy == pytest.approx(parity["onnx_accuracy"], abs=1e-9) == parity["keras_accuracy"]


@pytest.mark.slow
def test_streamed_clip_accuracy_matches_the_card(shipped, ravdess_dir, emodb_dir, tmp_path):
    """Every listed clip streamed as the daemon streams speech; the mean over its windows is the clip's score. A
    model that hears a speaker baseline hears each clip after the speaker's other listed clips, as its card's
    figure was scored (``emostream-ensemble``'s listed scores)."""
    from emostream.export.cli import listed_corpora
    from emostream.features import from_version_1, relative_to_baseline, windows_for_inputs
    from emostream.train.baselines import clip_profiles, speaker_keys
    from emostream.train.clipbank import clip_bank

    model, summary, listed, labels = shipped
    roots = {"ravdess": ravdess_dir, "emodb": emodb_dir}
    paths = [str(roots[c] / p) for c, p in zip(listed_corpora(listed), listed["path"], strict=True)]
    bank = clip_bank(Path("/"), paths, "orig", 42, tmp_path)  # evaluate's seed
    rows, heard = np.arange(len(paths)), None
    if model.features.needs_baseline:
        profiles = clip_profiles({"orig": bank}, speaker_keys(listed_corpora(listed), listed["actor"]), model.features)
        heard = profiles.for_fold(rows, [rows]).heard
    y = np.array([labels.index(e) for e in listed["emotion"]])
    pred = []
    for r in rows:
        per_window = from_version_1(bank.windows[r], model.features.per_window())
        relative = None if heard is None else relative_to_baseline(per_window, heard[r])
        pred.append(model.predict(windows_for_inputs(model.input_versions, per_window, relative)).mean(axis=0).argmax())
    assert np.mean(np.array(pred) == y) == pytest.approx(summary["listed_accuracy"], abs=1e-9)
