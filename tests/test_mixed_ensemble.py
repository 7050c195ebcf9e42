"""A mixed ensemble: version 3 and version 4 members in one graph with two inputs. One stream computes the version 3
windows and the speaker baseline; the model hears each window both ways, each member on its own version."""

import dataclasses
import json

import numpy as np
import pytest
from synth import speechlike

from emostream.features import (
    BASELINE_PRIOR_WINDOWS,
    DEFAULT_CONFIG,
    band_profile,
    compute_log_mel_spect,
    relative_to_baseline,
    windows_for_inputs,
)
from emostream.features.contract import ContractError, ModelContract
from emostream.inference.logmel_stream import LogMelStream
from emostream.inference.model import EmotionModel, ModelError
from emostream.inference.pipeline import EmotionPipeline, PipelineConfig

V3 = dataclasses.replace(DEFAULT_CONFIG, feature_version="3")
V4 = dataclasses.replace(DEFAULT_CONFIG, feature_version="4")
LABELS = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]
PRIOR = tuple(float(v) for v in 0.3 * np.sin(np.arange(128) / 9.0))


@pytest.fixture(scope="module")
def mixed():
    """Two small untrained CRNNs (a version 3 member, a version 4 member) as one Keras model and its ONNX export."""
    import keras

    from emostream.export.onnx_export import convert
    from emostream.train.ensemble import ensemble_model
    from emostream.train.model import CrnnConfig, build_crnn

    members = []
    for seed in (3, 4):
        keras.utils.set_random_seed(seed)
        members.append(build_crnn(CrnnConfig(conv_filters=(4, 8), lstm_units=(16, 8)), compile=False))
    model = ensemble_model(members, ["3", "4"])
    contract = ModelContract.for_features(LABELS, V4, baseline_prior=PRIOR, input_versions=("3", "4"))
    return members, model, convert(model, contract, V4).SerializeToString()


def test_the_daemon_gives_a_mixed_model_each_window_as_version_3_and_relative_to_the_stream_s_baseline(
        mixed, monkeypatch):
    members, _, onnx_bytes = mixed
    model = EmotionModel(onnx_bytes)
    assert model.input_versions == ("3", "4") and model.features == V4
    seen = []
    predict = model.predict
    monkeypatch.setattr(model, "predict", lambda x: seen.append([np.array(a) for a in x]) or predict(x))
    pipeline = EmotionPipeline(model, PipelineConfig(hop_s=0.25, silence_dbfs=-120, smoothing=0.0), 22050)
    pipeline.warm_up()  # the daemon's first step: one silent window through every input, then forgotten
    seen.clear()
    signal = np.concatenate([speechlike(3.0, seed=1), 0.2 * speechlike(3.0, seed=2)])
    messages = pipeline.process(signal[:40000, None]) + pipeline.process(signal[40000:, None])
    plain_seen = np.concatenate([s[0] for s in seen])
    relative_seen = np.concatenate([s[1] for s in seen])
    # By the written definitions: the stream's version 3 windows, and each relative to the running baseline.
    plain = np.stack([w.features for w in LogMelStream(V3, 11).push(signal)])
    running = np.cumsum([band_profile(w) for w in plain], axis=0)
    baselines = [(BASELINE_PRIOR_WINDOWS * np.asarray(PRIOR) + running[i]) / (BASELINE_PRIOR_WINDOWS + i + 1)
                 for i in range(len(plain))]
    want_relative = np.stack([relative_to_baseline(w, b) for w, b in zip(plain, baselines, strict=True)])
    assert len(plain) == len(plain_seen) == len([m for m in messages if m["type"] == "scores"]) > 10
    np.testing.assert_allclose(plain_seen, plain, atol=1e-5)
    np.testing.assert_allclose(relative_seen, want_relative, atol=1e-4)
    # Each member on its own version: the version 3 member hears the plain window, the version 4 member the other.
    scores = np.array([[m["probabilities"][k] for k in LABELS] for m in messages if m["type"] == "scores"])
    by_members = np.mean([members[0].predict(plain[..., None], verbose=0),
                          members[1].predict(want_relative[..., None], verbose=0)], axis=0)
    np.testing.assert_allclose(scores, by_members, atol=1e-4)
    swapped = np.mean([members[0].predict(want_relative[..., None], verbose=0),
                       members[1].predict(plain[..., None], verbose=0)], axis=0)
    assert np.abs(scores - swapped).max() > 1e-3  # the wiring, not a coincidence of two similar inputs
    # The API scores a clip as a stream's first utterance: both inputs from one stream, the baseline from the prior.
    from emostream.api import EmotionRecognizer

    score = EmotionRecognizer(onnx_bytes).predict(signal[:66150], 22050)
    assert sum(score.probabilities.values()) == pytest.approx(1.0, abs=1e-4)


