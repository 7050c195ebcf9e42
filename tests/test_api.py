"""The public API on the shipped model: predict at any rate, streaming, score_file, short clips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synth import SR, speechlike

ROOT = Path(__file__).resolve().parent.parent


def p_of(result, labels):
    return np.array([result.probabilities[k] for k in labels])


def test_import_is_cheap_and_the_api_loads_on_first_use():
    code = ("import sys, emostream; assert 'onnxruntime' not in sys.modules and 'librosa' not in sys.modules; "
            "from emostream import EmotionRecognizer, score_file; import emostream.score; "
            "EmotionRecognizer().predict([0.1, -0.1] * 4000, 16000); "
            "assert not [m for m in sys.modules if m.startswith(('emostream.stream', 'tensorflow', 'keras'))]; "
            "print(emostream.__version__, EmotionRecognizer)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import emostream

    assert out.stdout.startswith(emostream.__version__) and "EmotionRecognizer" in out.stdout
    with pytest.raises(AttributeError):
        emostream.NoSuchThing  # noqa: B018


def test_predict_takes_any_rate_and_channel_count(recognizer):
    import soxr

    y16 = soxr.resample(speechlike(3.5, seed=3), SR, 16000).astype(np.float32)
    mono = recognizer.predict(y16, sample_rate_hz=16000)
    assert mono.top in recognizer.labels and not mono.short and mono.windows >= 3
    assert abs(sum(mono.probabilities.values()) - 1) < 1e-5
    assert mono.duration_s == pytest.approx(3.5, abs=1e-3)
    stereo = recognizer.predict(np.stack([y16, y16], axis=1), sample_rate_hz=16000)
    np.testing.assert_allclose(p_of(stereo, recognizer.labels), p_of(mono, recognizer.labels), atol=1e-6)
    # Resampled by the daemon's path: the same as handing over the audio already at the model's rate.
    at_model_rate = recognizer.predict(soxr.resample(y16, 16000, SR, "HQ"), sample_rate_hz=SR)
    np.testing.assert_allclose(p_of(at_model_rate, recognizer.labels), p_of(mono, recognizer.labels), atol=2e-3)
    # Integer PCM (scipy.io.wavfile's int16, an unsigned 8-bit WAV) is read at its own full scale, not as floats.
    as_int16 = recognizer.predict(np.round(y16 * 32767).astype(np.int16), sample_rate_hz=16000)
    np.testing.assert_allclose(p_of(as_int16, recognizer.labels), p_of(mono, recognizer.labels), atol=2e-3)
    as_uint8 = recognizer.predict(np.round(y16 * 127 + 128).astype(np.uint8), sample_rate_hz=16000)
    assert as_uint8.top == mono.top
    as_ints, as_floats = recognizer.stream(16000), recognizer.stream(16000)
    ints = [w for i in range(0, len(y16), 4000) for w in as_ints.push(np.round(y16[i:i + 4000] * 32767).astype("<i2"))]
    floats = [w for i in range(0, len(y16), 4000) for w in as_floats.push(y16[i:i + 4000])]
    assert [w.top for w in ints] == [w.top for w in floats] and ints
    # The rate is not assumed: the same array read as 22.05 kHz is different (faster, higher) audio.
    misread = recognizer.predict(y16, sample_rate_hz=SR)
    assert np.abs(p_of(misread, recognizer.labels) - p_of(mono, recognizer.labels)).max() > 1e-3


def test_classes_restrict_the_output_to_the_argmax_over_them(recognizer, speech_with_pause):
    from emostream import EmotionRecognizer

    four = EmotionRecognizer(classes=["sad", "neutral", "happy", "angry"])  # any order in; the model's order out
    assert four.labels == [c for c in recognizer.labels if c in ("angry", "happy", "neutral", "sad")]
    y = speechlike(3.5, seed=5)
    full, kept = recognizer.predict(y, SR), four.predict(y, SR)
    p_full = p_of(full, four.labels)
    np.testing.assert_allclose(p_of(kept, four.labels), p_full / p_full.sum(), rtol=1e-4)
    assert set(kept.probabilities) == set(four.labels) and kept.top == four.labels[int(np.argmax(p_full))]
    assert abs(sum(kept.probabilities.values()) - 1) < 1e-5
    path, _ = speech_with_pause  # the stream path too: every window, utterance and the summary
    scored, every = four.score_file(path), recognizer.score_file(path)
    for part in [w for w in scored.windows if w.probabilities] + list(scored.utterances) + [scored.summary]:
        assert list(part.probabilities) == four.labels and part.top in four.labels
    # Means over windows are taken over every class and restricted last, not averaged from restricted windows.
    assert len(scored.utterances) == len(every.utterances) == 2
    for kept_u, every_u in zip(scored.utterances, every.utterances, strict=True):
        p = p_of(every_u, four.labels)
        np.testing.assert_allclose(p_of(kept_u, four.labels), p / p.sum(), rtol=1e-4)
    windows = [p_of(w, four.labels) for w in every.windows if w.probabilities]
    mean_of_restricted = np.mean([w / w.sum() for w in windows], axis=0)
    assert np.abs(p_of(scored.summary, four.labels) - mean_of_restricted).max() > 1e-3
    with pytest.raises(ValueError, match=r"\['joy'\] are not classes of this model \(angry, calm"):
        EmotionRecognizer(classes=["angry", "joy"])
    for bad, says in (("angry", "a list"), (["angry"], "at least two"),
                      (["sad", "sad", "angry"], "'sad' more than once")):
        with pytest.raises(ValueError, match=says):
            EmotionRecognizer(classes=bad)


def test_restricting_never_divides_by_zero():
    from emostream.inference.pipeline import restrict

    p = np.array([[1.0, 0.0, 0.0], [0.2, 0.6, 0.2]], np.float32)  # row 0: all mass on a class left out
    out = restrict(p, np.array([1, 2]))
    assert np.isfinite(out).all() and out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.5, 0.5], [0.75, 0.25]])
    np.testing.assert_allclose(restrict(p[1], np.array([0, 1])), [0.25, 0.75])  # one row as (k,)
    assert np.isnan(restrict(np.array([0.1, np.nan, 0.2]), np.array([1, 2]))).all()  # NaN stays NaN: sent as null


@pytest.mark.parametrize("bad, rate, match", [(np.zeros(0), SR, "shape"), (np.zeros((2, 2, 2)), SR, "shape"),
                                              (np.ones(100), 0, "sample_rate_hz"), (np.ones(100), 8000.5, "whole"),
                                              (np.ones(100, bool), SR, "dtype"), (np.array(["a"] * 100), SR, "dtype"),
                                              (np.ones((2, 48000)), SR, r"transpose \(samples.T\)"),
                                              ([1, -1] * 4000, SR, "int16")])  # Python ints: int64, no scale
def test_predict_refuses_bad_input_with_a_clear_error(recognizer, bad, rate, match):
    with pytest.raises(ValueError, match=match):
        recognizer.predict(bad, sample_rate_hz=rate)


def test_a_clip_shorter_than_a_window_is_scored_and_flagged(recognizer, write_clip):
    import soundfile as sf

    path = write_clip("short.wav", speechlike(1.2, seed=4))
    y, _ = sf.read(path, dtype="float32")  # the file's own 16-bit samples
    clip = recognizer.predict(y, SR)
    assert clip.short and clip.windows >= 1 and abs(sum(clip.probabilities.values()) - 1) < 1e-5
    scored = recognizer.score_file(path)
    assert scored.windows == []  # the stream never held a full window of it
    assert [u.short for u in scored.utterances] == [True]
    assert scored.summary.short and scored.summary.top == scored.utterances[0].top
    # Scored as evaluation scores a clip: the same windows, the same mean, whichever door it came in by.
    np.testing.assert_allclose(p_of(scored.summary, recognizer.labels), p_of(clip, recognizer.labels), atol=1e-6)
    silent = recognizer.score_file(write_clip("quiet.wav", np.zeros(SR // 2, np.float32)))
    assert silent.utterances == [] and silent.summary.top is None and silent.summary.probabilities is None
    assert silent.summary == recognizer.predict(np.zeros(SR // 2, np.float32), SR)  # short=False by both doors


@pytest.mark.parametrize("seconds", [0.5, 4.0])  # shorter than a window, and longer
def test_silence_has_no_emotion_in_predict_as_in_the_daemon(recognizer, seconds):
    """Before, ``predict`` classified every window when none passed the level gate: zeros came out 'fearful 74%'."""
    n = int(seconds * 16000)
    for quiet in (np.zeros(n), np.full(n, np.nan), 1e-4 * speechlike(seconds, seed=8, sr=16000)):  # −80 dBFS
        clip = recognizer.predict(quiet, 16000)
        assert (clip.top, clip.top_p, clip.probabilities, clip.windows) == (None, None, None, 0)
        assert not clip.short  # left unscored, not scored inside a floor: as score_file says of it
    heard = recognizer.predict(speechlike(seconds, seed=8, sr=16000), 16000)
    assert heard.top is not None and heard.windows >= 1  # the same clip at speech level is scored


@pytest.mark.parametrize("channels, chunk", [(2, np.zeros(1000)), (2, np.zeros((1000, 1))), (1, np.zeros((1000, 2)))])
def test_a_chunk_of_the_wrong_channel_count_is_refused_by_a_message_that_says_what_fits(recognizer, channels, chunk):
    """Before, a mono chunk pushed to a stereo stream was told "expected (frames,) or (frames, 2)": the shape
    refused."""
    with pytest.raises(ValueError) as error:
        recognizer.stream(16000, channels=channels).push(chunk)
    message = str(error.value)
    assert f"this stream has {channels} channel" in message and f"got shape {chunk.shape}" in message
    assert ("(frames,)" in message) == (channels == 1)


def test_a_finished_stream_refuses_more_audio_in_one_line(recognizer):
    s = recognizer.stream(16000)  # resampled: before, soxr's "Input after last input" leaked out of push()
    s.push(speechlike(3.0, seed=9, sr=16000))
    s.finish()
    for again in (lambda: s.push(np.zeros(100)), s.finish):
        with pytest.raises(ValueError, match="after finish\\(\\): this stream has ended"):
            again()


def test_streaming_is_chunk_size_invariant_and_equals_score_file(recognizer, speech_with_pause):
    import soundfile as sf

    path, _ = speech_with_pause
    stereo, _ = sf.read(path, dtype="float32")  # the file's own 16-bit samples

    def run(chunk):
        return list(recognizer.iter_scores((stereo[i : i + chunk] for i in range(0, len(stereo), chunk)),
                                           44100, channels=2))

    small, large = run(1000), run(7777)
    whole = recognizer.score_file(path)
    assert [w.seq for w in small] == [w.seq for w in large] == [w.seq for w in whole.windows]
    assert len(small) == (round(9.0 * SR) - 50688) // (11 * 512) + 1
    for a, b, c in zip(small, large, whole.windows, strict=True):
        assert a.silence == b.silence == c.silence and a.start_s == c.start_s
        if not a.silence:
            np.testing.assert_allclose(p_of(a, recognizer.labels), p_of(c, recognizer.labels), atol=1e-5)
            np.testing.assert_allclose(p_of(b, recognizer.labels), p_of(c, recognizer.labels), atol=1e-5)


def test_score_file_gives_utterances_between_silences_and_a_summary(recognizer, speech_with_pause):
    path, stereo = speech_with_pause
    scored = recognizer.score_file(path)
    assert any(w.silence for w in scored.windows)
    assert len(scored.utterances) == 2 and not any(u.short for u in scored.utterances)
    first, second = scored.utterances
    assert first.end_s < 5.4 and second.start_s > 3.5  # the pause splits them
    labels = recognizer.labels
    for u in scored.utterances:  # each is the mean of the classified windows it spans
        inside = [w for w in scored.windows if not w.silence and u.start_s <= w.start_s and w.end_s <= u.end_s]
        assert len(inside) == u.windows
        np.testing.assert_allclose(p_of(u, labels), np.mean([p_of(w, labels) for w in inside], axis=0), atol=1e-6)
        assert u.top == labels[int(np.argmax(p_of(u, labels)))]
    classified = [p_of(w, labels) for w in scored.windows if not w.silence]
    np.testing.assert_allclose(p_of(scored.summary, labels), np.mean(classified, axis=0), atol=1e-6)
    assert scored.summary.windows == len(classified) and not scored.summary.short
    assert scored.summary.duration_s == pytest.approx(len(stereo) / 44100, abs=1e-6)


def test_score_file_refuses_what_it_cannot_read_in_one_line(recognizer, tmp_path):
    from emostream.features import AudioDecodeError

    (tmp_path / "notes.wav").write_text("not audio")
    for path, match in ((tmp_path / "absent.wav", "not found"), (tmp_path / "notes.wav", "cannot read"),
                        (tmp_path, "is a folder, not a file")):
        with pytest.raises(AudioDecodeError, match=match) as err:
            recognizer.score_file(path)
        assert "\n" not in str(err.value)


def test_score_file_says_when_a_wav_is_shorter_than_its_header(recognizer, write_clip, caplog):
    path = write_clip("cut.wav", speechlike(3.0, seed=4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    scored = recognizer.score_file(path)
    assert scored.summary.duration_s == pytest.approx(2.0, abs=0.01)
    assert "cut.wav: its header declares 3.00 s of audio, the file holds 2.00 s" in caplog.text


def test_the_voice_gate_is_opt_in_and_marks_windows_without_speech(recognizer):
    """``vad=VadConfig()``: the sample's speech is classified, loud pink noise after it is not (``speech``
    False, no label) in ``iter_scores``; ``predict`` stays the evaluation's level-gate score; a ``vad`` that
    is not a VadConfig is a ValueError at once."""
    import soundfile as sf

    from emostream import EmotionRecognizer, VadConfig
    from emostream.bench.vadcheck import coloured_noise
    from emostream.paths import DEFAULT_SAMPLE

    speech, sr = sf.read(DEFAULT_SAMPLE, dtype="float32", frames=5 * SR)
    y = np.concatenate([speech, coloured_noise(3.0, 1.0, -24, seed=3).astype(np.float32)])  # loud pink noise
    gated = EmotionRecognizer(vad=VadConfig())
    windows = list(gated.iter_scores([y[i:i + 4096] for i in range(0, y.size, 4096)], sr))
    plain = list(recognizer.iter_scores([y], sr))
    assert [w.seq for w in windows] == [w.seq for w in plain]
    noise = [w for w in windows if w.start_s >= speech.size / sr]
    assert noise and all(not w.speech and not w.silence and w.top is None for w in noise)
    assert all(w.speech and w.top for w in plain if w.start_s >= speech.size / sr)
    assert any(w.speech for w in windows)
    for g, p in zip(windows, plain, strict=True):  # where both classify, the same scores
        if g.speech:
            np.testing.assert_allclose(list(g.probabilities.values()), list(p.probabilities.values()), atol=1e-6)
    assert gated.predict(y, sr) == recognizer.predict(y, sr)
    with pytest.raises(ValueError, match="vad"):
        EmotionRecognizer(vad=True)
