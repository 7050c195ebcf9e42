import dataclasses
import json

import numpy as np
import pytest

from emostream.features import DEFAULT_CONFIG
from emostream.train import evaluate
from emostream.train.evaluate import FOLDS, actor_folds, random_split


def test_actor_folds_never_share_an_actor_and_cover_everyone_once():
    actors = np.repeat(np.arange(1, 25), 30)
    folds = actor_folds(actors)
    assert len(folds) == 6
    tested = np.concatenate([f["test"] for f in folds])
    assert sorted(tested) == list(range(len(actors)))  # every clip is a test clip exactly once
    for fold in folds:
        parts = {name: set(actors[fold[name]]) for name in ("train", "val", "test")}
        assert parts["train"].isdisjoint(parts["val"]) and parts["train"].isdisjoint(parts["test"])
        assert parts["val"].isdisjoint(parts["test"])
        assert len(parts["test"]) == 4 and len(parts["val"]) == 4 and len(parts["train"]) == 16
        assert {a % 2 for a in parts["test"]} == {0, 1}  # both sexes in every test fold
    assert FOLDS[0] == [1, 2, 3, 4] and FOLDS[-1] == [21, 22, 23, 24]


def test_random_protocol_keeps_the_reference_test_split_and_validates_on_the_training_side():
    labels = np.random.default_rng(0).permutation(np.repeat(["a", "b", "c", "d"], [50, 100, 100, 60]))
    (fold,) = random_split(labels, seed=42)
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    reference_train, reference_test = train_test_split(rows, test_size=0.2, stratify=labels, random_state=42)
    np.testing.assert_array_equal(np.sort(fold["test"]), np.sort(reference_test))
    assert set(fold["val"]) | set(fold["train"]) == set(reference_train)
    assert set(fold["val"]).isdisjoint(fold["test"]) and set(fold["val"]).isdisjoint(fold["train"])


def test_a_tiny_evaluation_writes_every_output_and_looks_at_test_data_only_at_the_end(ravdess_dir, tmp_path,
                                                                                    monkeypatch):
    calls = []
    real = evaluate.clip_probabilities

    def recording(model, bank, rows, multi_window, features=DEFAULT_CONFIG, heard=None):
        calls.append(np.asarray(rows).copy())
        return real(model, bank, rows, multi_window, features, heard)

    monkeypatch.setattr(evaluate, "clip_probabilities", recording)
    out = tmp_path / "eval"
    code = evaluate.main(["--protocol", "random", "--preset", "improved", "--epochs", "3",
                          "--max-clips-per-class", "12", "--data-dir", str(ravdess_dir), "--out", str(out),
                          "--cache-dir", str(tmp_path / "cache"), "--save-model", "--set", "min_epochs=2",
                          "--set", "mixup_alpha=0.2", "--set", "conv_filters=8,16", "--label", "tiny-variant"])
    assert code == 0
    for name in ("evaluation.json", "evaluation.md", "folds.json", "confusion.png"):
        assert (out / name).stat().st_size > 0
    result = json.loads((out / "evaluation.json").read_text())
    fold = result["folds"][0]
    assert fold["epochs_run"] == 3 and 2 <= fold["epoch"] <= 3
    assert {"accuracy", "macro_f1", "uar", "max_share", "four_class_uar", "val_uar"} <= set(result["summary"])
    assert result["preset"]["name"] == "tiny-variant" and result["preset"]["mixup_alpha"] == 0.2
    assert "`tiny-variant`" in (out / "evaluation.md").read_text()
    saved = out / "model-fold1"  # ready for emostream-export
    summary = json.loads((saved / "summary.json").read_text())
    assert summary["test_accuracy"] == fold["test"]["accuracy"] and (saved / "model.keras").stat().st_size > 0
    assert json.loads((saved / "labels.json").read_text()) == result["classes"]
    assert len((saved / "test_files.csv").read_text().splitlines()) == fold["n_test"] + 1
    assert "first window only" in (saved / "metrics.md").read_text()
    import keras

    convs = [layer for layer in keras.saving.load_model(saved / "model.keras").layers if "conv" in layer.name]
    assert [c.filters for c in convs] == [8, 16]  # the overridden width is what gets saved for export
    # Validation passes from min_epochs on (epochs 2 and 3), then the test clips (multi-window and first-window);
    # only then the weights averaged over epochs 2–3, on validation and test (scored, never choosing anything).
    assert len(calls) == 6
    val_rows, test_rows = set(calls[0]), set(calls[2])
    assert val_rows.isdisjoint(test_rows)
    assert [set(c) for c in calls] == [val_rows, val_rows, test_rows, test_rows, val_rows, test_rows]
    tail = fold["tail_average"]
    assert tail["epochs"] == [2, 3] and "test_uar" in result["summary"]["tail_average"]
    tail_saved = json.loads((out / "model-fold1-tail-average" / "summary.json").read_text())
    assert tail_saved["test_accuracy"] == tail["test"]["accuracy"] and tail_saved["averaged_epochs"] == [2, 3]
    assert tail_saved["epoch"] is None  # no checkpoint epoch: it is not a checkpoint
    assert tail_saved["run_id"] == summary["run_id"] + "-tail-average"  # exported models say which they are
    assert summary["averaged_epochs"] is None
    assert "weights averaged over epochs 2–3" in (out / "model-fold1-tail-average" / "metrics.md").read_text()
    checkpoint_kernels = keras.saving.load_model(saved / "model.keras").get_weights()
    tail_kernels = keras.saving.load_model(out / "model-fold1-tail-average" / "model.keras").get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(checkpoint_kernels, tail_kernels, strict=True))
    assert "Weights averaged over the epochs 2–3" in (out / "evaluation.md").read_text()