def test_a_mixed_model_s_contract_is_checked_and_bad_inputs_are_one_line_errors(mixed):
    _, _, onnx_bytes = mixed
    contract = ModelContract.for_features(LABELS, V4, baseline_prior=PRIOR, input_versions=("3", "4"))
    assert ModelContract.from_metadata(contract.to_metadata()) == contract
    for versions, config in ((("3", "4"), V3), (("4", "4"), V4), (("2", "4"), V4), (("4",), V4)):
        with pytest.raises(ContractError, match="input_versions"):
            ModelContract.for_features(LABELS, config, baseline_prior=PRIOR,
                                       input_versions=versions).check_honoured_by()
    bad = {**contract.to_metadata(), "emostream.input_versions": json.dumps([3, 4])}
    with pytest.raises(ContractError, match="input_versions"):
        ModelContract.from_metadata(bad)
    # A two-input graph whose contract says one input is refused when loaded, in one line.
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    for entry in proto.metadata_props:
        if entry.key == "emostream.input_versions":
            entry.value = "[]"
    with pytest.raises(ModelError, match="model inputs") as err:
        EmotionModel(proto.SerializeToString())
    assert "\n" not in str(err.value)
    renamed = onnx.load_from_string(onnx_bytes)  # inputs are matched to versions by name, not position alone
    old_name = renamed.graph.input[0].name
    renamed.graph.input[0].name = "x"
    for node in renamed.graph.node:
        node.input[:] = ["x" if i == old_name else i for i in node.input]
    with pytest.raises(ModelError, match="not named"):
        EmotionModel(renamed.SerializeToString())
    model = EmotionModel(onnx_bytes)
    from emostream.stream.daemon import model_info

    assert model_info(model.contract)["input_versions"] == ["3", "4"]  # what the hello tells clients
    windows = np.zeros((2, 128, 100), np.float32)
    with pytest.raises(ValueError, match="takes 2 window arrays"):
        model.predict(windows)
    with pytest.raises(ValueError, match="differ in length"):
        model.predict([windows, windows[:1]])
    with pytest.raises(ValueError, match="speaker baseline"):
        windows_for_inputs(("3", "4"), windows, None)


def test_the_benchmark_times_a_mixed_model_as_the_daemon_feeds_it(mixed, tmp_path):
    from emostream.bench.cli import ort_profile
    from emostream.bench.measure import fed, inference_times, model_feed, onnx_flops_per_window, windows_from

    members, _, onnx_bytes = mixed
    path = tmp_path / "mixed.onnx"
    path.write_bytes(onnx_bytes)
    model = EmotionModel(path)
    windows = windows_from(np.asarray(speechlike(4.0, seed=5), np.float32), 8, c=V3)
    assert len(inference_times(fed(model.predict, model_feed(model)), windows, 12)) == 12
    assert sum(op["share"] for op in ort_profile(path, windows, 1, runs=5)) == pytest.approx(1.0)
    # Both members' arithmetic is counted: twice one member's (the two members are the same architecture).
    one = tmp_path / "one.onnx"
    from emostream.export.onnx_export import convert

    one.write_bytes(convert(members[0], ModelContract.for_features(LABELS, V3), V3).SerializeToString())
    assert onnx_flops_per_window(path) == pytest.approx(2 * onnx_flops_per_window(one), rel=0.01)


def test_a_version_3_member_pooled_over_frequency_mixes_with_a_plain_version_4_member_in_one_graph():
    """Candidate 26's construction: the version 3 members max-pool the frequency rows before the LSTMs, the version 4
    members do not. Cloned into one graph, each member keeps its own layers and weights, and the export answers as
    the Keras twin and as the mean of the members called alone, each on its own version's input."""
    import keras

    from emostream.export.onnx_export import convert
    from emostream.train.ensemble import ensemble_model
    from emostream.train.model import CrnnConfig, build_crnn

    keras.utils.set_random_seed(5)
    pooled = build_crnn(CrnnConfig(conv_filters=(4, 8), lstm_units=(16, 8), freq_pool=3), compile=False)
    plain = build_crnn(CrnnConfig(conv_filters=(4, 8), lstm_units=(16, 8)), compile=False)
    model = ensemble_model([pooled, plain], ["3", "4"])
    assert model.get_layer("member_1").get_layer("pool_over_frequency")
    assert "pool_over_frequency" not in [layer.name for layer in model.get_layer("member_2").layers]
    contract = ModelContract.for_features(LABELS, V4, baseline_prior=PRIOR, input_versions=("3", "4"))
    onnx_model = EmotionModel(convert(model, contract, V4).SerializeToString())
    windows = np.stack([compute_log_mel_spect(speechlike(2.4, seed=s), V3) for s in range(6)])
    heard = relative_to_baseline(windows, np.asarray(PRIOR))
    served = onnx_model.predict(windows_for_inputs(onnx_model.input_versions, windows, heard))
    alone = (pooled(windows, training=False).numpy() + plain(heard, training=False).numpy()) / 2
    np.testing.assert_allclose(served, model([windows, heard], training=False).numpy(), atol=1e-5)
    np.testing.assert_allclose(served, alone, atol=1e-5)


