"""Feature versions 2 (each mel band centred over the window) and 3 (the bands above 7.1 kHz held at the floor):
new contract values the daemon knows and computes."""

import dataclasses

import numpy as np
import pytest
from synth import speechlike

from emostream.features import (
    DEFAULT_CONFIG,
    NORMALISATIONS,
    LogMelConfig,
    bands_within,
    centre_bands,
    compute_log_mel_spect,
    hold_high_bands,
    normalise_window,
)
from emostream.features.contract import ContractError, ModelContract
from emostream.features.logmel import mel_power, power_db
from emostream.inference.logmel_stream import LogMelStream
from emostream.inference.model import EmotionModel, ModelError
from emostream.inference.pipeline import EmotionPipeline, PipelineConfig

V2 = dataclasses.replace(DEFAULT_CONFIG, feature_version="2")
V3 = dataclasses.replace(DEFAULT_CONFIG, feature_version="3")
V4 = dataclasses.replace(DEFAULT_CONFIG, feature_version="4")
LABELS = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]


def test_version_2_centres_every_band_and_standardises_the_window():
    v1 = compute_log_mel_spect(speechlike(2.5, seed=4))
    v2 = compute_log_mel_spect(speechlike(2.5, seed=4), V2)
    assert np.abs(v2.mean(axis=1)).max() < 1e-4
    assert abs(float(v2.std()) - 1.0) < 1e-4
    assert np.abs(v1.mean(axis=1)).max() > 0.3  # version 1 keeps the long-term spectrum
    np.testing.assert_allclose(centre_bands(v1), v2, atol=1e-4)  # cached v1 windows convert exactly


def test_version_2_ignores_a_fixed_colouring_of_the_channel_and_version_1_does_not():
    rng = np.random.default_rng(0)
    mel = 10 ** rng.uniform(-3, 0, size=(128, 100)).astype(np.float32)  # 30 dB of range: no bin on the floor
    colouring = 10 ** rng.uniform(-0.6, 0.6, size=(128, 1)).astype(np.float32)  # ±6 dB per band
    np.testing.assert_allclose(normalise_window(mel * colouring, V2), normalise_window(mel, V2), atol=1e-4)
    assert np.abs(normalise_window(mel * colouring) - normalise_window(mel)).max() > 0.1


@pytest.mark.parametrize("limit_hz", [4000.0, 7100.0, 8000.0])
def test_the_kept_bands_are_exactly_those_whose_filters_end_below_the_limit(limit_hz):
    from emostream.features.logmel import mel_filterbank

    kept = bands_within(V3, limit_hz)
    weights = mel_filterbank(V3)
    bin_hz = np.fft.rfftfreq(V3.n_fft_samples, 1 / V3.sample_rate_hz)
    assert 0 < kept < V3.n_mels
    assert bin_hz[weights[kept - 1] > 0].max() <= limit_hz < bin_hz[weights[kept] > 0].max()


def test_version_3_ignores_content_above_7_1_khz_and_version_1_does_not():
    import scipy.signal

    t = np.arange(60000) / 22050
    b, a = scipy.signal.butter(8, 5000, fs=22050)
    speech = scipy.signal.filtfilt(b, a, speechlike(60000 / 22050, seed=5)).astype(np.float32)
    fade = np.sin(np.pi * t / t[-1]) ** 2  # no click: an abrupt onset would spread into every band
    hiss = (0.003 * fade * np.sin(2 * np.pi * 9000 * t)).astype(np.float32)
    v3, v3_hiss = compute_log_mel_spect(speech, V3), compute_log_mel_spect(speech + hiss, V3)
    assert np.abs(v3 - v3_hiss).max() < 0.01
    assert np.abs(compute_log_mel_spect(speech) - compute_log_mel_spect(speech + hiss)).max() > 0.5
    assert np.ptp(v3[111:]) == 0.0 and v3[111:].max() <= v3[:111].min() + 1e-6
    assert abs(float(v3.mean())) < 1e-4 and abs(float(v3.std()) - 1.0) < 1e-4
    # Version 3 from the dB frames by its written definition, not through the code's conversion of version 1:
    db = power_db(mel_power(speech + hiss))[:, :100]
    db = np.maximum(db - db.max(), -80.0)
    db[111:] = db[:111].min()
    np.testing.assert_allclose((db - db.mean()) / db.std(), v3_hiss, atol=1e-4)
    cached = compute_log_mel_spect(speech + hiss).astype(np.float16)  # the clip banks' storage
    before = cached.copy()
    np.testing.assert_allclose(hold_high_bands(cached, 111), v3_hiss, atol=5e-3)
    assert np.array_equal(cached, before)  # the cache is converted, never changed


