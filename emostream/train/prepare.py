"""Labels, the stratified split and oversampling of the training part, as the reference does them.

Everything works on row indices so the exact test files can be written out and oversampling is
provably confined to the training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Row indices into the feature matrix; ``train_oversampled`` repeats training rows only."""

    classes: list[str]  # label order: index i of the model's output is classes[i]
    y: np.ndarray  # (n,) integer labels in ``classes`` order
    train: np.ndarray
    test: np.ndarray
    train_oversampled: np.ndarray


def encode_labels(labels) -> tuple[np.ndarray, list[str]]:
    """``LabelEncoder`` order (sorted label names) and integer codes."""
    from sklearn.preprocessing import LabelEncoder

    encoder = LabelEncoder()
    y = encoder.fit_transform(np.asarray(labels))
    return y.astype(np.int64), [str(c) for c in encoder.classes_]


def split_and_oversample(labels, test_fraction: float = 0.2, seed: int = 42) -> Split:
    """Stratified ``train_test_split`` with ``seed``, then ``RandomOverSampler`` on the training rows."""
    from imblearn.over_sampling import RandomOverSampler
    from sklearn.model_selection import train_test_split

    y, classes = encode_labels(labels)
    rows = np.arange(len(y))
    train, test = train_test_split(rows, test_size=test_fraction, stratify=y, random_state=seed)
    sampler = RandomOverSampler(random_state=seed)
    resampled, _ = sampler.fit_resample(train.reshape(-1, 1), y[train])
    return Split(classes=classes, y=y, train=train, test=test, train_oversampled=resampled.ravel())

