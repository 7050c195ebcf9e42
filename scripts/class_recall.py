"""Per-class recall of one evaluation run against another, from committed results (a view beside a rule's figure).

Each fold's clip-mean probabilities of the tail-averaged weights (``folds.json``), argmax over all the model's classes
as the figures take it; recall per true class, averaged over the folds both runs have. Writes nothing; prints a table.

    python scripts/class_recall.py models/evaluation/emobox-6folds-90ep-level-floor \\
        models/evaluation/emobox-6folds-90ep-wideband
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PARTS = ("test", "cross")


def fold_recalls(fold: dict, part: str, classes: list[str]) -> dict[str, float]:
    """Recall of each class present among ``part``'s true labels, from the tail average's clip probabilities."""
    probabilities = fold["clip_probabilities"]
    predicted = np.asarray(probabilities["tail_average"][part]).argmax(axis=1)
    truth = np.asarray(probabilities["y_true"][part])
    return {classes[c]: float(np.mean(predicted[truth == c] == c)) for c in np.unique(truth)}


def run_recalls(run: Path, part: str, folds: list[str] | None = None) -> dict[str, float]:
    """Mean per-class recall over the run's folds (only those named in ``folds``, when given)."""
    classes = json.loads((run / "evaluation.json").read_text())["classes"]
    per_fold = [fold_recalls(f, part, classes) for f in json.loads((run / "folds.json").read_text())
                if folds is None or f["fold"] in folds]
    if not per_fold:
        raise ValueError(f"{run}: none of the folds {folds}")
    present = [c for c in classes if any(c in r for r in per_fold)]  # a class only some folds hold: over those
    return {c: float(np.mean([r[c] for r in per_fold if c in r])) for c in present}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("baseline", type=Path)
    args = p.parse_args(argv)
    shared = sorted({f["fold"] for f in json.loads((args.run / "folds.json").read_text())}
                    & {f["fold"] for f in json.loads((args.baseline / "folds.json").read_text())})
    print(f"per-class recall over {len(shared)} shared folds: {args.run.name} | {args.baseline.name}")
    for part in PARTS:
        mine, theirs = run_recalls(args.run, part, shared), run_recalls(args.baseline, part, shared)
        print(f"{part}:")
        for c in [c for c in mine if c in theirs]:
            print(f"  {c:10s} {mine[c]:.3f} | {theirs[c]:.3f} ({mine[c] - theirs[c]:+.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
