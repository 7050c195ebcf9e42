"""Feature version 4: version 3 heard relative to the speaker's baseline — its definition, the daemon's per-stream
baseline, the contract's prior, and the baselines training and evaluation take from the clip banks."""

import dataclasses

import numpy as np
import pytest
from synth import speechlike

from emostream.features import (
    BASELINE_MEMORY_WINDOWS,
    BASELINE_PRIOR_WINDOWS,
    DEFAULT_CONFIG,
    band_profile,
    centre_bands,
    compute_log_mel_spect,
    from_version_1,
    relative_to_baseline,
    standardise_db,
)
from emostream.features.contract import ContractError, ModelContract
from emostream.inference.baseline import StreamBaseline
from emostream.inference.logmel_stream import LogMelStream
from emostream.inference.model import EmotionModel, ModelError
from emostream.inference.pipeline import EmotionPipeline, PipelineConfig

V3 = dataclasses.replace(DEFAULT_CONFIG, feature_version="3")
V4 = dataclasses.replace(DEFAULT_CONFIG, feature_version="4")
LABELS = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]


def test_version_4_builds_on_version_3_and_a_one_window_baseline_makes_it_version_2_of_it():
    v1 = compute_log_mel_spect(speechlike(2.5, seed=4))
    v3 = from_version_1(v1, V3)
    assert V4.per_window() == V3 and V3.per_window() == V3 and V4.needs_baseline and not V3.needs_baseline
    np.testing.assert_allclose(from_version_1(v1, V4, np.zeros(128)), v3, atol=1e-5)
    np.testing.assert_allclose(from_version_1(v1, V4, band_profile(v3)), centre_bands(v3), atol=1e-5)
    other = band_profile(from_version_1(compute_log_mel_spect(speechlike(2.5, seed=8) * 0.3), V3))
    out = from_version_1(v1, V4, other)
    assert abs(float(out.mean())) < 1e-5 and abs(float(out.std()) - 1.0) < 1e-4
    assert np.abs(out - v3).max() > 0.05 and np.abs(out - centre_bands(v3)).max() > 0.05


def test_version_4_without_a_baseline_is_a_clear_error_not_a_silent_version_3():
    v1 = compute_log_mel_spect(speechlike(2.5, seed=4))
    with pytest.raises(ValueError, match="needs the speaker baseline"):
        from_version_1(v1, V4)
    with pytest.raises(ValueError, match="speaker baseline"):
        LogMelStream(V4)


def test_a_stream_baseline_is_the_prior_weighted_running_mean_then_a_fixed_step():
    rng = np.random.default_rng(0)
    prior = rng.normal(size=128)
    windows = rng.normal(size=(BASELINE_MEMORY_WINDOWS + 30, 128, 100)).astype(np.float32) + 0.5
    baseline = StreamBaseline(prior)
    profiles = band_profile(windows)
    for n in (1, 2, 17, BASELINE_MEMORY_WINDOWS):
        while baseline.windows < n:
            got = baseline.update(windows[baseline.windows]).copy()
        want = (BASELINE_PRIOR_WINDOWS * prior + profiles[:n].sum(axis=0)) / (BASELINE_PRIOR_WINDOWS + n)
        np.testing.assert_allclose(got, want, atol=1e-9)
    before = baseline.mean.copy()
    baseline.update(windows[-1])
    step = 1 / (BASELINE_PRIOR_WINDOWS + BASELINE_MEMORY_WINDOWS)
    np.testing.assert_allclose(baseline.mean, before + step * (profiles[-1] - before), atol=1e-9)
    assert baseline.windows == BASELINE_MEMORY_WINDOWS
    baseline.reset()
    np.testing.assert_array_equal(baseline.mean, prior)
    with pytest.raises(ValueError, match="finite"):
        StreamBaseline([0.0, float("nan")])
    # At another hop the same seconds count: a hop of 22 frames weighs the prior as 10 windows, remembers 120.
    half = StreamBaseline(prior, hop_frames=22)
    half.update(windows[0])
    np.testing.assert_allclose(half.mean, (10 * prior + profiles[0]) / 11, atol=1e-9)
    assert half.memory_windows == BASELINE_MEMORY_WINDOWS // 2