@pytest.mark.parametrize("variant", ["noise", "speed", "reverb", "eq", "pitch"])
def test_augmentations_keep_audio_finite_and_change_it(variant):
    from synth import speechlike

    from emostream.train.augment import AUGMENTATIONS

    y = speechlike(2.0, seed=1)
    out = AUGMENTATIONS[variant](y, np.random.default_rng(0))
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    assert 0.8 * len(y) <= len(out) <= 1.2 * len(y)
    assert not np.allclose(out[: min(len(y), len(out))], y[: min(len(y), len(out))], atol=1e-3)


def test_preset_overrides_are_typed_after_the_preset_and_unknown_fields_are_refused():
    base = evaluate.PRESETS["improved"]
    changed = base.with_overrides(["mixup_alpha=0.4", "lstm_units=192,96", "spec_augment=false",
                                   "early_stopping_patience=none", "epochs=7"])
    assert changed.mixup_alpha == 0.4 and changed.lstm_units == (192, 96) and changed.spec_augment is False
    assert changed.early_stopping_patience is None and changed.epochs == 7
    assert changed.crnn_config(8).lstm_units == (192, 96)
    for bad in (["nonsense=1"], ["epochs"], ["name=x"]):
        with pytest.raises(ValueError, match="FIELD=VALUE"):
            base.with_overrides(bad)


def test_mixup_blends_inputs_and_targets_with_the_same_weight_and_keeps_the_first_label_dominant():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4, 5, 1)).astype(np.float32)
    labels = rng.integers(0, 8, size=64)
    targets = np.eye(8, dtype=np.float32)[labels]
    mixed_x, mixed_t = evaluate.mixup(x, targets, 0.4, np.random.default_rng(1))
    np.testing.assert_allclose(mixed_t.sum(axis=1), 1.0, rtol=1e-6)
    lam = mixed_t[np.arange(64), labels]  # own-label weight (≥ 0.5; 1.0 where the partner shares the label)
    assert np.all(lam >= 0.5 - 1e-6) and np.any(lam < 0.99)
    # Recover the partner from the targets and check the inputs were blended with the same λ.
    for i in np.flatnonzero(lam < 0.99):
        partner_weight = 1.0 - lam[i]
        candidates = [j for j in range(64) if np.allclose(mixed_x[i], lam[i] * x[i] + partner_weight * x[j],
                                                          atol=1e-5)]
        assert candidates and labels[candidates[0]] == mixed_t[i].argsort()[-2]


