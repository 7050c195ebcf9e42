"""The utterance-statistics probe's maths (scripts/utterance_stats_probe.py; candidate 21 of the selection log):
pitch on a tone, speaker references that never include the utterance itself, a running reference that starts from
the prior and learns the speaker."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from scriptload import load_script

pytest.importorskip("sklearn")
pytest.importorskip("librosa")


@pytest.fixture(scope="module")
def probe():
    return load_script("utterance_stats_probe")


@pytest.mark.parametrize("f0_hz", [90.0, 180.0, 320.0])
def test_pitch_of_a_harmonic_tone_is_its_fundamental(probe, f0_hz):
    t = np.arange(int(probe.SAMPLE_RATE_HZ * 0.5)) / probe.SAMPLE_RATE_HZ
    tone = sum(np.sin(2 * np.pi * k * f0_hz * t) / k for k in range(1, 6)).astype(np.float32)
    f0, clarity = probe.autocorrelation_pitch(tone)
    middle = slice(3, len(f0) - 3)  # frames that hold only the tone
    assert np.median(f0[middle]) == pytest.approx(f0_hz, rel=0.03)
    assert clarity[middle].min() > 0.8


def test_statistics_of_speechlike_audio_are_finite_and_louder_audio_reads_louder(probe):
    rng = np.random.default_rng(0)
    t = np.arange(probe.SAMPLE_RATE_HZ * 2) / probe.SAMPLE_RATE_HZ
    voice = (np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size))
    quiet, loud = (probe.signal_statistics((g * voice).astype(np.float32)) for g in (0.05, 0.5))
    assert quiet.shape == (probe.N_STATISTICS,) and np.isfinite(quiet).all() and np.isfinite(loud).all()
    level = list(probe.GROUPS["level"])[0]
    assert loud[level] - quiet[level] == pytest.approx(20.0, abs=1.0)  # ×10 amplitude = +20 dB
    pitch = list(probe.GROUPS["pitch"])[0]
    assert loud[pitch] == pytest.approx(12 * np.log2(150 / 100), abs=0.5)  # semitones above 100 Hz


def test_speaker_reference_leaves_the_utterance_itself_out(probe):
    x = np.array([[1.0], [2.0], [3.0], [10.0], [20.0], [30.0]])
    speaker = np.array(["a", "a", "a", "b", "b", "b"])
    z = probe.speaker_relative(x, speaker)
    # Clip 0 against clips 1 and 2 (mean 2.5, std 0.5); clip 3 against 20 and 30 (mean 25, std 5).
    assert z[0, 0] == pytest.approx(-3.0, rel=1e-4) and z[3, 0] == pytest.approx(-3.0, rel=1e-4)


def test_running_reference_starts_at_the_prior_and_follows_the_speaker(probe):
    x = np.random.default_rng(1).normal(50.0, 2.0, size=(400, 1))
    speaker = np.array(["s"] * 400)
    order = np.random.default_rng([probe.DATA_SEED, zlib.crc32(b"s")]).permutation(400)
    near = probe.running_relative(x, speaker, prior_mean=np.array([48.0]), prior_var=np.array([4.0]), prior_clips=5)
    assert near[order[0], 0] == pytest.approx((x[order[0], 0] - 48.0) / 2.0, rel=1e-4)  # the prior alone
    assert abs(near[order[100:], 0].mean()) < 0.2 and 0.85 < near[order[100:], 0].std() < 1.15
    # A prior far from the speaker shifts the early means, but never makes the speaker sound more variable.
    far = probe.running_relative(x, speaker, prior_mean=np.array([0.0]), prior_var=np.array([4.0]), prior_clips=5)
    assert 0.85 < far[order[100:], 0].std() < 1.15


def test_verdict_applies_all_three_conditions_at_their_boundaries(probe):
    def run(figures, unseen, emodb, figure=None):
        return {"figure": float(np.mean(figures)) if figure is None else figure, "unseen_uar": unseen,
                "emodb_uar": emodb, "folds": [{"figure": f} for f in figures]}

    def verdict(blend):
        return probe.candidate_21_verdict({"0.0": shipped, str(1 / 3): blend})

    shipped = run([0.5] * 6, 0.6, 0.4)
    assert verdict(run([0.53] * 6, 0.65, 0.41))["wins"]
    assert verdict(run([0.53] * 6, 0.65, 0.41, figure=shipped["figure"] + 0.02))["wins"]  # exactly the bar: enough
    assert not verdict(run([0.51] * 6, 0.62, 0.40))["wins"]  # (i)
    assert not verdict(run([0.53] * 6, 0.67, 0.39))["wins"]  # (ii): EmoDB below
    assert not verdict(run([0.53] * 6, 0.59, 0.45))["wins"]  # (ii): the unseen actors below
    level_on_two = [0.56, 0.56, 0.56, 0.56, 0.5, 0.5]  # a tie is not ahead
    assert verdict(run(level_on_two, 0.65, 0.41))["folds_ahead"] == 4
    assert not verdict(run(level_on_two, 0.65, 0.41))["wins"]  # (iii)


def test_prior_comes_from_the_given_rows_only(probe):
    x = np.array([[0.0], [2.0], [10.0], [14.0], [1000.0], [3000.0]])
    speaker = np.array(["a", "a", "b", "b", "test", "test"])
    mean, var = probe.speaker_prior(x, speaker, np.array([0, 1, 2, 3]))
    assert mean[0] == pytest.approx((1.0 + 12.0) / 2) and var[0] == pytest.approx((1.0 + 4.0) / 2)


def test_a_speaker_with_one_clip_is_refused(probe):
    with pytest.raises(ValueError, match="one clip"):
        probe.speaker_relative(np.zeros((3, 2)), np.array(["a", "a", "b"]))


def test_evaluate_refuses_a_mix_scored_on_other_rows_or_labels(probe):
    rng = np.random.default_rng(2)
    classes = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]
    actor = np.concatenate([np.repeat(np.arange(1, 25), 16), np.repeat([3, 8], 16)])
    is_ravdess = np.arange(len(actor)) < 24 * 16
    y = np.tile(np.arange(8), len(actor) // 8)
    inputs = rng.normal(size=(len(actor), 4)) + y[:, None]

    def mix(shift_rows=False, relabel=False):
        folds = []
        for test_actors in probe.EMOBOX_FOLDS:
            test = np.flatnonzero(is_ravdess & np.isin(actor, test_actors))
            test = test + 1 if shift_rows else test
            cross = np.flatnonzero(~is_ravdess)
            truth = {"test": y[test].tolist(), "cross": ((y[cross] + 1) % 8 if relabel else y[cross]).tolist()}
            parts = {"test": test, "cross": cross}
            folds.append({"clip_probabilities": {
                "rows": {k: v.tolist() for k, v in parts.items()}, "y_true": truth,
                "tail_average": {k: np.full((len(v), 8), 1 / 8).tolist() for k, v in parts.items()}}})
        return folds

    scored = probe.evaluate(inputs, y, classes, actor, is_ravdess, mix(), [0.0, 1.0])
    assert scored["1.0"]["unseen_uar"] > 0.5  # the inputs carry the class; the uniform mix does not
    with pytest.raises(ValueError, match="test rows"):
        probe.evaluate(inputs, y, classes, actor, is_ravdess, mix(shift_rows=True), [1.0])
    with pytest.raises(ValueError, match="labels differ"):
        probe.evaluate(inputs, y, classes, actor, is_ravdess, mix(relabel=True), [1.0])


def test_frames_near_the_floor_stay_out_when_the_floor_is_known(probe):
    rng = np.random.default_rng(3)
    sr = probe.SAMPLE_RATE_HZ
    t = np.arange(sr) / sr
    voice = 0.014 * sum(np.sin(2 * np.pi * k * 200 * t) / k for k in range(1, 4))  # about −40 dBFS RMS, 200–600 Hz
    floor = rng.standard_normal(3 * sr) * 10 ** (-60 / 20)  # white noise at −60 dBFS
    stream = floor.copy()
    stream[sr:2 * sr] += voice
    stream = stream.astype(np.float32)
    blind, floored = probe.signal_statistics(stream), probe.signal_statistics(stream, floor_dbfs=-60.0)
    active_share, centroid = list(probe.GROUPS["timing"])[0], list(probe.GROUPS["centroid"])[0]
    assert blind[active_share] > 0.9  # 35 dB below a −40 dBFS voice lets the −60 dBFS noise in
    assert floored[active_share] == pytest.approx(1 / 3, abs=0.05)  # only the voiced second
    assert blind[centroid] - floored[centroid] > 500  # the noise-only frames no longer pull the centroid up (Hz)