def test_only_a_version_and_the_per_window_version_it_builds_on_mix():
    from emostream.train.ensemble import EnsembleError, mixed_inputs

    assert mixed_inputs(["4", "3", "4"]) == ("3", "4")
    assert mixed_inputs(["3", "3"]) == ()
    for versions in (["2", "4"], ["1", "3"], ["2", "3", "4"]):
        with pytest.raises(EnsembleError, match="mixes only"):
            mixed_inputs(versions)


def test_a_mixed_ensemble_of_runs_scores_its_listed_clips_as_its_evaluation_did_and_exports(ravdess_dir, tmp_path):
    """A tiny version 3 run and a tiny version 4 run on one EmoBox fold, combined: the evaluation averages their
    per-clip probabilities; the ensemble model, scored afresh on its listed clips (version 4 with the speaker's
    other listed clips, as evaluated), matches it; the export carries both inputs and the version 4 member's prior;
    the members unpack with their own recipes, member settings (here dropout and time pooling) included."""
    from emostream.export.cli import main as export_main
    from emostream.train import ensemble, evaluate

    runs = []
    for preset, offset, dropout, pooling in (("wideband-90ep", 0, 0.3, "mean"),
                                             ("wideband-90ep-baseline", 1000, 0.2, "last")):
        runs.append(tmp_path / preset)
        assert evaluate.main(["--protocol", "emobox", "--folds", "1", "--no-cross", "--preset", preset,
                              "--epochs", "2", "--set", "min_epochs=1", "--set", "augment_share=0", "--set",
                              "conv_filters=8,16", "--set", f"dropout={dropout}", "--set", f"time_pooling={pooling}",
                              "--max-clips-per-class", "12",
                              "--data-dir", str(ravdess_dir), "--cache-dir", str(tmp_path / "cache"), "--save-model",
                              "--seed-offset", str(offset), "--out", str(runs[-1])]) == 0
    out = tmp_path / "mixed"
    assert ensemble.main([*map(str, runs), "--out", str(out), "--data-dir", str(ravdess_dir),
                          "--cache-dir", str(tmp_path / "cache")]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["input_versions"] == ["3", "4"] and evaluation["preset"]["feature_version"] == "4"
    assert evaluation["preset"]["name"] == "wideband-90ep+wideband-90ep-baseline-ensemble-2"
    assert evaluation["member_dropout"] == [0.3, 0.2] and evaluation["member_time_pooling"] == ["mean", "last"]
    assert "differ in dropout: 0.3, 0.2; time_pooling: mean, last" in (out / "evaluation.md").read_text()
    members = [json.loads((r / "folds.json").read_text())[0]["clip_probabilities"]["tail_average"]["test"]
               for r in runs]
    fold = evaluation["folds"][0]
    kept = json.loads((out / "folds.json").read_text())[0]["clip_probabilities"]["tail_average"]["test"]
    np.testing.assert_allclose(kept, np.mean(members, axis=0), atol=2e-5)
    saved = out / "model-fold1-tail-average"
    summary = json.loads((saved / "summary.json").read_text())
    assert summary["input_versions"] == ["3", "4"]
    assert summary["listed_accuracy"] == pytest.approx(fold["tail_average"]["test"]["accuracy"], abs=1e-9)
    assert summary["test_uar"] == pytest.approx(fold["tail_average"]["test"]["uar"], abs=1e-9)
    v4_member = json.loads((runs[1] / "model-fold1-tail-average" / "summary.json").read_text())
    assert summary["baseline_prior"] == v4_member["baseline_prior"]
    onnx_path = tmp_path / "mixed.onnx"
    assert export_main(["--keras", str(saved / "model.keras"), "--out", str(onnx_path), "--data-dir",
                        str(ravdess_dir), "--cache-dir", str(tmp_path / "cache"), "--min-windows", "4"]) == 0
    model = EmotionModel(onnx_path)
    assert model.input_versions == ("3", "4")
    np.testing.assert_allclose(model.contract.baseline_prior, v4_member["baseline_prior"], atol=1e-6)
    with pytest.raises(SystemExit):  # a mixed ensemble is not a member: its members are
        ensemble.main([str(out), str(runs[0]), "--out", str(tmp_path / "nested")])
    assert not (tmp_path / "nested" / "evaluation.json").exists()
    unpacked = ensemble.unpack_members(saved, tmp_path / "unpacked")
    recipes = [json.loads((u / "model-fold1-tail-average" / "summary.json").read_text()) for u in unpacked]
    assert [r["preset"]["name"] for r in recipes] == ["wideband-90ep", "wideband-90ep-baseline"]
    assert [r["preset"]["dropout"] for r in recipes] == [0.3, 0.2]  # each its own, not the first member's
    assert [r["preset"]["time_pooling"] for r in recipes] == ["mean", "last"]
    assert [r["features"]["feature_version"] for r in recipes] == ["3", "4"]
    assert "baseline_prior" not in recipes[0] and recipes[1]["baseline_prior"] == v4_member["baseline_prior"]
