"""Seed ensembles: combining runs' per-clip probabilities, the ensemble model, and its export as one graph."""

import json

import numpy as np
import pytest

from emostream.train import ensemble
from emostream.train.ensemble import EnsembleError, combine, combine_fold, ensemble_model

CLASSES = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]


def member(seed: int, y_test, y_cross, rng, fold="emobox fold 3", last_epoch=60) -> dict:
    """A run's fold result as evaluate writes it to folds.json, with random per-clip probabilities."""
    def probs(n):
        p = rng.dirichlet(np.ones(len(CLASSES)), size=n)
        return np.round(p, 5).tolist()

    y_val = [0, 1, 2, 3]
    per_clip = {"y_true": {"val": y_val, "test": y_test, "cross": y_cross},
                "checkpoint": {"val": probs(4), "test": probs(len(y_test)), "cross": probs(len(y_cross))},
                "tail_average": {"val": probs(4), "test": probs(len(y_test)), "cross": probs(len(y_cross))}}
    return {"fold": fold, "epoch": 50, "epochs_run": 60, "n_train": 10, "n_val": 4, "n_test": len(y_test),
            "training_seed": seed, "tail_average": {"epochs": [45, last_epoch]}, "clip_probabilities": per_clip}


@pytest.fixture
def two_members():
    rng = np.random.default_rng(0)
    y_test, y_cross = rng.integers(0, 8, 40).tolist(), [0, 2, 3, 4, 5, 6] * 5
    return [member(44, y_test, y_cross, rng), member(1044, y_test, y_cross, rng, last_epoch=57)]


def test_a_fold_of_the_ensemble_scores_the_mean_of_its_members_probabilities(two_members):
    result = combine_fold(two_members, CLASSES)
    for weights in ("checkpoint", "tail_average"):
        for part in ("val", "test", "cross"):
            mean = np.mean([m["clip_probabilities"][weights][part] for m in two_members], axis=0)
            np.testing.assert_allclose(result["clip_probabilities"][weights][part], mean, atol=1e-5)
    mean_test = np.mean([m["clip_probabilities"]["checkpoint"]["test"] for m in two_members], axis=0)
    y_test = np.array(two_members[0]["clip_probabilities"]["y_true"]["test"])
    assert result["test"]["accuracy"] == pytest.approx(np.mean(mean_test.argmax(axis=1) == y_test))
    assert result["y_pred"] == mean_test.argmax(axis=1).tolist()
    mean_tail = np.mean([m["clip_probabilities"]["tail_average"]["cross"] for m in two_members], axis=0)
    y_cross = np.array(two_members[0]["clip_probabilities"]["y_true"]["cross"])
    assert result["tail_average"]["cross"]["accuracy"] == pytest.approx(np.mean(mean_tail.argmax(1) == y_cross))
    assert result["training_seeds"] == [44, 1044] and result["members"] == 2
    assert result["tail_average"]["member_epochs"] == [[45, 60], [45, 57]]  # what each member averaged
    from emostream.train.evaluate import tail_span

    assert tail_span(result["tail_average"]) == "45–60+45–57"


def test_runs_that_cannot_form_an_ensemble_are_refused(two_members):
    same_seed = [two_members[0], {**two_members[1], "training_seed": 44}]
    with pytest.raises(EnsembleError, match="share a training seed"):
        combine_fold(same_seed, CLASSES)
    other_clips = json.loads(json.dumps(two_members[1]))
    other_clips["clip_probabilities"]["y_true"]["test"][0] += 1
    with pytest.raises(EnsembleError, match="different clips"):
        combine_fold([two_members[0], other_clips], CLASSES)
    old = {k: v for k, v in two_members[1].items() if k != "clip_probabilities"}
    with pytest.raises(EnsembleError, match="no per-clip probabilities"):
        combine_fold([two_members[0], old], CLASSES)
    missing_part = json.loads(json.dumps(two_members[1]))
    del missing_part["clip_probabilities"]["tail_average"]["cross"]
    with pytest.raises(EnsembleError, match="different parts"):
        combine_fold([two_members[0], missing_part], CLASSES)
    elsewhere = {**two_members[1], "fold": "emobox fold 4"}
    with pytest.raises(EnsembleError, match="share no fold"):
        combine([[two_members[0]], [elsewhere]], CLASSES)


