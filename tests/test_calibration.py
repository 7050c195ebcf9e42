"""emostream-calibration: accuracy against the top probability, per part of a run, from its per-clip probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emostream.confidence import check_bands, confidence_word, describe_bands
from emostream.train import calibration as cal

ROOT = Path(__file__).resolve().parent.parent


def _answers(tops: list[float], right: list[bool], n_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Probability rows with the given top probabilities (the rest spread evenly), true labels right or not."""
    p = np.array([[t] + [(1 - t) / (n_classes - 1)] * (n_classes - 1) for t in tops])
    return p, np.array([0 if ok else 1 for ok in right])


def test_words_follow_the_bands_and_the_table_counts_each_answer_under_its_word():
    p, y = _answers([0.95, 0.61, 0.6, 0.45, 0.4, 0.3], [True, True, False, True, False, False])
    top_p, correct = cal.top_and_correct(p, y)
    table = {w["word"]: w for w in cal.word_table(top_p, correct)}
    assert [confidence_word(t) for t in top_p] == ["sure", "sure", "sure", "fairly sure", "fairly sure", "unsure"]
    assert table["sure"]["n"] == 3 and table["sure"]["accuracy"] == pytest.approx(2 / 3)
    assert table["fairly sure"]["n"] == 2 and table["fairly sure"]["accuracy"] == 0.5
    assert table["unsure"]["n"] == 1 and table["unsure"]["accuracy"] == 0.0
    assert sum(w["share"] for w in table.values()) == pytest.approx(1.0)
    assert [b["min_top_p"] for b in describe_bands()][-1] == 0.0
    for bad in (((0.4, "a"), (0.6, "b"), (0.0, "c")), ((0.6, "a"), (0.4, "b")), ((0.6, "a"), (0.0, "a"))):
        with pytest.raises(ValueError, match="falling"):
            check_bands(bad)  # rising, no word below 0.4, one word twice


def test_calibration_error_is_zero_when_accuracy_matches_confidence_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    tops = np.repeat([0.35, 0.55, 0.75, 0.95], 200)
    calibrated = [bool(r) for r in np.concatenate([np.arange(200) < round(200 * t) for t in (0.35, 0.55, 0.75, 0.95)])]
    top_p, correct = cal.top_and_correct(*_answers(list(tops), calibrated))
    assert cal.calibration_error(cal.reliability_bins(top_p, correct)) < 1e-9
    overconfident = list(rng.random(len(tops)) < 0.3)  # right 30 % of the time whatever it says
    top_p, correct = cal.top_and_correct(*_answers(list(tops), overconfident))
    assert cal.calibration_error(cal.reliability_bins(top_p, correct)) > 0.25


def test_bins_cover_every_answer_once_and_withholding_gives_fewer_answers_as_the_threshold_rises():
    p, y = _answers([0.125, 0.3, 0.5, 0.99, 1.0], [False, True, True, True, True], n_classes=8)
    top_p, correct = cal.top_and_correct(p, y)
    bins = cal.reliability_bins(top_p, correct)
    assert sum(b["n"] for b in bins) == 5 and bins[-1]["n"] == 2  # 1.0 falls in the last, closed bin
    assert [b["n"] for b in bins[:4]] == [1, 1, 0, 1]  # 0.3 opens the second bin, 0.5 the fourth
    over, y_over = np.array([[1.0005, 0.0, 0.0], [0.3, 0.4, 0.3]]), np.array([0, 1])  # a row summing to 1 + 5e-4
    top_over, right_over = cal.top_and_correct(over, y_over)
    assert top_over[0] == 1.0 and sum(b["n"] for b in cal.reliability_bins(top_over, right_over)) == 2
    assert cal.reliability_bins(top_over, right_over)[2]["n"] == 1  # 0.4 opens the third bin
    assert all(b["accuracy"] is None for b in bins if not b["n"])
    curve = cal.withholding_curve(top_p, correct)
    shares = [c["share_given"] for c in curve]
    assert shares[0] == 1.0 and shares == sorted(shares, reverse=True)
    assert curve[0]["accuracy"] == 0.8 and next(c for c in curve if c["threshold"] == 0.9)["accuracy"] == 1.0


