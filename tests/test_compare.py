import dataclasses
import json

import numpy as np
import pytest

from emostream.train import compare
from emostream.train.evaluate import PRESETS


def _evaluation(folder, name, protocol, accuracies, val_uars, **preset):
    folds = [{"fold": f"fold {i}", "epoch": 2, "epochs_run": 3,
              "history": [{"val_uar": 0.1}, {"val_uar": v}, {"val_uar": 0.2}],
              "test": {"accuracy": a, "macro_f1": a - 0.01, "uar": a + 0.01},
              "test_first_window": {"accuracy": a - 0.1}}
             for i, (a, v) in enumerate(zip(accuracies, val_uars, strict=True))]
    summary = {k: {"mean": float(np.mean([f["test"][k] for f in folds])),
                   "std": float(np.std([f["test"][k] for f in folds]))} for k in ("accuracy", "macro_f1", "uar")}
    folder.mkdir(parents=True)
    (folder / "evaluation.json").write_text(json.dumps({
        "protocol": protocol, "preset": {**dataclasses.asdict(PRESETS["improved"]), "name": name, **preset},
        "summary": summary, "folds": folds}))
    return folder


def test_compare_reads_the_chosen_checkpoints_validation_and_diffs_settings_per_protocol(tmp_path):
    base = _evaluation(tmp_path / "base", "improved", "random", [0.80], [0.82])
    mix = _evaluation(tmp_path / "mix", "mixup", "random", [0.83], [0.85], mixup_alpha=0.2,
                      conv_filters=[32, 64])  # JSON lists equal to the default tuples are no change
    folds = _evaluation(tmp_path / "folds", "improved", "actors", [0.70, 0.60], [0.72, 0.66])
    partial = _evaluation(tmp_path / "partial", "mixup", "actors", [0.65], [0.7], mixup_alpha=0.2)
    out = tmp_path / "report" / "ablation.md"
    assert compare.main([str(base), str(mix), str(folds), str(partial), "--out", str(out)]) == 0
    rows = {line.split("|")[1].split(" (")[0].strip() + line.split("|")[2].strip(): line
            for line in out.read_text().splitlines() if line.startswith("| `")}
    mixup_row = rows["`mixup`random"]
    assert "mixup_alpha: 0.0 → 0.2" in mixup_row and "conv_filters" not in mixup_row
    assert "+3.0 pt" in mixup_row and "0.850" in mixup_row
    actors_row = rows["`improved`actors"]  # its own protocol's baseline, not the random one
    assert "(baseline)" in actors_row and "0.690" in actors_row and "65.00% ± 5.0%" in actors_row
    # One fold of two: compared with the baseline's same fold (0.65 − 0.70), not with its two-fold mean (0.65).
    assert "-5.0 pt (on the 1 shared folds)" in rows["`mixup`actors"]
    runs = json.loads(out.with_suffix(".json").read_text())
    assert [r["val_uar"] for r in runs] == pytest.approx([0.82, 0.85, 0.69, 0.7])
    assert out.with_suffix(".png").stat().st_size > 0
    assert not (out.parent / "ablation-transfer.png").exists()  # no run has a cross-corpus figure to place


def test_compare_refuses_a_folder_without_results_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare.main([str(tmp_path), "--out", str(tmp_path / "x.md")])
    assert "not a readable evaluation result" in capsys.readouterr().err


def test_a_run_with_tail_averaged_weights_gets_a_second_row_compared_with_its_checkpoints(tmp_path):
    run = _evaluation(tmp_path / "run", "shipped-v1", "emobox", [0.50, 0.40], [0.5, 0.6])
    data = json.loads((run / "evaluation.json").read_text())
    for fold, (acc, cross) in zip(data["folds"], ((0.56, 0.30), (0.42, 0.40)), strict=True):
        fold["tail_average"] = {"epochs": [30, 40], "val": {"uar": 0.55},
                                "test": {"accuracy": acc, "macro_f1": acc, "uar": acc + 0.02},
                                "cross": {"uar": cross}}
    (run / "evaluation.json").write_text(json.dumps(data))
    out = tmp_path / "ablation.md"
    other = _evaluation(tmp_path / "other", "shipped-v1", "emobox", [0.30], [0.5])  # another fold: baseline
    assert compare.main([str(other), str(run), "--out", str(out)]) == 0
    (tail_row,) = [line for line in out.read_text().splitlines() if line.startswith("| `shipped-v1 (tail average)`")]
    cells = [c.strip() for c in tail_row.split("|")]
    assert cells[1] == "`shipped-v1 (tail average)` (run)"  # which run folder it comes from
    assert cells[3] == "weights averaged over epochs 30–40 (Δ against this run's checkpoints)"
    assert cells[5] == "49.00% ± 7.0%" and cells[6] == "+4.0 pt"  # fold by fold against the checkpoints
    assert cells[9] == "0.350" and cells[10] == f"{(0.51 + 0.35) / 2:.3f}"  # cross UAR, selection
    assert (tmp_path / "ablation-transfer.png").stat().st_size > 0 and "![transfer chart](ablation-transfer.png)" in \
        out.read_text()