def test_a_mixed_ensemble_may_differ_in_member_settings_and_nothing_else(two_members, tmp_path):
    import dataclasses

    from emostream.train.evaluate import PRESETS, Preset

    def run(name, preset, members):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "evaluation.json").write_text(json.dumps({"protocol": "emobox", "classes": CLASSES,
                                                            "preset": dataclasses.asdict(preset)}))
        (folder / "folds.json").write_text(json.dumps(members))
        return folder

    v3, v4_head = PRESETS["wideband-90ep"], PRESETS["wideband-90ep-baseline-speaker-adversarial"]
    plain, head = run("v3", v3, [two_members[0]]), run("v4-head", v4_head, [two_members[1]])
    header, _ = ensemble.load_members([plain, head])
    assert header["input_versions"] == ["3", "4"]
    assert header["preset"]["name"] == "wideband-90ep+wideband-90ep-baseline-speaker-adversarial"
    assert header["member_speaker_adversarial"] == [0.0, 0.5]  # recorded: the preset holds the default
    other = run("v4-lr", dataclasses.replace(v4_head, learning_rate=1e-3), [two_members[1]])
    with pytest.raises(EnsembleError, match="differ"):  # any other setting still refuses
        ensemble.load_members([plain, other])
    stretch = run("v3-stretch", PRESETS["wideband-90ep-stretch"], [two_members[0]])
    header, _ = ensemble.load_members([stretch, head])  # the tempo of training crops: training only as well
    assert header["member_time_stretch"] == [0.2, 0.0] and header["member_speaker_adversarial"] == [0.0, 0.5]
    assert "member_time_stretch" not in ensemble.load_members([plain, head])[0]
    v3_head = run("v3-head", PRESETS["wideband-90ep-speaker-adversarial"], [two_members[1]])
    with pytest.raises(EnsembleError, match="differ"):  # one version: a seed ensemble is one recipe
        ensemble.load_members([plain, v3_head])
    dropout = run("v3-dropout", PRESETS["wideband-90ep-dropout"], [two_members[0]])
    header, _ = ensemble.load_members([dropout, plain, head])  # dropout is inert when scoring: training only
    assert header["member_dropout"] == [0.5, 0.3, 0.3] and header["input_versions"] == ["3", "4"]
    augment = run("v3-augment", PRESETS["wideband-90ep-more-augment"], [two_members[0]])
    header, _ = ensemble.load_members([augment, plain, head])  # the share of augmented windows: training only
    assert header["member_augment_share"] == [0.8, 0.5, 0.5] and "member_dropout" not in header
    blended = run("v3-mixup", PRESETS["wideband-90ep-more-mixup"], [two_members[0]])
    header, _ = ensemble.load_members([blended, plain, head])  # the mixup weight's spread: training only
    assert header["member_mixup_alpha"] == [0.4, 0.2, 0.2] and "member_augment_share" not in header
    unmasked = run("v3-unmasked", PRESETS["wideband-90ep-no-specaugment"], [two_members[0]])
    header, _ = ensemble.load_members([unmasked, plain, head])  # SpecAugment's masks: training only
    assert header["member_spec_augment"] == [False, True, True] and "member_mixup_alpha" not in header
    pooled = run("v3-mean-pool", PRESETS["wideband-90ep-mean-pool"], [two_members[0]])
    header, _ = ensemble.load_members([pooled, plain, head])  # a member's own layers: its graph is its own
    assert header["member_time_pooling"] == ["mean", "last", "last"] and "member_spec_augment" not in header
    spliced = run("v3-splice", PRESETS["wideband-90ep-splice"], [two_members[0]])
    header, _ = ensemble.load_members([spliced, plain, head])  # spliced windows: training only, version 3 only
    assert header["member_splice_share"] == [0.5, 0.0, 0.0]
    assert Preset.from_record(header["preset"]).splice_share == 0.0  # the version 4 ensemble's preset stays valid


def test_the_ensemble_model_averages_its_members_and_exports_as_one_graph():
    import keras

    from emostream.export.onnx_export import check_parity, convert
    from emostream.features.contract import ModelContract
    from emostream.train.model import CrnnConfig, build_crnn

    members = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        members.append(build_crnn(CrnnConfig(conv_filters=(4, 8), lstm_units=(16, 8)), compile=False))
    x = np.random.default_rng(0).standard_normal((6, 128, 100, 1)).astype(np.float32)
    each = [m.predict(x, verbose=0) for m in members]
    assert not np.allclose(each[0], each[1], atol=1e-3)  # two different members, or the test proves nothing
    model = ensemble_model(members)
    np.testing.assert_allclose(model.predict(x, verbose=0), np.mean(each, axis=0), atol=1e-6)
    from emostream.export.onnx_export import without_cudnn

    nested = [layer for m in without_cudnn(model).layers if hasattr(m, "layers") for layer in m.layers
              if type(layer).__name__ == "LSTM"]
    assert len(nested) == 4 and all(layer.use_cudnn is False for layer in nested)  # inside each member too
    proto = convert(model, ModelContract.for_features(CLASSES, run_id="tiny-ensemble-2"))
    parity = check_parity(model, proto.SerializeToString(), x[..., 0])
    assert parity.max_abs_diff < 1e-5 and parity.top1_agreement == 1.0
    assert len(proto.graph.input) == 1 and len(proto.graph.output) == 1  # the daemon's model interface


