"""The one split and oversampling: ``evaluate.random_split`` and ``evaluate.oversample`` (emostream-train uses them)."""

import numpy as np
import pytest

from emostream.train.evaluate import oversample, random_split
from emostream.train.prepare import encode_labels

# The real class sizes of RAVDESS speech + song: imbalanced, as the oversampler expects.
COUNTS = {"neutral": 188, "calm": 376, "happy": 376, "sad": 376, "angry": 376, "fearful": 376,
          "disgust": 192, "surprised": 192}


@pytest.fixture(scope="module")
def labels():
    labels = np.concatenate([[name] * n for name, n in COUNTS.items()])
    return np.random.default_rng(0).permutation(labels)


def test_label_order_is_label_encoders_sorted_order(labels):
    y, classes = encode_labels(labels)
    assert classes == sorted(COUNTS)
    assert [classes[i] for i in y[:20]] == list(labels[:20])


def test_split_is_stratified_80_20_and_validation_comes_from_the_training_side(labels):
    y, classes = encode_labels(labels)
    (fold,) = random_split(y, seed=42)
    train_side = np.concatenate([fold["train"], fold["val"]])
    assert len(fold["test"]) == 491 and len(train_side) == 1961
    assert set(train_side).isdisjoint(fold["test"]) and set(fold["train"]).isdisjoint(fold["val"])
    for code, name in enumerate(classes):
        share = np.mean(y[fold["test"]] == code)
        assert abs(share - COUNTS[name] / len(labels)) < 1 / len(fold["test"])


def test_split_depends_on_seed_only(labels):
    y, _ = encode_labels(labels)
    a, b, c = (random_split(y, seed=s)[0] for s in (42, 42, 7))
    np.testing.assert_array_equal(a["test"], b["test"])
    assert not np.array_equal(a["test"], c["test"])


def test_oversampling_touches_only_training_rows_and_balances_them(labels):
    y, classes = encode_labels(labels)
    (fold,) = random_split(y, seed=42)
    rows = oversample(fold["train"], y, seed=42)
    assert set(rows) == set(fold["train"])
    counts = np.bincount(y[rows], minlength=len(classes))
    assert len(set(counts)) == 1 and counts[0] == np.bincount(y[fold["train"]]).max()


def test_oversampling_by_corpus_and_class_balances_every_group():
    y = np.array([0] * 30 + [1] * 10 + [0] * 5 + [1] * 2)
    corpus = np.array(["ravdess"] * 40 + ["emodb"] * 7)
    rows = oversample(np.arange(len(y)), y, seed=0, groups=corpus)
    groups = {(c, k): int(np.sum((corpus[rows] == c) & (y[rows] == k))) for c in ("ravdess", "emodb") for k in (0, 1)}
    assert set(groups.values()) == {30}