def test_rows_that_are_not_probabilities_are_refused():
    with pytest.raises(ValueError, match="finite"):
        cal.top_and_correct(np.array([[np.nan, 0.5, 0.5]]), np.array([0]))
    with pytest.raises(ValueError, match="sum to 1"):
        cal.top_and_correct(np.array([[0.9, 0.9, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match="one row per label"):
        cal.top_and_correct(np.array([[1.0, 0.0]]), np.array([0, 1]))


def _run(path: Path, source: str = "tail_average") -> Path:
    path.mkdir()
    (path / "evaluation.json").write_text(json.dumps({"protocol": "emobox", "classes": ["a", "b", "c"]}))
    folds = [{"fold": f"emobox fold {k}", "clip_probabilities": {
        "rows": {"test": [0, 1], "cross": [5]}, "y_true": {"val": [], "test": [0, 2], "cross": [1]},
        source: {"val": [], "test": [[0.7, 0.2, 0.1], [0.5, 0.1, 0.4]], "cross": [[0.8, 0.1, 0.1]]}}}
        for k in (1, 2)]
    (path / "folds.json").write_text(json.dumps(folds))
    return path


def test_the_corpus_protocols_test_part_is_reported_as_the_other_corpus(tmp_path):
    """Before, a RAVDESS → EmoDB run's EmoDB clips were called "unseen actors: RAVDESS actors the run never heard"."""
    run = _run(tmp_path / "run")
    (run / "evaluation.json").write_text(json.dumps({"protocol": "corpus", "classes": ["a", "b", "c"]}))
    folds = json.loads((run / "folds.json").read_text())
    for fold in folds:
        for key in ("rows", "y_true", "tail_average"):
            fold["clip_probabilities"][key].pop("cross")
    (run / "folds.json").write_text(json.dumps(folds))
    result = cal.report(run)
    assert set(result["parts"]) == {"cross"} and result["parts"]["cross"]["n"] == 4
    text = cal.markdown(result)
    assert "other corpus" in text and "unseen actors" not in text


def test_parts_pool_every_fold_and_skip_empty_ones(tmp_path):
    parts = cal.load_parts(_run(tmp_path / "run"))
    assert set(parts) == {"test", "cross"}  # the empty validation part is left out
    assert parts["test"][0].shape == (4, 3) and list(parts["test"][1]) == [0, 2, 0, 2]
    result = cal.report(tmp_path / "run")
    assert result["parts"]["test"]["accuracy"] == 0.5 and result["parts"]["cross"]["accuracy"] == 0.0
    with pytest.raises(ValueError, match="no 'checkpoint' probabilities"):
        cal.load_parts(tmp_path / "run", "checkpoint")
    with pytest.raises(ValueError, match="no folds.json"):
        cal.load_parts(tmp_path)
    (tmp_path / "run" / "evaluation.json").unlink()
    with pytest.raises(ValueError, match="no readable evaluation.json"):
        cal.report(tmp_path / "run")


def test_cli_writes_its_three_files_and_refuses_a_folder_that_is_not_a_run_in_one_line(tmp_path, capsys):
    run = _run(tmp_path / "run")
    assert cal.main([str(run), "--out", str(tmp_path / "out")]) == 0
    assert {f.name for f in (tmp_path / "out").iterdir()} == {"calibration.json", "calibration.md", "calibration.png"}
    written = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert written["parts"]["test"]["n"] == 4
    assert "| sure (≥ 0.6) |" in (tmp_path / "out" / "calibration.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cal.main([str(tmp_path / "nothing-here")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("(not an emostream-evaluate or "
                                                                      "emostream-ensemble folder)")


def test_the_committed_view_of_the_shipped_construction_is_what_its_run_gives(tmp_path):
    """The calibration files committed beside the shipped construction's six-fold run regenerate from its folds."""
    run = ROOT / "models" / "evaluation" / "emobox-6folds-90ep-mixed-ensemble-4"
    assert cal.main([str(run), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "calibration.md").read_text() == (run / "calibration.md").read_text()  # rounded: no float noise
    fresh = json.loads((tmp_path / "calibration.json").read_text())
    assert fresh["parts"]["test"]["n"] == 1440  # the EmoBox folds' 1440 speech clips, each once
    held = fresh["parts"]["cross"]["answers_of_its_classes"]  # EmoDB lacks calm and surprised
    assert sorted(held["classes"]) == ["angry", "disgust", "fearful", "happy", "neutral", "sad"]
    assert held["n"] < fresh["parts"]["cross"]["n"] and held["accuracy"] > fresh["parts"]["cross"]["accuracy"]


EIGHT = ("angry", "calm", "sad", "disgust", "fearful", "happy", "neutral", "surprised")


def _scored_line(file: str, p: list[float] | None, labels=EIGHT) -> str:
    """A row of emostream-score: ``p`` for the first classes, the rest 0."""
    full = None if p is None else dict(zip(labels, list(p) + [0.0] * (len(labels) - len(p)), strict=True))
    return json.dumps({"file": file, "seq": 0, "top": None, "top_p": None, "probabilities": full})


def test_scored_rows_take_their_truth_from_ravdess_and_emodb_names(tmp_path):
    scored = tmp_path / "windows.jsonl"
    scored.write_text("\n".join([
        _scored_line("/x/Actor_21/03-01-05-01-01-01-21.flac", [0.7, 0.2, 0.1]),  # angry, right
        _scored_line("/x/Actor_21/03-01-05-01-01-01-21.flac", [0.2, 0.7, 0.1]),  # angry, said calm
        _scored_line("/x/Actor_21/03-01-04-01-01-01-21.flac", None),  # sad, not classified: left out
        _scored_line("/e/wav/15a01Ta.flac", [0.1, 0.1, 0.8]),  # EmoDB sad, right
        _scored_line("/e/wav/15a01La.flac", [0.1, 0.8, 0.1]),  # EmoDB boredom: no class of the model
    ]) + "\n")
    parts = cal.load_scored([scored])
    assert list(parts["ravdess"][1]) == [0, 0] and list(parts["emodb"][1]) == [2]
    assert cal.main(["--scored", str(scored), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert result["parts"]["ravdess"]["accuracy"] == 0.5 and result["parts"]["emodb"]["accuracy"] == 1.0
    assert "RAVDESS files" in (tmp_path / "out" / "calibration.md").read_text()
    # RAVDESS rows of one class are a small sample, not a corpus lacking classes; EmoDB's view is over its six
    assert "answers_of_its_classes" not in result["parts"]["ravdess"]
    assert result["kind"] == "scored" and result["parts"]["emodb"]["n"] == 1


@pytest.mark.parametrize("lines,match", [
    ([_scored_line("/x/clip.wav", [0.5, 0.25, 0.25])], "true emotion is not in its name"),
    ([_scored_line("/e/15a01Ta.flac", [0.5, 0.5]), _scored_line("/e/15a01Ta.flac", [0.5, 0.5], EIGHT[::-1])],
     "differ"),
    ([_scored_line("/e/15a01Ta.flac", [0.5, 0.5], ("angry", "sad"))], "not the eight RAVDESS classes"),
    ([json.dumps({"file": "/e/15a01Ta.flac", "probabilities": dict.fromkeys(EIGHT)})], "not a finite number"),
    ([_scored_line("/e/15a01Ta.flac", [float("nan"), 0.5, 0.5])], "not a finite number"),
    ([_scored_line("/e/15a01Ta.flac", [True, False])], "not a finite number"),
    (["{not json"], "not an emostream-score JSON line"),
    ([_scored_line("/e/15a01Ta.flac", None)], "no classified row"),
])
def test_scored_rows_that_cannot_be_judged_are_one_line_errors(tmp_path, capsys, lines, match):
    scored = tmp_path / "bad.jsonl"
    scored.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=match):
        cal.load_scored([scored])
    with pytest.raises(SystemExit) as exit_info:
        cal.main(["--scored", str(scored), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and match in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("argv,match", [
    ([], "a run folder or --scored"), (["RUN", "--scored", "a.jsonl"], "a run folder or --scored"),
    (["--scored", "a.jsonl"], "--out"), (["--scored", "a.jsonl", "--out", "o", "--source", "checkpoint"], "--source")])
def test_a_run_and_scored_files_are_one_or_the_other(tmp_path, capsys, argv, match):
    with pytest.raises(SystemExit) as exit_info:
        cal.main([str(tmp_path) if a == "RUN" else a for a in argv])
    assert exit_info.value.code == 2 and match in capsys.readouterr().err.strip().splitlines()[-1]