def test_two_seeds_make_an_ensemble_whose_model_scores_what_its_evaluation_says(ravdess_dir, tmp_path, capsys):
    """Two tiny runs (other seeds), combined: the ensemble's evaluation (mean of stored probabilities) and its saved
    model (the members side by side, scored afresh on the listed clips) agree, and the model exports."""
    from emostream.export.cli import main as export_main
    from emostream.inference.model import EmotionModel
    from emostream.train import evaluate

    runs = []
    for offset in (0, 1000):
        runs.append(tmp_path / f"seed{offset}")
        assert evaluate.main(["--protocol", "random", "--preset", "improved", "--epochs", "3",
                              "--max-clips-per-class", "12", "--data-dir", str(ravdess_dir), "--out", str(runs[-1]),
                              "--cache-dir", str(tmp_path / "cache"), "--save-model", "--set", "min_epochs=2",
                              "--set", "conv_filters=8,16", "--seed-offset", str(offset)]) == 0
    folds = [json.loads((r / "folds.json").read_text())[0] for r in runs]
    assert [f["training_seed"] for f in folds] == [42, 1042]
    kept = [np.array(f["clip_probabilities"]["checkpoint"]["test"]) for f in folds]
    assert kept[0].shape == (folds[0]["n_test"], 8) and not np.allclose(kept[0], kept[1], atol=1e-3)
    # What is kept is what was scored: the stored probabilities reproduce the run's own test figures.
    y_test = np.array(folds[0]["clip_probabilities"]["y_true"]["test"])
    assert folds[0]["test"]["accuracy"] == pytest.approx(np.mean(kept[0].argmax(axis=1) == y_test))

    out = tmp_path / "ensemble"
    assert ensemble.main([*map(str, runs), "--out", str(out), "--data-dir", str(ravdess_dir),
                          "--cache-dir", str(tmp_path / "cache")]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert result["preset"]["name"] == "improved-ensemble-2" and (out / "evaluation.md").stat().st_size > 0
    fold = result["folds"][0]
    for saved, figures in (("model-fold1", fold["test"]), ("model-fold1-tail-average", fold["tail_average"]["test"])):
        summary = json.loads((out / saved / "summary.json").read_text())
        assert summary["listed_accuracy"] == pytest.approx(figures["accuracy"], abs=1e-9)
        assert summary["test_uar"] == pytest.approx(figures["uar"], abs=1e-9)
        assert [m["training_seed"] for m in summary["members"]] == [42, 1042]
        assert summary["run_id"].startswith("improved-ensemble-2-")
    from emostream.train.compare import main as compare_main

    assert compare_main([str(runs[0]), str(out), "--out", str(tmp_path / "ablation.md")]) == 0
    assert "seed ensemble of 2 runs" in (tmp_path / "ablation.md").read_text()

    # A member from before per-clip probabilities were kept: only its saved models can be combined.
    import shutil

    old = tmp_path / "old-member"
    shutil.copytree(runs[1], old)
    (old / "folds.json").write_text(json.dumps([{k: v for k, v in f.items() if k != "clip_probabilities"}
                                                for f in json.loads((old / "folds.json").read_text())]))
    with pytest.raises(SystemExit):
        ensemble.main([str(runs[0]), str(old), "--out", str(tmp_path / "refused")])
    assert ensemble.main([str(runs[0]), str(old), "--out", str(tmp_path / "models"), "--models-only",
                          "--data-dir", str(ravdess_dir), "--cache-dir", str(tmp_path / "cache")]) == 0
    again = json.loads((tmp_path / "models" / "model-fold1" / "summary.json").read_text())
    assert again["listed_accuracy"] == json.loads((out / "model-fold1" / "summary.json").read_text())[
        "listed_accuracy"] and not (tmp_path / "models" / "evaluation.json").exists()

    # The shipped ensemble's members, unpacked from its model folder alone, are the runs' own models: they join a
    # new member without the original runs, and the two of them rebuild the same ensemble.
    from emostream.export.onnx_export import load_keras_model

    unpacked = tmp_path / "unpacked"
    assert ensemble.main(["--unpack", str(out / "model-fold1-tail-average"), "--out", str(unpacked)]) == 0
    x = np.random.default_rng(3).standard_normal((4, 128, 100, 1)).astype(np.float32)
    for i, run in enumerate(runs, start=1):
        own = load_keras_model(run / "model-fold1-tail-average" / "model.keras").predict(x, verbose=0)
        np.testing.assert_allclose(load_keras_model(unpacked / f"member-{i}" / "model-fold1-tail-average" /
                                                    "model.keras").predict(x, verbose=0), own, atol=1e-6)
    member_summary = json.loads((unpacked / "member-2" / "model-fold1-tail-average" / "summary.json").read_text())
    own_summary = json.loads((runs[1] / "model-fold1-tail-average" / "summary.json").read_text())
    for key in ("training_seed", "listed_accuracy", "averaged_epochs", "epochs_run", "protocol", "max_clips_per_class",
                "n_train", "run_id"):
        assert member_summary[key] == own_summary[key], key
    assert member_summary["preset"]["name"] == "improved" and member_summary["protocol"] == "random"
    # A run joins an unpacked member (the use: a new seed beside the shipped members): the same ensemble again.
    rejoined = tmp_path / "rejoined"
    assert ensemble.main([str(unpacked / "member-1"), str(runs[1]), "--models-only", "--out", str(rejoined),
                          "--data-dir", str(ravdess_dir), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert json.loads((rejoined / "model-fold1-tail-average" / "summary.json").read_text())["listed_accuracy"] == \
        json.loads((out / "model-fold1-tail-average" / "summary.json").read_text())["listed_accuracy"]
    capsys.readouterr()
    with pytest.raises(SystemExit):  # an unpacked member beside its own run: the same weights twice
        ensemble.main([str(unpacked / "member-2"), str(runs[1]), "--models-only", "--out", str(tmp_path / "twice"),
                       "--data-dir", str(ravdess_dir), "--cache-dir", str(tmp_path / "cache")])
    assert "hold the same weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a single model is not an ensemble to unpack
        ensemble.main(["--unpack", str(runs[0] / "model-fold1"), "--out", str(tmp_path / "single")])
    assert "names no ensemble members" in capsys.readouterr().err

    onnx_path = tmp_path / "ensemble.onnx"
    assert export_main(["--keras", str(out / "model-fold1-tail-average" / "model.keras"), "--out", str(onnx_path),
                        "--data-dir", str(ravdess_dir), "--cache-dir", str(tmp_path / "cache"),
                        "--min-windows", "8"]) == 0
    assert EmotionModel(onnx_path).contract.run_id.endswith("-tail-average")


def test_the_command_refuses_a_single_run_a_repeated_run_and_mixed_recipes_in_one_line(tmp_path, capsys,
                                                                                       two_members):
    from emostream.train.evaluate import PRESETS

    runs = []
    for name, preset in (("a", "shipped-v1"), ("b", "shipped-v1"), ("c", "improved")):
        runs.append(tmp_path / name)
        runs[-1].mkdir()
        header = {"protocol": "emobox", "preset": PRESETS[preset].__dict__, "classes": CLASSES, "data_seed": 42}
        (runs[-1] / "evaluation.json").write_text(json.dumps(header, default=list))
        (runs[-1] / "folds.json").write_text(json.dumps([two_members[len(runs) % 2]]))
    for args, message in (([runs[0]], "at least two runs"), ([runs[0], runs[0]], "named twice"),
                          ([runs[0], runs[2]], "preset"), ([runs[0], runs[1]], "is one of the runs")):
        out = runs[1] if message == "is one of the runs" else tmp_path / "out"
        with pytest.raises(SystemExit) as exit_info:
            ensemble.main([*map(str, args), "--out", str(out)])
        last = capsys.readouterr().err.strip().splitlines()[-1]  # argparse's usage, then the one-line error
        assert exit_info.value.code == 2 and last.startswith("emostream-ensemble: error:") and message in last, last
    other_seed = json.loads((runs[1] / "evaluation.json").read_text())
    (runs[1] / "evaluation.json").write_text(json.dumps({**other_seed, "data_seed": 7}))
    with pytest.raises(SystemExit):
        ensemble.main([str(runs[0]), str(runs[1]), "--out", str(tmp_path / "out")])
    assert "data preparation" in capsys.readouterr().err


def test_an_unpacked_member_saved_before_a_member_setting_existed_gets_its_default_not_the_first_members():
    """Members unpacked from the shipped model's summary predate ``time_pooling``: their graphs are "last" even when
    the ensemble's preset (its first member's) says "mean"."""
    summary = {"preset": {"name": "a+b", "feature_version": "4", "time_pooling": "mean", "dropout": 0.3}}
    old = {"preset_name": "b", "features": {"feature_version": "4"}, "training_only": {"dropout": 0.2}}
    recipe = ensemble.own_recipe(summary, old)["preset"]
    assert recipe["time_pooling"] == "last" and recipe["dropout"] == 0.2 and recipe["name"] == "b"
    new = {**old, "training_only": {"dropout": 0.2, "time_pooling": "mean"}}
    assert ensemble.own_recipe(summary, new)["preset"]["time_pooling"] == "mean"