def test_calm_neutral_sharing_moves_a_share_between_the_two_and_leaves_other_classes_alone():
    classes = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]
    targets = np.eye(8, dtype=np.float32)[[1, 5, 0, 6]]
    targets[3] = 0.0
    targets[3, [5, 6]] = 0.7, 0.3  # a mixup blend of neutral and sad
    shared = evaluate.share_calm_neutral(targets, classes, 0.3)
    np.testing.assert_allclose(shared.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(shared[0, [1, 5]], [0.7, 0.3])  # calm keeps 0.7, neutral gets 0.3
    np.testing.assert_allclose(shared[1, [1, 5]], [0.3, 0.7])
    np.testing.assert_array_equal(shared[2], targets[2])
    np.testing.assert_allclose(shared[3, [1, 5, 6]], [0.21, 0.49, 0.3], rtol=1e-6)
    assert shared.argmax(axis=1).tolist() == targets.argmax(axis=1).tolist()
    unshared = evaluate.share_calm_neutral(targets.astype(np.float64), classes, 0.0)
    assert unshared.dtype == shared.dtype == np.float32
    np.testing.assert_array_equal(unshared, targets)
    with pytest.raises(ValueError, match="no calm and neutral"):
        evaluate.share_calm_neutral(targets[:, :6], classes[:4] + ["happy", "sad"], 0.3)
    with pytest.raises(ValueError, match="calm_neutral_share"):
        evaluate.PRESETS["wideband"].with_overrides(["calm_neutral_share=0.5"])


def test_early_stopping_waits_for_min_epochs_then_needs_patience_epochs_without_gain():
    preset = evaluate.PRESETS["improved"].with_overrides(["early_stopping_patience=12", "min_epochs=45"])
    assert not evaluate.should_stop(preset, epoch=39, best_epoch=27)  # the old rule stopped here, LR still high
    assert not evaluate.should_stop(preset, epoch=50, best_epoch=40)
    assert evaluate.should_stop(preset, epoch=52, best_epoch=40)
    assert evaluate.should_stop(preset, epoch=45, best_epoch=27)
    never = preset.with_overrides(["early_stopping_patience=none"])
    assert not evaluate.should_stop(never, epoch=100, best_epoch=1)


def test_merging_runs_over_different_folds_gives_one_evaluation_and_refuses_mixed_runs(tmp_path):
    import dataclasses

    preset = evaluate.PRESETS["improved"]

    def run(folder, fold_names, preset):
        folder.mkdir()
        folds = [{"fold": name, "epoch": 1, "epochs_run": 1, "n_test": 4, "history": [{"val_uar": 0.5}],
                  "test": {"accuracy": acc, "macro_f1": acc, "uar": acc}, "y_true": [0, 1, 2, 3],
                  "y_pred": [0, 1, 2, 3 if acc == 1.0 else 0]} for name, acc in fold_names]
        (folder / "folds.json").write_text(json.dumps(folds))
        (folder / "evaluation.json").write_text(json.dumps({"protocol": "actors", "classes": list("abcd"),
                                                            "preset": dataclasses.asdict(preset)}))
        return folder

    a = run(tmp_path / "a", [("actors 05-08", 0.75)], preset)
    b = run(tmp_path / "b", [("actors 01-04", 1.0)], preset)
    summary = evaluate.merge_runs([a, b], tmp_path / "merged")
    assert summary["accuracy"]["mean"] == pytest.approx(0.875) and summary["accuracy"]["std"] == pytest.approx(0.125)
    merged = json.loads((tmp_path / "merged" / "evaluation.json").read_text())
    assert [f["fold"] for f in merged["folds"]] == ["actors 01-04", "actors 05-08"]
    assert (tmp_path / "merged" / "confusion.png").stat().st_size > 0
    other = run(tmp_path / "c", [("actors 09-12", 0.5)], preset.with_overrides(["mixup_alpha=0.2"]))
    with pytest.raises(ValueError, match="cannot merge"):
        evaluate.merge_runs([a, other], tmp_path / "bad")
    with pytest.raises(ValueError, match="twice"):
        evaluate.merge_runs([a, a], tmp_path / "bad2")
    c = run(tmp_path / "c2", [("actors 09-12", 0.5)], preset)
    kept = evaluate.merge_runs([a, b, c], tmp_path / "kept", folds=[3, 1])  # e.g. folds 1–2 of a six-fold run
    assert kept["accuracy"]["mean"] == pytest.approx(0.75)
    assert [f["fold"] for f in json.loads((tmp_path / "kept" / "folds.json").read_text())] == ["actors 01-04",
                                                                                                "actors 09-12"]
    with pytest.raises(ValueError, match="fold 4 not in"):
        evaluate.merge_runs([a, b], tmp_path / "bad3", folds=[1, 4])
    # A rerun into b's folder stopped after its first fold: b's old header beside new folds. Before: merged as b.
    header = json.loads((b / "evaluation.json").read_text())
    (b / "evaluation.json").write_text(json.dumps({**header, "folds": [{"fold": "actors 13-16"}]}))
    with pytest.raises(ValueError, match="name different folds"):
        evaluate.merge_runs([a, b], tmp_path / "bad4")
    # Folds scored on EmoDB beside folds that were not: their selection figures do not mix
    (b / "evaluation.json").write_text(json.dumps(header))
    with_cross = json.loads((b / "folds.json").read_text())
    with_cross[0]["cross"] = {"accuracy": 0.5, "uar": 0.5}
    (b / "folds.json").write_text(json.dumps(with_cross))
    with pytest.raises(ValueError, match="some of these folds were scored on EmoDB"):
        evaluate.merge_runs([a, b], tmp_path / "bad5")


def test_presets_refuse_settings_out_of_range_and_words_that_are_not_booleans():
    base = evaluate.PRESETS["improved"]
    for bad, named in (("epochs=0", "epochs"), ("batch_size=0", "batch_size"), ("learning_rate=nan", "learning_rate"),
                       ("label_smoothing=5", "label_smoothing"), ("vtlp=1.5", "vtlp"), ("min_epochs=-1", "min_epochs"),
                       ("conv_filters=32", "conv_filters"), ("spec_augment=ture", "spec_augment")):
        with pytest.raises(ValueError, match=named):  # before: accepted, and failed (or misled) hours later
            base.with_overrides([bad])
    assert base.with_overrides(["spec_augment=off", "epochs=3"]).spec_augment is False
    with pytest.raises(ValueError, match="cannot read"):
        evaluate.Preset.from_record({**dataclasses.asdict(base), "a_newer_setting": 1})


def test_a_rerun_into_an_old_folder_replaces_the_old_outputs_first(tmp_path):
    for name in ("evaluation.json", "folds.json", "notes.txt"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "model-fold3").mkdir()
    evaluate.clear_outputs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # the user's own file stays


def test_fold_numbers_are_checked_and_name_the_folds_the_builders_make():
    assert evaluate.parse_fold_numbers("1,2") == [1, 2] and evaluate.parse_fold_numbers(None) is None
    for bad in ("0", "7", "1,1", "a"):
        with pytest.raises(ValueError, match="--folds"):
            evaluate.parse_fold_numbers(bad)
    actors = np.repeat(np.arange(1, 25), 2)
    assert [f["name"] for f in evaluate.emobox_folds(actors)] == [evaluate.fold_name("emobox", k) for k in range(1, 7)]
    assert [f["name"] for f in evaluate.actor_folds(actors)] == [evaluate.fold_name("actors", k) for k in range(1, 7)]
    with pytest.raises(ValueError, match="one fold"):
        evaluate.fold_name("random", 1)
    with pytest.raises(SystemExit) as refused:
        evaluate.main(["--protocol", "random", "--folds", "1", "--out", "x"])
    assert refused.value.code == 2


def test_a_missing_corpus_or_model_is_one_line_and_exit_code_2(tmp_path, caplog):
    out = tmp_path / "out"
    assert evaluate.main(["--protocol", "random", "--data-dir", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "RAVDESS root" in caplog.text and "Traceback" not in caplog.text
    caplog.clear()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert evaluate.main(["--protocol", "emobox", "--onnx", str(broken), "--data-dir", str(tmp_path / "none"),
                          "--out", str(out)]) == 2
    assert "cannot load model" in caplog.text and "RAVDESS" not in caplog.text  # the model first, before the data
    assert not out.exists()


def test_weight_average_is_the_mean_of_the_epochs_given_in_the_models_dtypes():
    average = evaluate.WeightAverage()
    with pytest.raises(ValueError, match="no weights"):
        average.mean([np.zeros(2, np.float32)])
    for epoch, value in ((30, 1.0), (31, 2.0), (32, 6.0)):
        average.add([np.full(2, value, np.float32), np.full((1, 2), -value, np.float32)], epoch)
    mean = average.mean([np.zeros(2, np.float32), np.zeros((1, 2), np.float32)])
    np.testing.assert_allclose(mean[0], 3.0)
    np.testing.assert_allclose(mean[1], -3.0)
    assert mean[0].dtype == np.float32 and average.epochs == [30, 31, 32]


def test_the_tail_average_is_scored_beside_the_checkpoint_which_stays_the_model(monkeypatch):
    """A tiny run on synthetic windows: the averaged weights (batch-norm statistics included) are the mean of the
    weights after each validated epoch, get their own scores on every part, and the model handed back (the one
    exported) holds the chosen checkpoint's weights."""
    rng = np.random.default_rng(0)
    n_clips, frames = 24, DEFAULT_CONFIG.window_frames
    db = [rng.normal(-40, 10, (DEFAULT_CONFIG.n_mels, frames + 20)).astype(np.float16) for _ in range(n_clips)]
    windows = [rng.normal(0, 1, (2, DEFAULT_CONFIG.n_mels, frames)).astype(np.float16) for _ in range(n_clips)]
    bank = evaluate.ClipBank([f"clip{i}" for i in range(n_clips)], db, windows)
    y = np.tile(np.arange(4), n_clips // 4)
    fold = {"name": "tiny", "number": 1, "train": np.arange(12), "val": np.arange(12, 18),
            "test": np.arange(18, 24)}
    preset = evaluate.PRESETS["improved"].with_overrides(
        ["epochs=3", "min_epochs=1", "augment_share=0", "conv_filters=4,8", "lstm_units=8,8"])
    added = {}
    real_add = evaluate.WeightAverage.add

    def recording_add(self, weights, epoch):
        added[epoch] = [w.copy() for w in weights]
        real_add(self, weights, epoch)

    monkeypatch.setattr(evaluate.WeightAverage, "add", recording_add)
    classes = ["angry", "happy", "neutral", "sad"]
    result, model, averaged = evaluate.run_fold(preset, fold, y, classes, {"orig": bank}, seed=1, log_prefix="[t]",
                                                cross=np.arange(6), progress=False)
    tail = result["tail_average"]
    assert tail["epochs"] == [1, 3] and sorted(added) == [1, 2, 3] and {"val", "test", "cross"} <= set(tail)
    assert tail["test"]["n"] == 6 and 0.0 <= tail["test"]["uar"] <= 1.0
    names = [w.path for w in model.weights]
    assert any("moving_variance" in n for n in names)  # the statistics are among what is averaged
    for i, name in enumerate(names):
        np.testing.assert_allclose(averaged[i], np.mean([added[e][i] for e in (1, 2, 3)], axis=0), rtol=1e-5,
                                   atol=1e-7, err_msg=name)
    # The returned model is the chosen checkpoint, weight for weight — not the average.
    for now, checkpoint in zip(model.get_weights(), added[result["epoch"]], strict=True):
        np.testing.assert_array_equal(now, checkpoint)
    assert any(not np.allclose(w, a) for w, a in zip(model.get_weights(), averaged, strict=True))
    summary = evaluate.summarise([result])
    assert summary["tail_average"]["selection"] == pytest.approx((tail["test"]["uar"] + tail["cross"]["uar"]) / 2)
    assert summary["tail_average"]["folds"] == ["tiny"]


def test_a_merge_where_only_some_folds_scored_a_tail_average_reports_it_on_those_folds_and_says_so(tmp_path):
    def fold(name, test_uar, cross_uar, tail=None):
        part = {"accuracy": test_uar, "macro_f1": test_uar, "uar": test_uar, "max_share": 0.2}
        cross = {**part, "uar": cross_uar, "four_class": {"uar": 0.5}}
        r = {"fold": name, "n_test": 4, "epoch": 2, "epochs_run": 3, "val": {"uar": 0.5},
             "test": {**part, "four_class": {"uar": 0.5}}, "cross": cross}
        if tail:
            r["tail_average"] = {"epochs": [2, 3], "val": {**part, "uar": 0.4},
                                 "test": {**part, "uar": tail[0]}, "cross": {**part, "uar": tail[1]}}
        return r

    results = [fold("emobox fold 1", 0.5, 0.3), fold("emobox fold 3", 0.5, 0.3, tail=(0.6, 0.4))]
    summary = evaluate.summarise(results)
    tail = summary["tail_average"]
    assert tail["folds"] == ["emobox fold 3"] and tail["selection"] == pytest.approx(0.5)
    assert tail["checkpoint_selection_same_folds"] == pytest.approx(0.4)
    evaluate.write_card(tmp_path, "emobox", evaluate.PRESETS["shipped-v1"], results, summary, ["a", "b"])
    card = (tmp_path / "evaluation.md").read_text()
    assert "on emobox fold 3 only (the others predate it)" in card and "same folds: 0.400" in card


def test_calm_answers_count_as_neutral_only_in_the_view_for_a_corpus_without_calm():
    classes = ["angry", "calm", "neutral", "sad"]
    y_true = np.array([2, 2, 3, 0])  # neutral, neutral, sad, angry — no calm in this corpus
    y_pred = np.array([1, 2, 1, 0])  # calm, neutral, calm, angry
    assert evaluate.calm_as_neutral_uar(y_true, y_pred, classes) == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert evaluate.scores(y_true, y_pred)["uar"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)  # the plain view
    part = {"accuracy": 0.5, "macro_f1": 0.5, "uar": 0.5, "max_share": 0.5, "four_class": {"uar": 0.5}}
    fold = {"fold": "f", "val": {"uar": 0.5}, "cross": part, "cross_y_true": y_true.tolist(),
            "cross_y_pred": y_pred.tolist()}
    summary = evaluate.summarise([fold], classes)
    assert summary["cross_calm_as_neutral_uar"]["mean"] == pytest.approx(2 / 3)
    assert summary["cross_uar"]["mean"] == 0.5  # the 6-class figure the rule uses is untouched
    with_calm = {**fold, "cross_y_true": [1, 2, 3, 0]}  # a corpus with a calm class gets no such view
    assert "cross_calm_as_neutral_uar" not in evaluate.summarise([with_calm], classes)


def test_the_90_epoch_preset_is_wideband_with_only_the_longer_schedule():
    """Its runs used ``--preset wideband --set epochs=90 --set min_epochs=68``: the named preset must not drift."""
    named, wideband = evaluate.PRESETS["wideband-90ep"], evaluate.PRESETS["wideband"]
    assert dataclasses.replace(named, name="wideband") == wideband.with_overrides(["epochs=90", "min_epochs=68"])
    assert named.min_epochs / named.epochs == pytest.approx(wideband.min_epochs / wideband.epochs, abs=0.01)


def test_the_speaker_head_s_gradient_reaches_the_shared_layers_reversed_and_scaled():
    import keras
    import tensorflow as tf

    from emostream.train.model import reversal_ramp, with_speaker_head

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(5,))
    shared = keras.layers.Dense(4, activation="tanh", name="trunk")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probabilities")(shared))
    trained, reversal = with_speaker_head(model, n_speakers=2, hidden_units=6)
    x = tf.constant(np.random.default_rng(0).normal(size=(8, 5)), tf.float32)
    trunk = model.get_layer("trunk").kernel

    def trunk_gradient(strength):
        reversal.strength.assign(strength)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(trained(x)[1][:, 0])
        return tape.gradient(loss, trunk).numpy()

    forward, reversed_ = trunk_gradient(-1.0), trunk_gradient(1.0)  # −1: the plain gradient
    assert np.abs(forward).max() > 1e-6
    np.testing.assert_allclose(reversed_, -forward, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(trunk_gradient(0.25), -0.25 * forward, rtol=1e-5, atol=1e-8)
    assert not np.any(trunk_gradient(0.0))
    assert len(model.outputs) == 1 and len(trained.outputs) == 2
    assert reversal_ramp(0.0) == 0.0 and 0.99 < reversal_ramp(1.0) < 1.0 and reversal_ramp(0.1) < reversal_ramp(0.2)


def test_a_speaker_adversarial_run_trains_both_heads_and_hands_back_the_emotion_model_alone():
    rng = np.random.default_rng(0)
    n_clips, frames = 24, DEFAULT_CONFIG.window_frames
    db = [rng.normal(-40, 10, (DEFAULT_CONFIG.n_mels, frames + 20)).astype(np.float16) for _ in range(n_clips)]
    windows = [rng.normal(0, 1, (2, DEFAULT_CONFIG.n_mels, frames)).astype(np.float16) for _ in range(n_clips)]
    bank = evaluate.ClipBank([f"clip{i}" for i in range(n_clips)], db, windows)
    y = np.tile(np.arange(4), n_clips // 4)
    speakers = np.array([f"ravdess-{i % 3}" for i in range(12)] + ["ravdess-7"] * 6 + ["ravdess-8"] * 6)
    fold = {"name": "tiny", "number": 1, "train": np.arange(12), "val": np.arange(12, 18),
            "test": np.arange(18, 24)}
    plain = evaluate.PRESETS["improved"].with_overrides(
        ["epochs=3", "min_epochs=1", "augment_share=0", "conv_filters=4,8", "lstm_units=8,8", "mixup_alpha=0.2"])
    preset = plain.with_overrides(["speaker_adversarial=0.5"])
    classes = ["angry", "happy", "neutral", "sad"]
    with pytest.raises(ValueError, match="speakers"):
        evaluate.run_fold(preset, fold, y, classes, {"orig": bank}, seed=1, log_prefix="[t]", progress=False)
    result, model, averaged = evaluate.run_fold(preset, fold, y, classes, {"orig": bank}, seed=1, log_prefix="[t]",
                                                progress=False, speakers=speakers)
    strengths = [h["reversal_strength"] for h in result["history"]]
    assert strengths[0] == 0.0 and strengths[0] < strengths[1] < strengths[2] <= 0.5
    assert all(np.isfinite(h["speaker_loss"]) and np.isfinite(h["accuracy"]) for h in result["history"])
    # "loss" is the sum of both heads' losses; the emotion part is recorded on its own
    assert all(np.isclose(h["loss"], h["emotion_loss"] + h["speaker_loss"], rtol=1e-4) for h in result["history"])
    assert len(model.outputs) == 1 and model.output_shape == (None, len(classes))
    _, plain_model, _ = evaluate.run_fold(plain, fold, y, classes, {"orig": bank}, seed=1, log_prefix="[t]",
                                          progress=False)
    assert [w.shape for w in model.get_weights()] == [w.shape for w in plain_model.get_weights()] and \
        len(averaged) == len(model.get_weights())  # no speaker-head weight is scored, averaged or exported
    with pytest.raises(ValueError, match="speaker_adversarial"):
        plain.with_overrides(["speaker_adversarial=-1"])


@pytest.mark.parametrize("argv, message", [
    (["--merge", "a", "b", "--out", "m", "--set", "epochs=3"], "--set: not read with --merge"),
    (["--merge", "a", "b", "--out", "m", "--preset", "wideband"], "--preset: not read with --merge"),
    (["--protocol", "random", "--max-clips-per-class", "4", "--out", "r"], "at least 5 with the random protocol")])
def test_flags_that_would_be_ignored_or_fail_hours_later_are_refused_at_once(argv, message, capsys):
    with pytest.raises(SystemExit) as refused:
        evaluate.main(argv)
    assert refused.value.code == 2 and message in capsys.readouterr().err
