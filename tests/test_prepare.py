import numpy as np
import pytest

from emostream.train.prepare import encode_labels, split_and_oversample

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


def test_split_is_stratified_80_20(labels):
    split = split_and_oversample(labels, 0.2, seed=42)
    assert len(split.test) == 491 and len(split.train) == 1961
    assert set(split.train).isdisjoint(split.test)
    assert len(set(split.train) | set(split.test)) == len(labels)
    for code, name in enumerate(split.classes):
        share = np.mean(split.y[split.test] == code)
        assert abs(share - COUNTS[name] / len(labels)) < 1 / len(split.test)


def test_split_depends_on_seed_only(labels):
    a, b, c = (split_and_oversample(labels, 0.2, seed=s) for s in (42, 42, 7))
    np.testing.assert_array_equal(a.test, b.test)
    assert not np.array_equal(a.test, c.test)


def test_oversampling_touches_only_training_rows_and_balances_them(labels):
    split = split_and_oversample(labels, 0.2, seed=42)
    assert set(split.train_oversampled) == set(split.train)
    assert set(split.train_oversampled).isdisjoint(split.test)
    counts = np.bincount(split.y[split.train_oversampled], minlength=len(split.classes))
    assert len(set(counts)) == 1
    assert counts[0] == np.bincount(split.y[split.train]).max()
    assert len(split.train_oversampled) == 8 * 301
