import json

import numpy as np
import onnx
import pytest
from synth import speechlike

from emostream.export.cli import main as export_main
from emostream.export.onnx_export import ExportError, check_parity, convert, load_keras_model, without_cudnn
from emostream.features import DEFAULT_CONFIG, compute_log_mel_spect
from emostream.features.contract import ModelContract
from emostream.inference.model import EmotionModel, ModelError
from emostream.train.model import CrnnConfig, build_crnn

LABELS = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]


@pytest.fixture(scope="module")
def small_crnn():
    import keras

    keras.utils.set_random_seed(1)
    return build_crnn(CrnnConfig(conv_filters=(4, 8), lstm_units=(16, 8)), compile=False)


@pytest.fixture(scope="module")
def contract():
    return ModelContract.for_features(LABELS, run_id="test-run", test_accuracy=0.5)


@pytest.fixture(scope="module")
def onnx_proto(small_crnn, contract):
    return convert(small_crnn, contract)


@pytest.fixture(scope="module")
def windows():
    rng = np.random.default_rng(0)
    speech = [compute_log_mel_spect(speechlike(2.4, seed=s)) for s in range(24)]
    noise = rng.standard_normal((40, 128, 100)).astype(np.float32)
    return np.concatenate([np.stack(speech), noise])


def test_onnx_matches_keras_on_every_window(small_crnn, onnx_proto, windows):
    y = np.arange(len(windows)) % 8
    parity = check_parity(small_crnn, onnx_proto.SerializeToString(), windows, y)
    assert parity.n_windows == 64
    assert parity.max_abs_diff < 1e-5
    assert parity.top1_agreement == 1.0
    assert parity.keras_accuracy == parity.onnx_accuracy
    assert parity.holds


def test_a_crnn_pooled_over_time_converts_with_parity(contract, windows):
    """The mean over the second LSTM's steps (a recipe's ``time_pooling``) is a graph tf2onnx must convert too."""
    import keras

    keras.utils.set_random_seed(2)
    pooled = build_crnn(CrnnConfig(conv_filters=(4, 8), lstm_units=(16, 8), time_pooling="mean"), compile=False)
    assert pooled.get_layer("mean_over_time")
    parity = check_parity(pooled, convert(pooled, contract).SerializeToString(), windows, np.arange(len(windows)) % 8)
    assert parity.max_abs_diff < 1e-5 and parity.holds


def test_a_crnn_pooled_over_frequency_converts_with_parity_and_reads_a_third_as_many_values(contract, windows):
    """A recipe's ``freq_pool``: a max-pool over the conv blocks' frequency rows before the LSTMs."""
    import keras

    keras.utils.set_random_seed(3)
    pooled = build_crnn(CrnnConfig(conv_filters=(4, 8), lstm_units=(16, 8), freq_pool=3), compile=False)
    assert pooled.get_layer("pool_over_frequency").output.shape[1] == 10  # 30 rows → 10
    assert build_crnn(CrnnConfig(freq_pool=3), compile=False).count_params() == 462_856  # 1,118,216 without
    parity = check_parity(pooled, convert(pooled, contract).SerializeToString(), windows, np.arange(len(windows)) % 8)
    assert parity.max_abs_diff < 1e-5 and parity.holds


def test_graph_has_named_io_and_dynamic_batch(onnx_proto):
    (inp,), (out,) = onnx_proto.graph.input, onnx_proto.graph.output
    assert inp.name == "log_mel" and out.name == "probabilities"
    dims = inp.type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value")  # symbolic batch
    assert [d.dim_value for d in dims[1:]] == [128, 100, 1]
    assert onnx_proto.opset_import[0].version >= 17


def test_contract_round_trips_through_the_model_file(onnx_proto, contract, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx_proto.SerializeToString())
    model = EmotionModel(path)
    assert model.contract == contract
    assert model.labels == LABELS
    assert model.contract.feature_config() == DEFAULT_CONFIG
    p = model.predict(np.zeros((2, 128, 100), np.float32))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


def with_metadata(proto, **changes) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for entry in copy.metadata_props:
        field = entry.key.removeprefix("emostream.")
        if field in changes:
            entry.value = json.dumps(changes[field])
    return copy.SerializeToString()


@pytest.mark.parametrize(
    "field,value",
    [("n_mels", 64), ("hop_samples", 256), ("sample_rate_hz", 16000), ("feature_version", "0"),
     ("normalisation", "minmax"), ("window_frames", 128)],
)
def test_a_contract_this_code_cannot_honour_is_refused_naming_the_field(onnx_proto, field, value):
    with pytest.raises(ModelError, match=field) as err:
        EmotionModel(with_metadata(onnx_proto, **{field: value}))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "field,value",
    [("labels", 5), ("labels", None), ("labels", [[1]]), ("n_mels", "128"), ("n_mels", True), ("top_db", None),
     ("baseline_prior", [1, "x"]), ("test_accuracy", "high"), ("feature_version", [1]), ("run_id", 7)],
)
def test_a_corrupt_contract_field_is_refused_naming_it_in_one_line(onnx_proto, field, value):
    """Wrong JSON types once raised TypeError from the feature code (a traceback; a SIGHUP reload died)."""
    with pytest.raises(ModelError, match=f"contract field {field} is not") as err:
        EmotionModel(with_metadata(onnx_proto, **{field: value}))
    assert "\n" not in str(err.value)


