"""The utterance-statistics probe's maths (scripts/utterance_stats_probe.py; candidate 21 of the selection log):
pitch on a tone, speaker references that never include the utterance itself, a running reference that starts from
the prior and learns the speaker."""

from __future__ import annotations

import importlib.util
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("librosa")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "utterance_stats_probe.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("utterance_stats_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_verdict_applies_all_three_conditions(probe):
    def run(figures, unseen, emodb):
        return {"figure": float(np.mean(figures)), "figure_per_fold": figures, "unseen_uar": unseen,
                "emodb_uar": emodb}

    shipped = run([0.5] * 6, 0.6, 0.4)
    assert probe.candidate_21_verdict({"0.0": shipped, str(1 / 3): run([0.53] * 6, 0.65, 0.41)})["wins"]
    assert not probe.candidate_21_verdict({"0.0": shipped, str(1 / 3): run([0.51] * 6, 0.62, 0.40)})["wins"]  # (i)
    assert not probe.candidate_21_verdict({"0.0": shipped, str(1 / 3): run([0.53] * 6, 0.67, 0.39)})["wins"]  # (ii)
    four_ahead = [0.56, 0.56, 0.56, 0.56, 0.49, 0.49]
    assert not probe.candidate_21_verdict({"0.0": shipped, str(1 / 3): run(four_ahead, 0.65, 0.41)})["wins"]  # (iii)
