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
    """Each listed clip's first window (compute_log_mel_spect, the model's own feature version), as
    emostream-export scored them."""
    from emostream.export.cli import parity_windows

    model, summary, listed, labels = shipped
    assert model.labels == labels and model.contract.test_accuracy == summary["test_accuracy"]
    assert model.contract.run_id == summary["run_id"]
    parity = json.loads((MODELS / "emotion_crnn.parity.json").read_text())
    windows, y = parity_windows(MODELS / "test_files.csv", labels, ravdess_dir, tmp_path, model.features, emodb_dir)
    assert len(windows) == len(listed) == parity["n_windows"]
    accuracy = np.mean(model.predict(windows).argmax(axis=1) == y)
    assert accuracy == pytest.approx(parity["onnx_accuracy"], abs=1e-9) == parity["keras_accuracy"]


@pytest.mark.slow
def test_streamed_clip_accuracy_matches_the_card(shipped, ravdess_dir, emodb_dir, tmp_path):
    """Every listed clip streamed as the daemon streams speech; the mean over its windows is the clip's score."""
    from emostream.features import from_version_1
    from emostream.train.clipbank import clip_bank

    model, summary, listed, labels = shipped
    roots = {"ravdess": ravdess_dir, "emodb": emodb_dir}
    correct = []
    for corpus, part in listed.groupby(listed.get("corpus", pd.Series("ravdess", index=listed.index))):
        bank = clip_bank(roots[corpus], list(part["path"]), seed=42, cache_dir=tmp_path)  # evaluate's seed
        y = np.array([labels.index(e) for e in part["emotion"]])
        pred = [model.predict(from_version_1(w, model.features)).mean(axis=0).argmax()
                for w in bank.windows]
        correct += list(np.array(pred) == y)
    assert np.mean(correct) == pytest.approx(summary["listed_accuracy"], abs=1e-9)