@pytest.fixture(scope="module")
def v4_model():
    """A small untrained CRNN exported with a version 4 contract and a non-trivial prior."""
    import keras

    from emostream.export.onnx_export import convert
    from emostream.train.model import CrnnConfig, build_crnn

    keras.utils.set_random_seed(3)
    model = build_crnn(CrnnConfig(conv_filters=(4, 8), lstm_units=(16, 8)), compile=False)
    prior = tuple(float(v) for v in 0.3 * np.sin(np.arange(128) / 9.0))
    return convert(model, ModelContract.for_features(LABELS, V4, baseline_prior=prior), V4).SerializeToString()


def test_the_daemon_hears_each_window_relative_to_its_stream_s_baseline(v4_model, monkeypatch):
    model = EmotionModel(v4_model)
    assert model.features == V4 and len(model.contract.baseline_prior) == 128
    seen = []
    predict = model.predict
    monkeypatch.setattr(model, "predict", lambda x: seen.append(np.array(x)) or predict(x))
    pipeline = EmotionPipeline(model, PipelineConfig(hop_s=0.25, silence_dbfs=-120, smoothing=0.0), 22050)
    signal = np.concatenate([speechlike(3.0, seed=1), 0.2 * speechlike(3.0, seed=2)])
    messages = pipeline.process(signal[:40000, None]) + pipeline.process(signal[40000:, None])
    scored = np.concatenate(seen)
    # The same windows by the written definition: version 3 windows of the stream, the prior-weighted running mean.
    plain = [w.features for w in LogMelStream(V3, 11).push(signal)]
    assert len(plain) == len(scored) == len([m for m in messages if m["type"] == "scores"]) > 10
    prior = np.asarray(model.contract.baseline_prior)
    running = np.cumsum([band_profile(w) for w in plain], axis=0)
    for i, w in enumerate(plain):
        baseline = (BASELINE_PRIOR_WINDOWS * prior + running[i]) / (BASELINE_PRIOR_WINDOWS + i + 1)
        np.testing.assert_allclose(scored[i], relative_to_baseline(w, baseline), atol=1e-4)
    # A new stream starts again from the prior: the first window is heard as it was the first time.
    pipeline.reset()
    seen.clear()
    pipeline.process(signal[:60000, None])
    np.testing.assert_allclose(seen[0][0], scored[0], atol=1e-6)


def test_a_version_4_contract_without_a_usable_prior_is_refused_in_one_line(v4_model):
    for prior in ([], [0.0] * 64, [0.0] * 127 + [None], [0.0] * 127 + [1e300], None, "0.5"):
        with pytest.raises(ModelError, match="baseline_prior") as err:
            EmotionModel(with_prior(v4_model, prior))
        assert "\n" not in str(err.value)
    contract = ModelContract.for_features(LABELS, V4, baseline_prior=tuple([0.5] * 128))
    assert ModelContract.from_metadata(contract.to_metadata()) == contract
    with pytest.raises(ContractError, match="baseline_prior"):
        ModelContract.for_features(LABELS, V4).check_honoured_by()


