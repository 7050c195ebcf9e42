"""The committed model reproduces its card on the real test split, through the daemon's own code path."""

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
    test = pd.read_csv(MODELS / "test_files.csv")
    labels = json.loads((MODELS / "labels.json").read_text())
    return EmotionModel(DEFAULT_MODEL_PATH), summary, test, labels


def test_one_window_per_clip_accuracy_matches_the_export_parity_record(shipped, ravdess_dir, tmp_path):
    """compute_log_mel_spect of each test clip (its first 100 frames), as emostream-export scored them."""
    from emostream.train.featurize import extract_features

    model, summary, test, labels = shipped
    assert model.labels == labels and model.contract.test_accuracy == summary["test_accuracy"]
    parity = json.loads((MODELS / "emotion_crnn.parity.json").read_text())
    features = extract_features(ravdess_dir, list(test["path"]), cache_dir=tmp_path)
    y = np.array([labels.index(e) for e in test["emotion"]])
    accuracy = np.mean(model.predict(features.windows).argmax(axis=1) == y)
    assert accuracy == pytest.approx(parity["onnx_accuracy"], abs=1e-9) == parity["keras_accuracy"]


@pytest.mark.slow
def test_streamed_clip_accuracy_matches_the_card(shipped, ravdess_dir, tmp_path):
    """Every test clip streamed through LogMelStream; the mean over its windows is the clip's score."""
    from emostream.train.clipbank import clip_bank

    model, summary, test, labels = shipped
    bank = clip_bank(ravdess_dir, list(test["path"]), cache_dir=tmp_path)
    y = np.array([labels.index(e) for e in test["emotion"]])
    pred = [model.predict(w.astype(np.float32)).mean(axis=0).argmax() for w in bank.windows]
    assert np.mean(np.array(pred) == y) == pytest.approx(summary["test_accuracy"], abs=1e-9)
