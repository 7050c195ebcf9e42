"""Labels in the reference's order (the split and oversampling live in ``evaluate``: one training stack)."""

from __future__ import annotations

import numpy as np


def encode_labels(labels) -> tuple[np.ndarray, list[str]]:
    """``LabelEncoder`` order (sorted label names) and integer codes."""
    from sklearn.preprocessing import LabelEncoder

    encoder = LabelEncoder()
    y = encoder.fit_transform(np.asarray(labels))
    return y.astype(np.int64), [str(c) for c in encoder.classes_]