def test_the_transfer_chart_places_only_runs_on_the_fold_set_most_of_them_share(tmp_path):
    def row(name, folds, cross):
        return {"name": name, "cross_uar": cross, "fold_accuracy": dict.fromkeys(folds, 0.5)}

    runs = [row("a", ["fold 3", "fold 4"], 0.40), row("b", ["fold 1"], 0.30), row("c", ["fold 4", "fold 3"], 0.41),
            row("d", ["fold 3", "fold 4"], None), row("e", ["fold 1"], 0.35), row("f", ["fold 3", "fold 4"], 0.42)]
    folds, placed = compare.transfer_points(runs)
    assert folds == ["fold 3", "fold 4"] and [r["name"] for r in placed] == ["a", "c", "f"]
    assert compare.transfer_points([row("d", ["fold 3"], None)]) == ([], [])
    # numbered on the chart and keyed in the table: seed ensembles' tail averages only
    tail = {**row("g-ensemble-2 (tail average)", ["fold 3"], 0.4), "uar": 0.6, "selection": 0.5, "folder": "runs/g",
            "change": "seed ensemble of 2 runs of these settings (probabilities averaged), each weights averaged"}
    checkpoints = {**tail, "name": "g-ensemble-2"}
    single_tail = {**tail, "change": "weights averaged over epochs 68–90"}
    assert compare.decision_points([checkpoints, single_tail, tail]) == [tail]
    assert compare.transfer_key([checkpoints, tail])[2:] == [
        "| 1 | `g-ensemble-2 (tail average)` (g) | 0.600 | 0.400 | 0.5000 |"]
    compare.plot_transfer([checkpoints, single_tail, tail], ["fold 3"], tmp_path / "t.png")
    compare.plot_transfer([single_tail], ["fold 3"], tmp_path / "single.png")  # nothing numbered
    assert (tmp_path / "t.png").stat().st_size > 0 and (tmp_path / "single.png").stat().st_size > 0
    assert compare.transfer_points([{**row("h", [], 0.4)}]) == ([], [])  # no folds: nothing to place


def test_a_mixed_ensembles_row_names_each_members_setting_its_preset_holds_at_the_default():
    mixed = {"member_versions": ["3", "4"], "member_freq_pool": [3, 1], "member_train_floor_snr_db": [[0, 0], [6, 30]]}
    change = compare.ensemble_change(mixed, 2)
    # MEMBER_SETTINGS order, and the card's wording (one helper): a pair stays a pair, not "0,0, 6,30"
    assert change.endswith("members differ in train_floor_snr_db: (0, 0), (6, 30); freq_pool: 3, 1")
    as_tuples = {**mixed, "member_train_floor_snr_db": [(0, 0), (6, 30)]}  # a preset's tuples: the same words
    assert compare.ensemble_change(as_tuples, 2) == change
    assert "member_versions" not in change and "versions" not in change
    assert compare.ensemble_change({}, 2) == "seed ensemble of 2 runs of these settings (probabilities averaged)"
    assert compare.ensemble_change(mixed, None) is None  # a single run


def test_a_run_without_test_figures_is_one_line_not_a_traceback(tmp_path):
    """Before: a ship run (validation only) gave KeyError, an --onnx run (no history) IndexError."""
    summary = {key: {"mean": 0.5, "std": 0.0} for key in ("macro_f1", "uar")}  # no "accuracy": no test part
    record = {"protocol": "ship", "preset": dataclasses.asdict(PRESETS["wideband"]), "summary": summary,
              "folds": [{"fold": "ship", "epoch": 3, "epochs_run": 3, "history": []}]}
    (tmp_path / "evaluation.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="not a run this table compares") as refused:
        compare.load_runs(tmp_path)
    assert "\n" not in str(refused.value) and "lacks test or validation figures" in str(refused.value)
    exported = {**record, "protocol": "corpus",  # an --onnx run: test figures, no history (before: "lacks test")
                "preset": {**record["preset"], "name": "model.onnx (exported, not retrained)"},
                "summary": {**summary, "accuracy": {"mean": 0.5, "std": 0.0}}}
    (tmp_path / "evaluation.json").write_text(json.dumps(exported))
    with pytest.raises(ValueError, match=r"it scored an exported model \(--onnx\): no training history"):
        compare.load_runs(tmp_path)
