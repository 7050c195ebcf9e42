"""Bad or unusual audio: a clear one-line error, or a correct result — never a traceback or a hang."""

import asyncio
import resource
import threading

import numpy as np
import pytest
import soundfile as sf
from synth import SR, speechlike

from emostream.inference.model import EmotionModel
from emostream.inference.pipeline import EmotionPipeline, PipelineConfig
from emostream.stream.daemon import EmotionDaemon, ServerConfig
from emostream.stream.ring_buffer import RingBuffer
from emostream.stream.sources import FileSource, SourceError, StdinSource


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: p.write_bytes(b""), "cannot read audio file"),
        (lambda p: p.write_text("just some text\n" * 40), "cannot read audio file"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), SR), "holds no samples"),
        (lambda p: None, "not found"),
    ],
    ids=["empty-file", "text-renamed-wav", "zero-length-audio", "missing"],
)
def test_unreadable_files_are_one_line_errors(tmp_path, make, match):
    path = tmp_path / "input.wav"
    make(path)
    with pytest.raises(SourceError, match=match) as err:
        FileSource(path)
    assert "\n" not in str(err.value)


def run_file(model, path, **pipeline):
    """The daemon on a file (fast), no subscribers; returns (exit code, windows published, daemon).

    Every message that would be broadcast (utterances and the end too) is kept in ``daemon.captured``.
    """
    daemon = EmotionDaemon(model, FileSource(path, realtime=False), PipelineConfig(**pipeline), ServerConfig(port=0))
    daemon.captured = []
    daemon.broadcaster.publish = lambda message, is_window=True: daemon.captured.append(message)
    code = asyncio.run(daemon.run())
    return code, [m for m in daemon.captured if m["type"] == "scores"], daemon


@pytest.fixture(scope="module")
def model(tiny_onnx):
    return EmotionModel(tiny_onnx)


def test_truncated_file_gives_the_windows_it_holds_and_says_it_was_cut(model, tmp_path, caplog):
    path = tmp_path / "full.wav"
    sf.write(path, speechlike(6.0, seed=3), SR, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header still claims 6 s
    code, messages, _ = run_file(model, path, silence_dbfs=-120)
    assert code == 0
    assert 1 <= len(messages) <= (3 * SR - 50688) // 5632 + 2
    assert "full.wav: its header declares 6.00 s of audio, the file holds 3.00 s (cut short?)" in caplog.text


def test_audio_shorter_than_a_window_ends_cleanly_and_says_why(model, tmp_path, caplog):
    path = tmp_path / "short.wav"
    sf.write(path, speechlike(1.0, seed=4), SR)
    code, messages, daemon = run_file(model, path)
    assert code == 0 and messages == []  # no window was ever full...
    assert [m["type"] for m in daemon.captured] == ["utterance", "end"]  # ...yet the clip is scored, flagged
    assert daemon.captured[0]["short"] is True and daemon.captured[0]["end_s"] == pytest.approx(1.0, abs=1e-3)
    assert "shorter than one 2.30 s window" in caplog.text


def test_audio_shorter_than_a_window_that_a_gate_stops_says_which(model, tmp_path, caplog):
    from emostream.inference.vad import VadConfig

    path = tmp_path / "short-synthetic.wav"
    sf.write(path, speechlike(1.0, seed=4), SR)  # loud, but no speech to Silero
    code, _, daemon = run_file(model, path, vad=VadConfig())
    assert code == 0 and [m["type"] for m in daemon.captured] == ["end"]
    assert "not scored, no speech in it (voice gate)" in caplog.text
    sf.write(path, 0.001 * speechlike(1.0, seed=4), SR)  # −60 dBFS or so
    caplog.clear()
    code, _, daemon = run_file(model, path)
    assert code == 0 and [m["type"] for m in daemon.captured] == ["end"]
    assert "not scored, quieter than the level gate" in caplog.text


@pytest.mark.parametrize("kind", ["clipping", "dc-offset", "nan-inf"])
def test_damaged_signals_still_give_valid_scores(model, tmp_path, kind):
    y = speechlike(5.0, seed=5)
    if kind == "clipping":
        y = np.clip(y * 40, -1, 1)
    elif kind == "dc-offset":
        y = y + 0.3
    path = tmp_path / f"{kind}.wav"
    sf.write(path, y, SR, subtype="FLOAT")
    if kind == "nan-inf":
        pipeline = EmotionPipeline(model, PipelineConfig(silence_dbfs=-120), SR)
        y[100:200], y[3000] = np.nan, -np.inf
        messages = pipeline.process(y[:, None])
        assert pipeline.nonfinite_samples == 101
    else:
        code, messages, _ = run_file(model, path, silence_dbfs=-120)
        assert code == 0
    assert messages
    for m in messages:
        p = np.array(list(m["probabilities"].values()))
        assert np.all(np.isfinite(p)) and abs(p.sum() - 1) < 1e-5


@pytest.mark.parametrize("rate,channels", [(8000, 1), (44100, 1), (48000, 2), (16000, 6)])
def test_file_rates_and_channel_layouts_through_the_daemon(model, tmp_path, rate, channels):
    t = np.arange(int(4.0 * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    path = tmp_path / f"{rate}-{channels}.wav"
    sf.write(path, np.repeat(mono[:, None], channels, axis=1), rate)
    code, messages, daemon = run_file(model, path, silence_dbfs=-120)
    assert code == 0
    expected = (int(4.0 * SR) - 50688) // 5632 + 1
    assert abs(len(messages) - expected) <= 1
    assert abs(daemon.pipeline.stream.samples_seen - 4.0 * SR) < 0.01 * SR


def test_a_one_hour_file_streams_in_bounded_memory(tmp_path):
    path = tmp_path / "hour.wav"
    rate = 8000
    block = (0.1 * np.sin(np.arange(rate * 60) * 0.05)).astype(np.float32)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        for _ in range(60):
            f.write(block)
    source = FileSource(path, realtime=False, block_frames=4096)
    ring = RingBuffer(rate * 10, 1)
    stop = threading.Event()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reader = threading.Thread(target=source.run, args=(ring, stop))
    reader.start()
    frames = 0
    while not (ring.closed and ring.available == 0):
        ring.wait_for_data(0.5)
        frames += len(ring.read())
    reader.join()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert frames == rate * 3600
    assert grown_mb < 40  # the 57 MB file was never held whole


def test_stdin_pcm_s16le_and_f32le(tmp_path, caplog):
    import io

    y = (0.5 * np.sin(np.arange(8000) * 0.1)).astype(np.float32)
    stereo = np.stack([y, -y], axis=1)
    for fmt, raw in (("s16le", (stereo * 32767).astype("<i2").tobytes()), ("f32le", stereo.astype("<f4").tobytes())):
        source = StdinSource(8000, 2, fmt, stream=io.BytesIO(raw[:-3]))  # a torn last frame is dropped, and said
        ring = RingBuffer(20000, 2)
        caplog.clear()
        source.run(ring, threading.Event())
        got = ring.read()
        assert got.shape == (7999, 2)
        torn = len(raw) // 8000 - 3
        assert f"stdin ended with {torn} byte(s), less than one {len(raw) // 8000}-byte frame (--format {fmt}" in \
            caplog.text
        np.testing.assert_allclose(got[:, 0], y[:7999], atol=1e-4)
    with pytest.raises(SourceError, match="unknown sample format"):
        StdinSource(8000, 1, "u8")