def test_version_3_keeps_version_1_s_db_reference_so_a_tone_louder_than_the_speech_still_counts():
    """Part of version 3's definition (and what lets cached version 1 windows convert): the dB reference is the
    loudest bin of all bands, so a window whose loudest bin lies above 7.1 kHz is not the same as without it."""
    t = np.arange(60000) / 22050
    speech = (0.3 * speechlike(60000 / 22050, seed=5)).astype(np.float32)
    tone = (3.0 * np.sin(np.pi * t / t[-1]) ** 2 * np.sin(2 * np.pi * 9000 * t)).astype(np.float32)
    assert np.argmax(mel_power(speech + tone)[:, :100].max(axis=1)) >= 111
    assert np.abs(compute_log_mel_spect(speech + tone, V3) - compute_log_mel_spect(speech, V3)).max() > 0.05


@pytest.mark.parametrize("config", [V2, V3], ids=["v2", "v3"])
def test_silence_stays_finite(config):
    out = compute_log_mel_spect(np.zeros(60000, np.float32), config)
    assert np.all(np.isfinite(out)) and np.abs(out).max() == 0.0


@pytest.mark.parametrize("config", [V2, V3], ids=["v2", "v3"])
@pytest.mark.parametrize("hop_frames", [1, 11])
def test_streaming_windows_of_later_versions_equal_their_batch_features(hop_frames, config):
    signal = speechlike(5.0, seed=9)
    stream = LogMelStream(config, hop_frames)
    windows = stream.push(signal[:30000]) + stream.push(signal[30000:])
    assert len(windows) > 3
    for w in windows:
        batch = compute_log_mel_spect(signal[w.start_sample : w.end_sample], config)
        assert np.abs(w.features - batch).max() <= 1e-4


def test_an_unknown_feature_version_is_a_clear_error():
    with pytest.raises(ValueError, match="feature version '5' is unknown"):
        LogMelConfig(feature_version="5")
    contract = dataclasses.replace(ModelContract.for_features(LABELS), feature_version="5")
    with pytest.raises(ContractError, match="feature_version='5'.*computes feature versions 1, 2, 3, 4"):
        contract.check_honoured_by()


def test_the_contract_carries_the_version_and_its_normalisation():
    contract = ModelContract.for_features(LABELS, V2)
    assert contract.feature_version == "2" and contract.normalisation == NORMALISATIONS["2"]
    assert contract.feature_config() == V2
    contract.check_honoured_by()  # this code computes version 2: honoured
    wrong_words = dataclasses.replace(contract, normalisation=NORMALISATIONS["1"])
    with pytest.raises(ContractError, match="normalisation"):
        wrong_words.check_honoured_by()


@pytest.fixture(scope="module")
def model_bytes():
    """The same small untrained CRNN exported with a version 1, a version 2 and a version 3 contract (ONNX bytes)."""
    import keras

    from emostream.export.onnx_export import convert
    from emostream.train.model import CrnnConfig, build_crnn

    keras.utils.set_random_seed(3)
    model = build_crnn(CrnnConfig(conv_filters=(4, 8), lstm_units=(16, 8)), compile=False)
    return {version: convert(model, ModelContract.for_features(LABELS, config), config).SerializeToString()
            for version, config in (("1", DEFAULT_CONFIG), ("2", V2), ("3", V3))}


