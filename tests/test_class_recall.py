"""scripts/class_recall.py: per-class recall from committed fold results, over the folds two runs share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scriptload import load_script

CLASSES = ["angry", "calm", "sad"]


@pytest.fixture(scope="module")
def script():
    return load_script("class_recall")


def _run(path: Path, folds: dict[str, tuple[list[int], list[list[float]]]]) -> Path:
    """A run folder whose folds hold (test labels, test clip probabilities); EmoDB's part lacks "calm"."""
    path.mkdir()
    (path / "evaluation.json").write_text(json.dumps({"classes": CLASSES}))
    rows = [{"fold": name, "clip_probabilities": {
        "y_true": {"test": y, "cross": [0, 2]},
        "tail_average": {"test": p, "cross": [[0.1, 0.5, 0.4], [0.2, 0.1, 0.7]]}}} for name, (y, p) in folds.items()]
    (path / "folds.json").write_text(json.dumps(rows))
    return path


def test_recall_per_class_averages_over_the_shared_folds_only(script, tmp_path, capsys):
    run = _run(tmp_path / "run", {
        "fold 1": ([0, 0, 1, 2], [[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4]]),
        "fold 2": ([0, 1, 2], [[0.6, 0.4, 0], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]])})
    base = _run(tmp_path / "base", {"fold 2": ([0, 1, 2], [[1, 0, 0], [0, 1, 0], [0, 0, 1]])})
    fold_1 = script.run_recalls(run, "test", ["fold 1"])
    assert fold_1 == {"angry": 0.5, "calm": 1.0, "sad": 0.0}
    assert script.run_recalls(run, "test") == {"angry": 0.75, "calm": 0.5, "sad": 0.5}
    assert script.run_recalls(run, "cross") == {"angry": 0.0, "sad": 1.0}  # only the classes the part has
    lacking = _run(tmp_path / "lacking", {"fold 1": ([0, 0], [[1, 0, 0], [0, 1, 0]]),
                                          "fold 2": ([0, 2], [[1, 0, 0], [0, 0, 1]])})
    assert script.run_recalls(lacking, "test") == {"angry": 0.75, "sad": 1.0}  # a class over the folds that hold it
    with pytest.raises(ValueError, match="none of the folds"):
        script.run_recalls(run, "test", ["fold 9"])
    assert script.main([str(run), str(base)]) == 0
    out = capsys.readouterr().out
    assert "over 1 shared folds" in out and "calm       0.000 | 1.000 (-1.000)" in out
