import librosa
import numpy as np
import pytest
from synth import SR, speechlike, tone

from emostream.features import DEFAULT_CONFIG, AudioDecodeError, compute_log_mel_spect, load_audio, mel_power_of_frames


def reference_features(y: np.ndarray) -> np.ndarray:
    """The reference notebook's recipe written out with librosa called directly."""
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_mels=128, hop_length=512, n_fft=2048)
    db = librosa.power_to_db(mel, ref=np.max)
    db = db[:, :100] if db.shape[1] >= 100 else np.pad(db, ((0, 0), (0, 100 - db.shape[1])))
    return (db - db.mean()) / db.std()


def test_long_clip_is_trimmed_to_the_first_100_frames():
    y = speechlike(3.5, seed=1)
    y[:22050] *= 3.0  # loudest part inside the window, as the reference's clip-wide max then agrees
    out = compute_log_mel_spect(y)
    assert out.shape == (128, 100) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference_features(y), atol=1e-4)


def test_short_clip_is_zero_padded_in_db_then_standardised():
    y = speechlike(1.0, seed=2)  # 1 + 22050 // 512 = 44 frames
    out = compute_log_mel_spect(y)
    np.testing.assert_allclose(out, reference_features(y), atol=1e-4)
    padded = out[:, 44:]
    assert np.all(padded == padded[0, 0])  # one constant: 0 dB after the shift and scale
    assert not np.allclose(out[:, :44], padded[0, 0])


def test_window_is_standardised():
    out = compute_log_mel_spect(speechlike(2.5, seed=3))
    assert abs(out.mean()) < 1e-5
    assert abs(out.std() - 1) < 1e-4


def test_silence_does_not_divide_by_zero():
    out = compute_log_mel_spect(np.zeros(SR * 3, np.float32))
    assert np.all(np.isfinite(out))
    assert np.all(out == 0)


def test_window_span_yields_exactly_the_window():
    span = DEFAULT_CONFIG.window_samples
    assert 1 + span // DEFAULT_CONFIG.hop_samples == DEFAULT_CONFIG.window_frames
    y = speechlike(span / SR, seed=4)[:span]
    assert librosa.feature.melspectrogram(y=y, sr=SR).shape[1] == 100


def test_frame_power_equals_librosa_melspectrogram():
    y = speechlike(1.0, seed=5)
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_mels=128, hop_length=512, n_fft=2048)
    padded = np.pad(y, 1024)
    frames = np.stack([padded[t * 512 : t * 512 + 2048] for t in range(mel.shape[1])])
    np.testing.assert_allclose(mel_power_of_frames(frames), mel, rtol=1e-4, atol=1e-6 * mel.max())


def test_file_path_equals_samples(write_clip):
    y = tone(2.6, 330.0) + speechlike(2.6, seed=6)
    path = write_clip("clip.wav", y)
    decoded, _ = librosa.load(path, sr=SR)
    np.testing.assert_array_equal(compute_log_mel_spect(path), compute_log_mel_spect(decoded))


def test_other_sample_rates_are_resampled_on_load(write_clip):
    path = write_clip("clip48k.wav", tone(1.0, 440.0, sr=48000), sr=48000)
    y = load_audio(path)
    assert abs(len(y) - SR) <= 1


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: None, "not found"),
        (lambda p: p.mkdir(), "is a folder, not a file"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("this is not audio\n" * 50), "cannot decode"),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path, make, match):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioDecodeError, match=match) as err:
        compute_log_mel_spect(path)
    assert "\n" not in str(err.value)


def test_real_clip_matches_the_reference_recipe(ravdess_dir):
    path = sorted((ravdess_dir / "Audio_Speech_Actors_01-24" / "Actor_01").iterdir())[0]
    y, _ = librosa.load(path, sr=SR)
    np.testing.assert_allclose(compute_log_mel_spect(path), reference_features(y), atol=1e-4)