def test_the_daemon_pipeline_computes_each_models_own_feature_version(model_bytes):
    signal = speechlike(4.0, seed=21)
    for version, onnx_bytes in model_bytes.items():
        model = EmotionModel(onnx_bytes)
        assert model.features.feature_version == version
        pipeline = EmotionPipeline(model, PipelineConfig(hop_s=0.5, silence_dbfs=-120, smoothing=0.0), 22050)
        messages = pipeline.process(signal[:, None])
        assert messages
        hop = round(0.5 * 22050 / 512) * 512
        for i, message in enumerate(messages):
            span = signal[i * hop : i * hop + DEFAULT_CONFIG.window_samples]
            own = model.predict(compute_log_mel_spect(span, model.features))[0]
            np.testing.assert_allclose([message["probabilities"][k] for k in model.labels], own, atol=1e-4)
    # The versions really differ at the model's input: a version mix-up would not go unnoticed.
    span = signal[: DEFAULT_CONFIG.window_samples]
    windows = [compute_log_mel_spect(span, config) for config in (DEFAULT_CONFIG, V2, V3)]
    assert min(np.abs(a - b).max() for i, a in enumerate(windows) for b in windows[i + 1 :]) > 0.1


def with_feature_version(onnx_bytes: bytes, version: str) -> bytes:
    import json

    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    for entry in proto.metadata_props:
        if entry.key == "emostream.feature_version":
            entry.value = json.dumps(version)
    return proto.SerializeToString()


def test_a_model_of_an_unknown_version_is_refused_in_one_line(model_bytes):
    with pytest.raises(ModelError, match="feature_version='9'.*computes feature versions 1, 2, 3") as err:
        EmotionModel(with_feature_version(model_bytes["2"], "9"))
    assert "\n" not in str(err.value)


def test_code_that_knows_only_version_1_refuses_a_version_2_model(model_bytes, monkeypatch):
    import emostream.features.contract as contract_module

    monkeypatch.setattr(contract_module, "NORMALISATIONS", {"1": NORMALISATIONS["1"]})
    with pytest.raises(ModelError, match="feature_version='2'"):
        EmotionModel(model_bytes["2"])
    assert EmotionModel(model_bytes["1"]).features == DEFAULT_CONFIG


def test_a_version_2_contract_with_another_signal_setting_is_still_refused():
    contract = dataclasses.replace(ModelContract.for_features(LABELS, V2), n_mels=64)
    with pytest.raises(ContractError, match="n_mels"):
        contract.check_honoured_by()


@pytest.mark.parametrize(("preset", "config"), [("bandnorm", V2), ("wideband", V3),
                                               ("wideband-90ep-baseline", V4)], ids=["v2", "v3", "v4"])
def test_export_of_a_later_version_run_writes_its_contract_and_proves_parity(preset, config, ravdess_dir, tmp_path):
    """A tiny run of the version's preset saved for export, exported: the ONNX file says its version and parity
    holds on windows of that version."""
    from emostream.export.cli import main as export_main
    from emostream.train.evaluate import main as evaluate_main

    out = tmp_path / "run"
    assert evaluate_main(["--protocol", "random", "--preset", preset, "--epochs", "1", "--data-dir",
                          str(ravdess_dir), "--max-clips-per-class", "5", "--cache-dir", str(tmp_path / "cache"),
                          "--out", str(out), "--save-model", "--set", "augment_share=0"]) == 0
    onnx_path = tmp_path / "model.onnx"
    assert export_main(["--keras", str(out / "model-fold1" / "model.keras"), "--out", str(onnx_path),
                        "--data-dir", str(ravdess_dir), "--cache-dir", str(tmp_path / "cache"),
                        "--min-windows", "5"]) == 0
    model = EmotionModel(onnx_path)
    assert model.contract.feature_version == config.feature_version and model.features == config
    if config.needs_baseline:  # the training speakers' mean baseline travels with the model
        prior = np.asarray(model.contract.baseline_prior)
        assert prior.shape == (128,) and np.all(np.isfinite(prior)) and np.ptp(prior) > 0.1
        # Scored again from the ONNX file (emostream-evaluate --onnx): the same speaker baselines, the same answers.
        import json

        scored = tmp_path / "scored"
        assert evaluate_main(["--protocol", "random", "--onnx", str(onnx_path), "--data-dir", str(ravdess_dir),
                              "--max-clips-per-class", "5", "--cache-dir", str(tmp_path / "cache"), "--out",
                              str(scored), "--set", "augment_share=0"]) == 0
        run = json.loads((out / "folds.json").read_text())[0]
        again = json.loads((scored / "evaluation.json").read_text())["folds"][0]["test"]
        assert again["predicted_share"] == run["test"]["predicted_share"]
        assert (again["accuracy"], again["uar"]) == pytest.approx((run["test"]["accuracy"], run["test"]["uar"]))
