"""#14: the robustness table scores every channel condition through the shipped ONNX model, and says how often each
condition changes a clip's answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synth import speechlike

from emostream.train import robustness
from emostream.train.augment import loud_level_dbfs


def test_a_close_microphone_puts_any_take_s_loud_frames_at_minus_25_dbfs():
    take = speechlike(3.0, seed=2)
    for gain_db in (-40.0, -10.0):
        quiet = take * 10 ** (gain_db / 20) / np.abs(take).max()
        raised = robustness.close_microphone(quiet, None)
        assert loud_level_dbfs(raised) == pytest.approx(-25.0, abs=0.01)


def test_every_condition_is_scored_and_changes_are_counted_against_the_clean_take(write_clip, tmp_path):
    from emostream.inference.model import EmotionModel
    from emostream.paths import DEFAULT_MODEL_PATH

    model = EmotionModel(DEFAULT_MODEL_PATH)
    clips = []
    for i, (label, level_db) in enumerate([("calm", -45.0), ("angry", -20.0), ("sad", -38.0)]):
        take = speechlike(3.0, seed=10 + i)
        take = take * 10 ** ((level_db - loud_level_dbfs(take)) / 20)
        clips.append((str(write_clip(f"clip{i}.wav", take)), label))
    results = robustness.evaluate(model, clips)
    assert list(results) == list(robustness.conditions())
    assert results["clean"]["changed"] == 0.0
    for r in results.values():
        assert r["changed"] in (0.0, 1 / 3, 2 / 3, 1.0)
        assert 0.0 <= r["accuracy"] <= 1.0 and r["max_share"] >= 1 / 3
    robustness.write_report(results, tmp_path / "out", "3 synthetic clips", "`tiny.onnx`", "run-7")
    table = (tmp_path / "out" / "robustness.md").read_text()
    assert "| top class changed |" in table and "close microphone" in table
    assert table.startswith("# Robustness of `tiny.onnx`: 3 synthetic clips")  # before: "of the shipped model"
    record = json.loads((tmp_path / "out" / "robustness.json").read_text())
    assert record["conditions"].keys() == results.keys() and (record["model"], record["run_id"]) == ("`tiny.onnx`",
                                                                                                   "run-7")


@pytest.mark.parametrize("argv, message", [
    (["--actors", "0,25"], "--actors '0,25': expected comma-separated actor numbers 1-24"),
    (["--actors", "21,x"], "--actors '21,x': expected comma-separated actor numbers 1-24"),
    (["--data-dir", "/nonexistent/ravdess"], "/nonexistent/ravdess"),
])
def test_bad_arguments_are_a_one_line_error_before_anything_is_scored(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        robustness.main([*argv, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error and error.startswith("emostream-robustness: error:")
    assert not (tmp_path / "out").exists()