def test_every_contract_field_has_a_type_check():
    from dataclasses import fields

    from emostream.features.contract import _FIELD_KINDS, ModelContract

    assert set(_FIELD_KINDS) == {f.name for f in fields(ModelContract)}


def test_a_model_without_contract_is_refused(onnx_proto):
    bare = onnx.ModelProto()
    bare.CopyFrom(onnx_proto)
    del bare.metadata_props[:]
    with pytest.raises(ModelError, match="no feature contract"):
        EmotionModel(bare.SerializeToString())


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", "truncate"])
def test_corrupt_or_missing_onnx_is_a_one_line_error(onnx_proto, tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(onnx_proto.SerializeToString()[:5000] if content == "truncate" else content)
    with pytest.raises(ModelError, match="cannot load model") as err:
        EmotionModel(path)
    assert "\n" not in str(err.value) and "ONNXRuntimeError" not in str(err.value)  # words, not the runtime's codes
    if content == b"not an onnx model at all":
        assert str(err.value).endswith("bad.onnx: not an ONNX model (Protobuf parsing failed)")
    with pytest.raises(ModelError, match="not found"):
        EmotionModel(tmp_path / "absent.onnx")


def test_corrupt_or_missing_keras_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04 garbage")
    for path, match in ((bad, "cannot load Keras model"), (tmp_path / "absent.keras", "not found")):
        with pytest.raises(ExportError, match=match) as err:
            load_keras_model(path)
        assert "\n" not in str(err.value)


def test_lstms_are_rebuilt_off_cudnn_with_the_same_weights(small_crnn):
    clone = without_cudnn(small_crnn)
    lstms = [layer for layer in clone.layers if type(layer).__name__ == "LSTM"]
    assert len(lstms) == 2 and all(layer.use_cudnn is False for layer in lstms)
    for a, b in zip(small_crnn.get_weights(), clone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def trained_slice(ravdess_dir, tmp_path_factory):
    """A run trained for one epoch on 5 clips per class, once for the module, and its feature cache."""
    from emostream.train.cli import main as train_main

    root = tmp_path_factory.mktemp("trained")
    assert train_main(["--data-dir", str(ravdess_dir), "--max-clips-per-class", "5", "--epochs", "1",
                       "--out", str(root / "run"), "--cache-dir", str(root / "cache")]) == 0
    return root / "run", root / "cache"


def own_copy(trained_slice, tmp_path):
    """The trained run copied for one test (export writes its records and card into the run's folder)."""
    import shutil

    run, cache = trained_slice
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run", cache


def test_export_command_end_to_end_on_a_trained_slice(ravdess_dir, trained_slice, tmp_path, capsys):
    run, cache = own_copy(trained_slice, tmp_path)
    out = tmp_path / "m.onnx"
    args = ["--keras", str(run / "model.keras"), "--out", str(out), "--data-dir", str(ravdess_dir),
            "--cache-dir", str(cache)]
    assert export_main(args) == 1  # 8 test windows are fewer than the 200 parity demands
    assert not out.exists()
    assert export_main([*args, "--min-windows", "8"]) == 0
    assert "parity on 8 windows" in capsys.readouterr().out
    model = EmotionModel(out)
    summary = json.loads((run / "summary.json").read_text())
    assert model.contract.run_id == "run" and model.contract.test_accuracy == summary["test_accuracy"]
    record = json.loads((run / "m.parity.json").read_text())  # beside the run's card, not beside the ONNX file
    assert not (tmp_path / "m.parity.json").exists()
    assert record["max_abs_diff"] < 1e-5 and record["top1_agreement"] == 1.0
    assert "## ONNX export" in (run / "metrics.md").read_text()


def test_the_int8_record_goes_beside_the_runs_card_not_into_the_models_folder(ravdess_dir, trained_slice, tmp_path,
                                                                              capsys):
    run, cache = own_copy(trained_slice, tmp_path)
    assets = tmp_path / "assets"  # as the package's assets are for the default --out
    assert export_main(["--keras", str(run / "model.keras"), "--out", str(assets / "m.onnx"), "--data-dir",
                        str(ravdess_dir), "--cache-dir", str(cache), "--min-windows", "8", "--int8"]) == 0
    record = json.loads((run / "m.int8.json").read_text())
    assert "INT8" in capsys.readouterr().out and record["method"].startswith("static QDQ")
    assert sorted(p.name for p in assets.iterdir()) == sorted(["m.onnx"] + (["m.int8.onnx"] if record["shipped"]
                                                                            else []))


def test_large_batches_are_scored_in_chunks_with_the_same_result(onnx_proto):
    from emostream.inference.model import InferenceConfig

    model = EmotionModel(onnx_proto.SerializeToString(), InferenceConfig(max_batch_windows=3))
    x = np.random.default_rng(3).standard_normal((10, 128, 100)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), np.concatenate([model.predict(w) for w in x]), atol=1e-6)