def test_fold_baselines_train_on_the_speakers_own_training_clips_and_score_from_their_other_clips_in_the_part():
    from emostream.train.baselines import clip_profiles, per_speaker, speaker_keys
    from emostream.train.clipbank import ClipBank

    rng = np.random.default_rng(1)
    speakers = speaker_keys(["ravdess"] * 4 + ["emodb"] * 2, [1, 1, 1, 2, 7, 7])
    assert list(speakers[[0, 3, 4]]) == ["ravdess-1", "ravdess-2", "emodb-7"]
    db = [rng.uniform(-60, 0, size=(128, n)).astype(np.float16) for n in (150, 120, 110, 100, 130, 90)]
    windows = [rng.normal(size=(k, 128, 100)).astype(np.float16) for k in (4, 2, 3, 3, 5, 1)]
    tilt = np.linspace(0.0, -12.0, 128)[:, None]  # a channel that darkens the sound: the noise variant's colouring
    names = [f"c{i}" for i in range(6)]
    banks = {"orig": ClipBank(names, db, windows),
             "noise": ClipBank(names, [(d + tilt).astype(np.float16) for d in db], None)}
    profiles = clip_profiles(banks, speakers, V4)
    # Speaker 1 has clips 0, 1 in training and clip 2 in test (the random protocol shares speakers): clip 2 never
    # reaches a training baseline or the prior.
    b = profiles.for_fold(np.array([0, 1, 3]), [np.array([2]), np.array([4, 5])])
    window_profiles = [band_profile(from_version_1(w, V3)) for w in windows]
    stretches = [band_profile(standardise_db(db[0].astype(np.float32)[:, s : s + 100], V3)) for s in (0, 11, 22, 33,
                                                                                                       44)]
    stretches += [band_profile(standardise_db(db[1].astype(np.float32)[:, s : s + 100], V3)) for s in (0, 11)]
    np.testing.assert_allclose(b.training["orig"][0], np.mean(stretches, axis=0), atol=1e-5)
    np.testing.assert_array_equal(b.training["orig"][0], b.training["orig"][1])
    assert np.abs(b.training["noise"][0] - b.training["orig"][0]).max() > 1e-3
    assert np.isnan(b.training["orig"][[2, 4, 5]]).all() and np.isnan(b.heard[[0, 1, 3]]).all()
    # Scoring: the speaker's other clips in the same part (a lone clip: its own).
    np.testing.assert_allclose(b.heard[2], window_profiles[2].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(b.heard[4], window_profiles[5].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(b.heard[5], window_profiles[4].mean(axis=0), atol=1e-6)
    # The prior: each training speaker once (their training clips' scored windows), whatever their number of clips.
    speaker_1 = np.concatenate(window_profiles[:2]).mean(axis=0)
    np.testing.assert_allclose(b.prior, (speaker_1 + window_profiles[3].mean(axis=0)) / 2, atol=1e-6)
    sums, counts = np.arange(12.0).reshape(3, 4), np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(per_speaker(sums, counts, np.array(["a", "a", "a"]), np.arange(3), True)[1],
                               (sums[0] + sums[2]) / 4)


def test_training_windows_of_version_4_are_their_crop_relative_to_the_speaker_s_baseline():
    from emostream.train import evaluate as ev
    from emostream.train.baselines import FoldBaselines
    from emostream.train.clipbank import ClipBank

    preset = dataclasses.replace(ev.PRESETS["wideband-90ep-baseline"], augment_share=0.0, crops=False,
                                 spec_augment=False)
    rng = np.random.default_rng(2)
    bank = ClipBank(["a"], [rng.uniform(-60, 0, size=(128, 120)).astype(np.float16)], None)
    with pytest.raises(ValueError, match="speaker baselines"):
        ev.TrainingWindows(preset, {"orig": bank}, seed=0)
    baseline = rng.normal(size=(1, 128))
    windows = ev.TrainingWindows(preset, {"orig": bank}, 0, FoldBaselines({"orig": baseline}, baseline, baseline[0]))
    want = relative_to_baseline(standardise_db(bank.db[0].astype(np.float32)[:, :100], V3), baseline[0])
    np.testing.assert_allclose(windows.window(0), want, atol=1e-5)
    with pytest.raises(ValueError, match="vtlp"):
        dataclasses.replace(preset, vtlp=0.1)


def test_a_version_4_seed_ensemble_scores_its_listed_clips_as_its_evaluation_did_and_exports(ravdess_dir, tmp_path):
    """Two tiny version 4 runs on an EmoBox fold (a speaker's clips all in one part, so the listed test clips hold
    every other clip a test speaker's baseline comes from), combined: the ensemble model scored afresh on its listed
    clips matches the evaluation, and the exported file carries the members' prior."""
    import json

    from emostream.export.cli import main as export_main
    from emostream.train import ensemble, evaluate

    runs = []
    for offset in (0, 1000):
        runs.append(tmp_path / f"seed{offset}")
        assert evaluate.main(["--protocol", "emobox", "--folds", "1", "--no-cross", "--preset",
                              "wideband-90ep-baseline", "--epochs", "2", "--set", "min_epochs=1", "--set",
                              "augment_share=0", "--set", "conv_filters=8,16", "--max-clips-per-class", "12",
                              "--data-dir", str(ravdess_dir), "--cache-dir", str(tmp_path / "cache"), "--save-model",
                              "--seed-offset", str(offset), "--out", str(runs[-1])]) == 0
    out = tmp_path / "ensemble"
    assert ensemble.main([*map(str, runs), "--out", str(out), "--data-dir", str(ravdess_dir),
                          "--cache-dir", str(tmp_path / "cache")]) == 0
    # Each member also scored its test clips as a stream's first utterance (from the prior): another figure.
    kept = json.loads((runs[0] / "folds.json").read_text())[0]["clip_probabilities"]
    assert len(kept["tail_average_cold"]["test"]) == len(kept["tail_average"]["test"])
    assert not np.allclose(kept["tail_average_cold"]["test"], kept["tail_average"]["test"], atol=1e-4)
    fold = json.loads((out / "evaluation.json").read_text())["folds"][0]
    assert set(fold["tail_average_cold"]) == {"test"}
    summary = json.loads((out / "model-fold1-tail-average" / "summary.json").read_text())
    assert summary["n_test"] >= 4
    assert summary["listed_accuracy"] == pytest.approx(fold["tail_average"]["test"]["accuracy"], abs=1e-9)
    assert summary["test_uar"] == pytest.approx(fold["tail_average"]["test"]["uar"], abs=1e-9)
    member = json.loads((runs[0] / "model-fold1-tail-average" / "summary.json").read_text())
    assert summary["baseline_prior"] == member["baseline_prior"] and len(member["baseline_prior"]) == 128
    onnx_path = tmp_path / "ensemble.onnx"
    assert export_main(["--keras", str(out / "model-fold1-tail-average" / "model.keras"), "--out", str(onnx_path),
                        "--data-dir", str(ravdess_dir), "--cache-dir", str(tmp_path / "cache"),
                        "--min-windows", "4"]) == 0
    contract = EmotionModel(onnx_path).contract
    np.testing.assert_allclose(contract.baseline_prior, member["baseline_prior"], atol=1e-6)


def with_prior(onnx_bytes: bytes, prior) -> bytes:
    import json

    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    for entry in proto.metadata_props:
        if entry.key == "emostream.baseline_prior":
            entry.value = json.dumps(prior)
    return proto.SerializeToString()


def test_a_reloaded_version_4_model_keeps_the_stream_s_baseline_and_the_next_stream_starts_at_its_prior(
        v4_model, tmp_path):
    import soundfile as sf

    from emostream.stream.daemon import EmotionDaemon, ServerConfig
    from emostream.stream.sources import FileSource

    audio, live = tmp_path / "a.wav", tmp_path / "model.onnx"
    sf.write(audio, speechlike(3.0, seed=1), 22050)
    live.write_bytes(v4_model)
    daemon = EmotionDaemon(EmotionModel(live), FileSource(audio), PipelineConfig(hop_s=0.25), ServerConfig(port=0))
    daemon.pipeline.process(speechlike(4.0, seed=3)[:, None])
    heard = daemon.pipeline.baseline.mean.copy()
    assert daemon.pipeline.baseline.windows > 0
    retrained = [0.1] * 128
    live.write_bytes(with_prior(v4_model, retrained))
    assert daemon.reload_model() is True and daemon.model.contract.baseline_prior == tuple(retrained)
    np.testing.assert_array_equal(daemon.pipeline.baseline.mean, heard)  # the stream's speaker is still the speaker
    daemon.pipeline.reset()
    np.testing.assert_array_equal(daemon.pipeline.baseline.mean, retrained)


def test_the_api_scores_a_clip_as_a_stream_s_first_utterance(v4_model):
    from emostream.api import EmotionRecognizer
    from emostream.inference import scoring

    recognizer = EmotionRecognizer(v4_model)
    clip = speechlike(3.0, seed=6)
    score = recognizer.predict(clip, 22050)
    _, voiced = scoring.stream_windows(clip, scoring.StreamContext(), 0, V4)
    x = StreamBaseline(recognizer.model.contract.baseline_prior).relative(np.stack([w.features for w in voiced]))
    want = recognizer.model.predict(x).mean(axis=0)
    np.testing.assert_allclose([score.probabilities[k] for k in LABELS], want, atol=1e-5)
    plain = recognizer.model.predict(np.stack([w.features for w in voiced])).mean(axis=0)
    assert np.abs(plain - want).max() > 1e-4  # the baseline really moved the answer
    with pytest.raises(ValueError, match="per_window"):
        scoring.clip_windows(clip, config=V4)
