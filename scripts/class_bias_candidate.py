"""Candidate 5 of the selection log (models/evaluation/selection-rule.md), re-computable from committed results.

Per fold, one additive offset per class on the log-probabilities of the tail-averaged output, fitted on that fold's
validation clips by minimising the class-balanced negative log-likelihood (offsets only, mean zero), then applied
unchanged to the unseen test actors and to EmoDB. Prints, per fold, validation / test / cross-corpus UAR before and
after, and the rule's figure (mean of test UAR and cross-corpus UAR).

    python scripts/class_bias_candidate.py models/evaluation/emobox-folds3-6-90ep-wideband-ensemble-2
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from emostream.train.evaluate import scores

logger = logging.getLogger("class_bias_candidate")
PARTS = ("val", "test", "cross")


def log_probabilities(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, 1e-7, 1.0))


def fit_offsets(p: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Offsets (natural-log units, mean zero) minimising the class-balanced NLL of softmax(log p + offsets)."""
    lp = log_probabilities(p)
    weight = 1.0 / np.bincount(y, minlength=n_classes)[y]
    onehot = np.eye(n_classes)[y]

    def loss(offsets: np.ndarray) -> tuple[float, np.ndarray]:
        z = lp + offsets
        z = z - z.max(axis=1, keepdims=True)
        log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        nll = -(weight * log_softmax[np.arange(len(y)), y]).sum() / weight.sum()
        grad = (weight[:, None] * (np.exp(log_softmax) - onehot)).sum(axis=0) / weight.sum()
        return float(nll), grad

    offsets = minimize(loss, np.zeros(n_classes), jac=True, method="L-BFGS-B").x
    return offsets - offsets.mean()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for folder in map(Path, argv if argv is not None else sys.argv[1:]):
        classes = json.loads((folder / "evaluation.json").read_text())["classes"]
        figures = []
        for row in json.loads((folder / "folds.json").read_text()):
            probabilities, truth = row["clip_probabilities"]["tail_average"], row["clip_probabilities"]["y_true"]
            offsets = fit_offsets(np.array(probabilities["val"]), np.array(truth["val"]), len(classes))
            uar = {}
            for part in PARTS:
                lp, y = log_probabilities(np.array(probabilities[part])), np.array(truth[part])
                uar[part] = (scores(y, lp.argmax(1))["uar"], scores(y, (lp + offsets).argmax(1))["uar"])
            figures.append([(uar["test"][i] + uar["cross"][i]) / 2 for i in (0, 1)])
            logger.info("%s %s offsets %s", row["fold"], " ".join(f"{p} {a:.3f}→{b:.3f}" for p, (a, b) in uar.items()),
                        " ".join(f"{c} {o:+.2f}" for c, o in zip(classes, offsets, strict=True)))
        before, after = np.mean(figures, axis=0)
        logger.info("%s: rule figure %.4f → with offsets %.4f", folder.name, before, after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
