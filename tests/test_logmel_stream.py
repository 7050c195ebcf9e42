"""The streaming windows equal the batch features of the same span, whatever the chunking."""

import numpy as np
import pytest
from synth import speechlike

from emostream.features import DEFAULT_CONFIG, compute_log_mel_spect
from emostream.inference.logmel_stream import LogMelStream

SIGNAL = speechlike(9.0, seed=11) + 0.05 * np.sin(np.arange(int(9.0 * 22050)) * 0.01).astype(np.float32)


def stream_windows(y, hop_frames, chunks):
    stream = LogMelStream(DEFAULT_CONFIG, hop_frames)
    out, pos = [], 0
    rng = np.random.default_rng(hop_frames)
    while pos < len(y):
        n = int(chunks) if np.isscalar(chunks) else int(rng.integers(*chunks))
        out += stream.push(y[pos : pos + n])
        pos += n
    return out


@pytest.mark.parametrize("hop_frames", [1, 3, 11, 43, 120])
@pytest.mark.parametrize("chunks", [1024, 333, (1, 5000), 10**6])
def test_every_window_equals_compute_log_mel_spect_of_its_span(hop_frames, chunks):
    windows = stream_windows(SIGNAL, hop_frames, chunks)
    hop = hop_frames * DEFAULT_CONFIG.hop_samples
    expected_count = (len(SIGNAL) - DEFAULT_CONFIG.window_samples) // hop + 1
    assert [w.index for w in windows] == list(range(expected_count))
    for w in windows:
        assert w.start_sample == w.index * hop and w.end_sample - w.start_sample == DEFAULT_CONFIG.window_samples
        batch = compute_log_mel_spect(SIGNAL[w.start_sample : w.end_sample])
        assert np.abs(w.features - batch).max() <= 1e-4, (w.index, hop_frames, chunks)


def test_results_do_not_depend_on_chunk_size():
    a = stream_windows(SIGNAL, 11, 512)
    b = stream_windows(SIGNAL, 11, (1, 20000))
    assert len(a) == len(b)
    for wa, wb in zip(a, b, strict=True):  # equal up to float32 rounding of differently batched FFTs
        np.testing.assert_allclose(wa.features, wb.features, atol=1e-5)


def test_nothing_is_emitted_before_the_first_window_is_full():
    stream = LogMelStream(DEFAULT_CONFIG, 11)
    assert stream.push(SIGNAL[: DEFAULT_CONFIG.window_samples - 1]) == []
    (first,) = stream.push(SIGNAL[DEFAULT_CONFIG.window_samples - 1 : DEFAULT_CONFIG.window_samples])
    assert first.index == 0


def test_each_interior_frame_is_computed_once(monkeypatch):
    import emostream.inference.logmel_stream as module

    computed = []
    real = module.mel_power_of_frames

    def counting(frames, config):
        computed.append(len(frames))
        return real(frames, config)

    monkeypatch.setattr(module, "mel_power_of_frames", counting)
    hop_frames = 11
    windows = stream_windows(SIGNAL, hop_frames, 700)
    frames_in_signal = (len(SIGNAL) - 1024) // 512 - 1  # centred frames with full real context
    edge_frames = 4 * len(windows)
    assert sum(computed) <= frames_in_signal + edge_frames
    assert sum(computed) < len(windows) * 100 / 5  # far below recomputing 100 frames per hop


def test_reset_starts_a_new_stream():
    stream = LogMelStream(DEFAULT_CONFIG, 11)
    first = stream.push(SIGNAL[:60000])
    stream.reset()
    again = stream.push(SIGNAL[:60000])
    assert [w.start_sample for w in again] == [w.start_sample for w in first]
    np.testing.assert_array_equal(again[0].features, first[0].features)


def test_level_of_silence_and_full_scale():
    stream = LogMelStream(DEFAULT_CONFIG, 11)
    (quiet,) = stream.push(np.zeros(DEFAULT_CONFIG.window_samples, np.float32))
    assert quiet.level_dbfs <= -199
    stream.reset()
    (loud,) = stream.push(np.ones(DEFAULT_CONFIG.window_samples, np.float32))
    assert abs(loud.level_dbfs) < 1e-6
