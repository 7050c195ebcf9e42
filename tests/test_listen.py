"""``/listen``: clients stream their own PCM to the daemon and get their own scores, many at once.

The audio is the bundled sample (RAVDESS speech, always installed), so these tests need no data set.

Scores over the wire are compared with ``EmotionPipeline`` run offline on the very samples the client
sent (same rate, format and channels, pushed in one piece): probabilities within 1e-4 (soxr's streaming
resampler and float32 sums are the only differences chunking can make).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import re
import threading
import time

import numpy as np
import pytest
from needs import unavailable
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from emostream.confidence import describe_bands
from emostream.inference.model import EmotionModel
from emostream.inference.pipeline import EmotionPipeline, PipelineConfig
from emostream.paths import DEFAULT_MODEL_PATH, DEFAULT_SAMPLE
from emostream.stream.daemon import EmotionDaemon, ServerConfig
from emostream.stream.listen import (
    CLOSE_BAD_DATA,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_LATER,
    ListenConfig,
    ListenError,
    NoSource,
    RealtimeLimiter,
    parse_start,
)
from emostream.stream.subscriber import SubscribeError, subscribe

TOLERANCE = 1e-4
# Stretches of the bundled sample (six RAVDESS clips of actor 21, always installed): seconds from, to.
CLIP = (0.0, 4.5)
CLIP_2 = (5.0, 10.0)


@pytest.fixture(scope="module")
def model(tiny_onnx):
    return EmotionModel(DEFAULT_MODEL_PATH if DEFAULT_MODEL_PATH.is_file() else tiny_onnx)


def load(part, rate_hz):
    import soundfile as sf
    import soxr

    y, sr = sf.read(DEFAULT_SAMPLE, dtype="float32")
    y = y[int(part[0] * sr) : int(part[1] * sr)]
    return y if rate_hz == sr else soxr.resample(y, sr, rate_hz).astype(np.float32)


def as_bytes(frames: np.ndarray, sample_format: str) -> bytes:
    """(n, channels) float32 → interleaved PCM bytes; s16le is quantised (the daemon sees the same values)."""
    if sample_format == "s16le":
        return (np.clip(np.round(frames * 32768), -32768, 32767).astype("<i2")).tobytes()
    return frames.astype("<f4").tobytes()


def heard(frames: np.ndarray, sample_format: str) -> np.ndarray:
    """What the daemon decodes from ``as_bytes``."""
    if sample_format == "s16le":
        return np.frombuffer(as_bytes(frames, "s16le"), "<i2").reshape(frames.shape).astype(np.float32) / 32768
    return frames.astype(np.float32)


def offline(model, frames, rate_hz, config=PipelineConfig()):
    pipeline = EmotionPipeline(model, config, rate_hz, frames.shape[1])
    return [m for m in pipeline.process(frames, last=True) if m["type"] == "scores"]


def run_stream(url, frames, rate_hz, sample_format, chunk_frames, pace_s=0.0, start_extra=None, on_message=None):
    """Stream ``frames`` in chunks (sizes from ``chunk_frames``, cycled), stop, read everything until the close.

    Returns (hello, messages after hello, close code)."""
    messages = []
    with connect(f"{url}/listen", max_size=None) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate_hz": rate_hz, "format": sample_format,
                            "channels": frames.shape[1], **(start_extra or {})}))
        hello = json.loads(ws.recv(timeout=20))
        sizes = chunk_frames if isinstance(chunk_frames, list) else [chunk_frames]
        reader_done = threading.Event()
        code = [None]

        def read():
            try:
                while True:
                    m = json.loads(ws.recv(timeout=60))
                    m["_t"] = time.monotonic()
                    messages.append(m)
                    if on_message:
                        on_message(m)
            except ConnectionClosed as closed:
                code[0] = closed.rcvd.code if closed.rcvd else None
            finally:
                reader_done.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        i, k = 0, 0
        started = time.monotonic()
        while i < len(frames) and not reader_done.is_set():
            n = sizes[k % len(sizes)]
            ws.send(as_bytes(frames[i : i + n], sample_format))
            i, k = i + n, k + 1
            if pace_s:
                ahead = started + k * pace_s - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        if not reader_done.is_set():
            ws.send(json.dumps({"type": "stop"}))
        assert reader_done.wait(60)
    return hello, messages, code[0]


def real_time_stream_in_background(url: str, frames: np.ndarray) -> tuple[threading.Thread, dict]:
    """A client sending 16 kHz s16le in 100 ms frames at real-time pace on its own thread; its
    ``(hello, messages, close code)`` lands in ``result["steady"]`` when the thread ends."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        steady=run_stream(url, frames, 16000, "s16le", 1600, pace_s=0.1)), daemon=True)
    thread.start()
    return thread, result


@pytest.fixture(scope="module")
def fast_daemon(model):
    """A listen-only daemon that lets tests send faster than real time."""
    return EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0),
                         ListenConfig(max_realtime_factor=1000, realtime_burst_s=60, workers=2))


@pytest.mark.parametrize("rate_hz, sample_format, channels, chunks", [
    (16000, "s16le", 1, 1600),  # 100 ms frames, the usual client
    (44100, "f32le", 2, [1000, 17, 4410, 1]),  # stereo, odd chunk sizes
    (22050, "s16le", 1, 1 << 30),  # the model's own rate, the whole clip in one message
])
def test_streamed_scores_equal_the_offline_pipeline_on_the_same_samples(model, daemon_thread, rate_hz,
                                                                         sample_format, channels, chunks):
    y = load(CLIP, rate_hz)
    frames = np.stack([y, 0.5 * y], axis=1) if channels == 2 else y[:, None]
    expected = offline(model, heard(frames, sample_format), rate_hz)
    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0),
                           ListenConfig(max_realtime_factor=1000, realtime_burst_s=60, workers=1))
    with daemon_thread(daemon) as running:
        hello, messages, code = run_stream(running.url, frames, rate_hz, sample_format, chunks,
                                           start_extra={"stream_id": "clip-1"})
    assert code == 1000
    assert hello["type"] == "hello" and hello["stream_id"] == "clip-1" and hello["labels"] == model.labels
    assert hello["input"] == {"sample_rate_hz": rate_hz, "format": sample_format, "channels": channels}
    scores = [m for m in messages if m["type"] == "scores"]
    assert [m["seq"] for m in scores] == [m["seq"] for m in expected] == list(range(len(expected)))
    assert len(expected) >= 6
    for got, want in zip(scores, expected, strict=True):
        assert got["stream_id"] == "clip-1"
        assert got["silence"] == want["silence"] and got["start_s"] == want["start_s"]
        if not want["silence"]:
            np.testing.assert_allclose([got["probabilities"][k] for k in model.labels],
                                       [want["probabilities"][k] for k in model.labels], atol=TOLERANCE)
    # utterances come from the same windows; the end comes last and counts them
    assert messages[-1]["type"] == "end" and messages[-1]["windows"] == len(expected)
    utterances = [m for m in messages if m["type"] == "utterance"]
    assert messages[-1]["utterances"] == len(utterances) >= 1
    assert messages[-1]["duration_s"] == pytest.approx(len(frames) / rate_hz, abs=1e-5)
    voiced = [w for w in expected if not w["silence"]]
    assert sum(u["windows"] for u in utterances) == len(voiced)



def test_two_streams_at_once_keep_their_own_state(model, fast_daemon, daemon_thread):
    a = load(CLIP, 16000)[:, None]
    b = load(CLIP_2, 48000)[:, None]
    want_a = offline(model, heard(a, "s16le"), 16000, PipelineConfig(smoothing=0.5))
    want_b = offline(model, heard(b, "f32le"), 48000, PipelineConfig(hop_s=0.1, classes=("sad", "angry")))
    results = {}

    def go(name, *args, **kw):
        results[name] = run_stream(*args, **kw)

    with daemon_thread(fast_daemon) as running:
        threads = [threading.Thread(target=go, args=("a", running.url, a, 16000, "s16le", 800),
                                    kwargs={"start_extra": {"smoothing": 0.5}, "pace_s": 0.002}),
                   threading.Thread(target=go, args=("b", running.url, b, 48000, "f32le", 2400),
                                    kwargs={"start_extra": {"hop_s": 0.1, "classes": ["sad", "angry"]},
                                            "pace_s": 0.002})]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    for name, want in (("a", want_a), ("b", want_b)):
        hello, messages, code = results[name]
        assert code == 1000
        scores = [m for m in messages if m["type"] == "scores"]
        assert {m["stream_id"] for m in messages} == {hello["stream_id"]}
        assert len(scores) == len(want)
        for got, w in zip(scores, want, strict=True):
            if not w["silence"]:
                assert list(got["probabilities"]) == hello["labels"]
                np.testing.assert_allclose([got["probabilities"][k] for k in hello["labels"]],
                                           [w["probabilities"][k] for k in hello["labels"]], atol=TOLERANCE)
    assert results["a"][0]["labels"] == model.labels  # b's classes are b's alone
    assert results["b"][0]["labels"] == ["angry", "sad"]  # in the model's order
    assert results["a"][0]["confidence_bands"] == describe_bands() and results["b"][0]["confidence_bands"] is None
    assert results["a"][0]["stream_id"] != results["b"][0]["stream_id"]
    assert results["b"][0]["hop_s"] < results["a"][0]["hop_s"]


def expect_error(url, *sends, code, contains, max_size=None):
    """Open /listen, send each item (str → text, bytes → binary), return the error line after checking it."""
    with connect(f"{url}/listen", max_size=max_size) as ws:
        lines = []
        try:
            for item in sends:
                ws.send(item)
        except ConnectionClosed:  # the daemon may close before the last item: what it said is still readable
            pass
        try:
            while True:
                lines.append(json.loads(ws.recv(timeout=20)))
        except ConnectionClosed as closed:
            got = closed.rcvd.code if closed.rcvd else None
    errors = [m for m in lines if m["type"] == "error"]
    assert len(errors) == 1, lines
    assert got == code and errors[0]["code"] == code, (got, errors)
    assert contains in errors[0]["error"] and "\n" not in errors[0]["error"]
    return errors[0]


START = json.dumps({"type": "start", "sample_rate_hz": 16000, "format": "s16le", "channels": 1})


def test_each_error_gets_its_line_and_close_code_while_another_stream_keeps_its_cadence(model, daemon_thread):
    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0),
                           ListenConfig(max_streams=3, max_message_bytes=65536, realtime_burst_s=1.0, workers=2,
                                        max_messages_per_s=100))
    y = load(CLIP, 16000)
    steady = np.tile(y, 3)[: 16000 * 9, None]  # 9 s in real time, 100 ms frames
    with daemon_thread(daemon) as running:
        url = running.url
        t, result = real_time_stream_in_background(url, steady)
        time.sleep(1.0)
        second = np.zeros(1600, "<i2").tobytes()
        expect_error(url, "not json", code=CLOSE_POLICY, contains="malformed JSON")
        for text in ('{"type": "start", "sample_rate_hz": ' + "9" * 5000 + "}", "[" * 1500 + "]" * 1500):
            expect_error(url, text, code=CLOSE_POLICY, contains="malformed JSON")  # were 1011 and a traceback
        expect_error(url, json.dumps({"type": "start", "format": "s16le"}), code=CLOSE_POLICY,
                     contains="sample_rate_hz is required")
        expect_error(url, json.dumps({"type": "start", "sample_rate_hz": 4000, "format": "s16le"}),
                     code=CLOSE_POLICY, contains="sample_rate_hz 4000 out of range")
        expect_error(url, json.dumps({"type": "start", "sample_rate_hz": 16000, "format": "mp3"}),
                     code=CLOSE_POLICY, contains="format 'mp3' not supported")
        expect_error(url, json.dumps({"type": "start", "sample_rate_hz": 16000, "format": "s16le", "channels": 9}),
                     code=CLOSE_POLICY, contains="channels 9 out of range")
        expect_error(url, second, code=CLOSE_POLICY, contains="audio before start")
        for field, value in (("format", [1]), ("sample_rate_hz", 10**400)):  # once a silent close 1000
            expect_error(url, json.dumps({"type": "start", "sample_rate_hz": 16000, "format": "s16le", field: value}),
                         code=CLOSE_POLICY, contains=field)
        expect_error(url, START, b"\x00\x01\x02", code=CLOSE_BAD_DATA, contains="not a whole number")
        expect_error(url, START, bytes(65536 + 2), code=CLOSE_TOO_BIG, contains="65536 byte limit")
        expect_error(url, START, *[second * 5] * 8, code=CLOSE_POLICY, contains="faster than 2x real time")
        # one-frame messages without pause: within the audio budget, but each costs the shared loop (before: a
        # million in 8 s delayed every client's scores ~0.35 s)
        expect_error(url, START, *[bytes(2)] * 1000, code=CLOSE_POLICY, contains="more than 100 messages per second")
        expect_error(url, START, json.dumps({"type": "pause"}), code=CLOSE_POLICY, contains="unknown message type")
        deadline = time.monotonic() + 5  # refused streams leave the count as their handlers end
        while running.daemon.health()["listen"]["streams"] > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        with connect(f"{url}/listen") as held, connect(f"{url}/listen") as held_too:  # + steady = max_streams
            for ws in (held, held_too):
                ws.send(START)
                assert json.loads(ws.recv(timeout=10))["type"] == "hello"
            expect_error(url, START, code=CLOSE_TRY_LATER, contains="too many streams (3)")
            assert running.daemon.health()["listen"]["streams"] == 3
        t.join(60)
    hello, messages, code = result["steady"]
    assert code == 1000 and messages[-1]["type"] == "end"
    scores = [m for m in messages if m["type"] == "scores"]
    assert len(scores) >= 25  # 9 s: (9 - 2.3) / 0.255 + 1 windows
    gaps = np.diff([m["_t"] for m in scores])
    # windows leave every hop (0.255 s); the frames carrying them leave every 0.1 s: the gap between two
    # windows the client sees is at most hop + one frame, plus scheduling on a loaded machine.
    assert gaps.max() < hello["hop_s"] + 0.1 + 0.25, gaps.max()


def test_parse_start_ranges():
    cfg, d = ListenConfig(), PipelineConfig()
    spec = parse_start({"type": "start", "sample_rate_hz": 48000.0, "format": "f32le", "channels": 2,
                        "hop_s": 0.5, "smoothing": 0.3, "stream_id": "call-7"}, d, cfg, "s1")
    assert (spec.sample_rate_hz, spec.channels, spec.frame_bytes, spec.stream_id) == (48000, 2, 8, "call-7")
    assert spec.pipeline.hop_s == 0.5 and spec.pipeline.smoothing == 0.3 and spec.pipeline.classes is None
    kept = parse_start({"type": "start", "sample_rate_hz": 16000, "format": "s16le", "classes": ["sad", "angry"]},
                       d, cfg, "s1")
    assert kept.pipeline.classes == ("sad", "angry")
    every = parse_start({"type": "start", "sample_rate_hz": 16000, "format": "s16le", "classes": None},
                        dataclasses.replace(d, classes=("sad", "angry")), cfg, "s1")
    assert every.pipeline.classes is None  # null: every class, though the daemon reports two
    for bad, text in [({"sample_rate_hz": True}, "must be an integer"), ({"sample_rate_hz": 16000.5}, "integer"),
                      ({"hop_s": 0.01}, "hop_s 0.01 out of range"), ({"smoothing": 1.0}, "smoothing 1.0 out of range"),
                      ({"stream_id": "a b"}, "stream_id must be"), ({"volume": 3}, "unknown field(s) volume"),
                      ({"format": [1]}, "format [1] not supported"), ({"format": None}, "format None not supported"),
                      ({"sample_rate_hz": 10**400}, "sample_rate_hz 1000"), ({"hop_s": 10**400}, "hop_s 1000"),
                      ({"channels": 1e300}, "channels 1e+300 out of range"), ({"smoothing": "0.5"}, "a number"),
                      ({"classes": "angry,sad"}, "classes must be a list"), ({"classes": ["sad"]}, "two distinct"),
                      ({"classes": ["sad", 3]}, "class names")]:
        with pytest.raises(ListenError, match=re.escape(text)) as info:
            parse_start({"type": "start", "sample_rate_hz": 16000, "format": "s16le", **bad}, d, cfg, "s1")
        assert info.value.code == CLOSE_POLICY
    with pytest.raises(ValueError, match="--max-realtime-factor"):
        ListenConfig(max_realtime_factor=0.5).check()


def test_classes_the_model_lacks_are_one_line_errors(model, daemon_thread):
    start = json.dumps({"type": "start", "sample_rate_hz": 16000, "format": "s16le", "classes": ["angry", "joy"]})
    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0), ListenConfig())
    with daemon_thread(daemon) as running:
        expect_error(running.url, start, code=CLOSE_POLICY, contains="['joy'] are not classes of this model")


def test_realtime_limiter_allows_the_factor_and_a_burst():
    now = [0.0]
    limiter = RealtimeLimiter(2.0, 1.0, clock=lambda: now[0])
    limiter.admit(0.1)  # the first message: counted as recorded before it came (0.05 s at 2x)
    now[0] = 1.0
    limiter.admit(3.0)  # 3.1 s of audio in 1.05 s: 2x + the 1 s burst
    with pytest.raises(ListenError, match="faster than 2x"):
        limiter.admit(0.1)


def test_a_client_may_open_with_a_buffered_chunk_then_stream_in_real_time():
    """Before, the clock started at the first message: a 2 s opening chunk at exactly real time was refused."""
    now = [0.0]
    limiter = RealtimeLimiter(2.0, 1.0, clock=lambda: now[0])
    limiter.admit(2.0)
    for _ in range(100):  # then 100 ms every 100 ms, for 10 s
        now[0] += 0.1
        limiter.admit(0.1)
    with pytest.raises(ListenError, match="faster than 2x"):  # but not twice the audio at once
        limiter.admit(14.0)
    with pytest.raises(ListenError, match="faster than 2x"):  # and an opening chunk is bounded: 5 s + the burst
        RealtimeLimiter(2.0, 1.0, clock=lambda: 0.0).admit(6.5)
    RealtimeLimiter(2.0, 1.0, clock=lambda: 0.0).admit(6.0)


def test_broadcast_listeners_tags_stream_scores_for_subscribers(model, daemon_thread):
    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0),
                           ListenConfig(max_realtime_factor=1000, realtime_burst_s=60, workers=1, broadcast=True))
    y = load(CLIP, 16000)[:, None]
    with daemon_thread(daemon) as running, connect(running.url) as sub:
        assert json.loads(sub.recv(timeout=10))["type"] == "hello"
        _, messages, code = run_stream(running.url, y, 16000, "s16le", 1600, start_extra={"stream_id": "room-2"})
        mine = [m for m in messages if m["type"] == "scores"]
        seen = []
        while len(seen) < len(mine):
            m = json.loads(sub.recv(timeout=10))
            if m["type"] == "scores":
                seen.append(m)
        # Broadcast subscribers were told the daemon's labels: a stream may not bring other classes to them.
        expect_error(running.url, json.dumps({"type": "start", "sample_rate_hz": 16000, "format": "s16le",
                                              "classes": ["angry", "sad"]}),
                     code=CLOSE_POLICY, contains="classes must be the daemon's")
    assert code == 1000
    assert [m["stream_id"] for m in seen] == ["room-2"] * len(mine)
    assert [m["probabilities"] for m in seen] == [m["probabilities"] for m in mine]


def test_no_listen_refuses_the_path(model, daemon_thread):
    from websockets.exceptions import InvalidStatus

    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0), None)
    with daemon_thread(daemon) as running:
        with pytest.raises(InvalidStatus) as info:
            connect(f"{running.url}/listen")
        assert info.value.response.status_code == 404


def test_tls_serves_wss_and_https_with_the_given_certificate(model, daemon_thread, tmp_path):
    import ssl
    import subprocess
    import urllib.request

    from websockets.exceptions import InvalidMessage

    if subprocess.run(["which", "openssl"], capture_output=True).returncode:
        unavailable("openssl not installed (scripts/test.sh installs it as root)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(),
                           ServerConfig(port=0, certfile=str(cert), keyfile=str(key)),
                           ListenConfig(max_realtime_factor=1000, realtime_burst_s=60, workers=1))
    trust = ssl.create_default_context(cafile=str(cert))
    y = load(CLIP, 16000)[:, None]
    with daemon_thread(daemon) as running:
        port = running.daemon.port
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=trust, timeout=10) as r:
            assert json.loads(r.read())["listen"]["streams"] == 0
        with connect(f"wss://127.0.0.1:{port}/listen", ssl=trust) as ws:
            ws.send(START)
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
            ws.send(as_bytes(y, "s16le"))
            ws.send(json.dumps({"type": "stop"}))
            got = []
            with pytest.raises(ConnectionClosed):
                while True:
                    got.append(json.loads(ws.recv(timeout=20)))
        assert got[-1]["type"] == "end" and got[-1]["windows"] == len(offline(model, heard(y, "s16le"), 16000))
        with pytest.raises((OSError, InvalidMessage, TimeoutError)):  # plain ws:// to a TLS port does not get in
            connect(f"ws://127.0.0.1:{port}/listen", open_timeout=5)
        # emostream-subscribe: an untrusted certificate is one line, never a retry loop; --cafile trusts it
        with pytest.raises(SubscribeError, match="not trusted.*--cafile"):  # before: retried for ever
            asyncio.run(asyncio.wait_for(subscribe(f"wss://127.0.0.1:{port}"), 30))
        heard_hello = io.StringIO()
        with pytest.raises(TimeoutError):  # connected and listening (NoSource sends no scores)
            asyncio.run(asyncio.wait_for(subscribe(f"wss://127.0.0.1:{port}", out=heard_hello, cafile=str(cert)), 5))
        assert heard_hello.getvalue().startswith("# ")  # the hello line
        with pytest.raises(SubscribeError, match="wss://"):
            asyncio.run(subscribe(f"ws://127.0.0.1:{port}", cafile=str(cert)))
        assert_scheme_hinted(f"ws://127.0.0.1:{port}", f"use wss://127.0.0.1:{port}")
    with pytest.raises(ValueError, match="both --certfile and --keyfile"):
        ServerConfig(certfile=str(cert)).check()


def assert_scheme_hinted(url, hint):
    """The subscriber keeps retrying (a restarting daemon fails alike) but says once which scheme would work."""
    import logging

    from emostream.stream import subscriber

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    subscriber.logger.addHandler(handler)
    try:
        with pytest.raises(TimeoutError):
            asyncio.run(asyncio.wait_for(subscribe(url), 8))
    finally:
        subscriber.logger.removeHandler(handler)
    hints = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(hints) == 1 and hint in hints[0], hints


def test_a_wss_url_to_a_plain_daemon_is_hinted_towards_ws(model, daemon_thread):
    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0), None)
    with daemon_thread(daemon) as running:
        port = running.daemon.port
        assert_scheme_hinted(f"wss://127.0.0.1:{port}", f"use ws://127.0.0.1:{port}")


def test_an_analysis_turn_is_as_many_windows_as_the_default_hop_makes_not_as_many_seconds():
    """Before, every turn took 0.5 s of audio: a stream at hop 0.05 s made five model runs for another's one."""
    from emostream.stream.listen import slice_frames

    assert slice_frames(0.5, 16000, 0.25) == 8000  # the default hop: 0.5 s, two windows
    assert slice_frames(0.5, 16000, 0.05) == 1600  # five times the windows per second of audio: a fifth of it
    assert slice_frames(0.5, 48000, 1.0) == 24000  # a longer hop takes no more audio per turn
    assert slice_frames(0.05, 8000, 0.0233) >= 1


def test_a_stream_sending_a_flood_does_not_delay_a_real_time_one(model, daemon_thread):
    """One client sends 120 s of audio at once (allowed here); the analysis pool takes it 0.5 s per turn,
    so the real-time client's windows keep leaving on cadence while the flood is being worked off."""
    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0),
                           ListenConfig(max_realtime_factor=1000, realtime_burst_s=200, max_pending_s=180, workers=1))
    y = load(CLIP, 16000)
    steady = np.tile(y, 2)[: 16000 * 7, None]
    flood = np.tile(y, 32)[: 16000 * 120, None]
    with daemon_thread(daemon) as running:
        url = running.url
        t, result = real_time_stream_in_background(url, steady)
        time.sleep(2.5)  # the steady stream's first window is out
        flood_started = time.monotonic()
        _, flooded, code = run_stream(url, flood, 16000, "s16le", 16000 * 10)  # twelve 10 s messages
        t.join(60)
    assert code == 1000 and flooded[-1]["type"] == "end" and flooded[-1]["windows"] >= 460
    hello, messages, steady_code = result["steady"]
    assert steady_code == 1000
    scores = [m for m in messages if m["type"] == "scores"]
    during = [m for m in scores if flood_started < m["_t"] < flooded[-1]["_t"]]
    assert len(during) >= 2, (len(during), flooded[-1]["_t"] - flood_started)  # the flood overlapped them
    gaps = np.diff([m["_t"] for m in scores])
    # Taken whole, the flood would hold the steady stream's next window for all of its analysis (seconds);
    # sliced, a window waits at most for one 0.5 s slice of it, plus scheduling on a loaded machine.
    assert gaps.max() < hello["hop_s"] + 0.1 + 0.35, (gaps.max(), flooded[-1]["_t"] - flood_started)


@pytest.mark.parametrize("flags", [["--max-realtime-factor", "0.5"], ["--max-streams", "0"],
                                   ["--max-listen-message-bytes", "100"], ["--certfile", "cert.pem"],
                                   ["--listen-workers", "-1"], ["--no-listen"]])
def test_daemon_flags_out_of_range_are_one_line_errors(flags, caplog, capsys):
    from emostream.stream.daemon import main as daemon_main

    try:
        code = daemon_main(["--listen-only", "--port", "0", *flags])
    except SystemExit as exited:  # argparse's own one-line range error (flag: must be ≥ …)
        code = exited.code
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err[-1].startswith("emostream-daemon: error: argument ")
        return
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]


def test_a_client_that_never_reads_is_cut_off_and_does_not_delay_another(model, daemon_thread, caplog):
    """A client that sends 30 s of audio at once (windows every 0.1 s) and never reads its socket: its results
    pile up in its own queue until 32 are unsent, then it is dropped; a real-time stream beside it keeps its
    cadence."""
    import logging
    import socket

    caplog.set_level(logging.INFO, logger="emostream.stream.listen")
    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0),
                           ListenConfig(max_realtime_factor=1000, realtime_burst_s=600, max_pending_s=600,
                                        max_unsent_messages=32, send_buffer_bytes=4096, workers=1))
    y = load(CLIP, 16000)
    steady = np.tile(y, 2)[: 16000 * 6, None]
    with daemon_thread(daemon) as running:
        url = running.url
        t, result = real_time_stream_in_background(url, steady)
        time.sleep(1.0)
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: no window autotuning
        raw.connect(("127.0.0.1", running.daemon.port))
        stuck = connect(f"{url}/listen", sock=raw, max_queue=1)  # stops reading once one message waits
        stuck.send(json.dumps({"type": "start", "sample_rate_hz": 16000, "format": "s16le", "hop_s": 0.1}))
        pcm = as_bytes(np.tile(y, 8)[: 16000 * 30, None], "s16le")
        deadline, cut_off = time.monotonic() + 30, False
        try:
            for k in range(3):
                stuck.send(pcm[k * 320000 : (k + 1) * 320000])
            while time.monotonic() < deadline:  # small frames until the daemon drops the connection
                stuck.send(pcm[:3200])
                time.sleep(0.2)
        except (ConnectionClosed, OSError):
            cut_off = True
        assert cut_off
        assert "client is not reading its results (32 unsent) (close 1008)" in caplog.text
        t.join(60)
        deadline = time.monotonic() + 5  # the dropped stream's handler ends once its transport is gone
        while running.daemon.health()["listen"]["streams"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.daemon.health()["listen"]["streams"] == 0
        assert running.daemon.health()["listen"]["accepted"] == 2
    hello, messages, code = result["steady"]
    assert code == 1000
    gaps = np.diff([m["_t"] for m in messages if m["type"] == "scores"])
    assert gaps.max() < hello["hop_s"] + 0.1 + 0.35, gaps.max()


def test_listen_takes_the_token_and_origin_checks_of_the_broadcast(model, daemon_thread):
    from websockets.exceptions import InvalidStatus

    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0, token="s3cret"))
    with daemon_thread(daemon) as running:
        for url, headers, status in ((f"{running.url}/listen", None, 401),
                                     (f"{running.url}/listen?token=s3cret", {"Origin": "https://elsewhere.example"},
                                      403)):
            with pytest.raises(InvalidStatus) as info:
                connect(url, additional_headers=headers)
            assert info.value.response.status_code == status
        with connect(f"{running.url}/listen?token=s3cret") as ws:
            ws.send(START)
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"


def _utterances(messages):
    return [(round(m["start_s"], 3), round(m["end_s"], 3), m["windows"], m["short"]) for m in messages
            if m["type"] == "utterance"]


@pytest.mark.parametrize("parts", [
    [CLIP, 3.0, CLIP_2, 3.0, CLIP],  # three utterances apart: each sent once, the last one too
    [(0.0, 1.0)],  # shorter than one window: one short utterance, as the daemon and the API give
])
def test_listen_sends_the_pipelines_utterances_each_once(model, daemon_thread, parts):
    rate_hz = 16000
    pieces = [np.zeros(int(p * rate_hz), np.float32) if isinstance(p, float) else load(p, rate_hz) for p in parts]
    frames = heard(np.concatenate(pieces)[:, None], "s16le")
    pipeline = EmotionPipeline(model, PipelineConfig(), rate_hz, 1)
    want = _utterances(pipeline.process(frames) + pipeline.finish())
    assert want and len(want) == (3 if len(parts) > 1 else 1)
    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0),
                           ListenConfig(max_realtime_factor=1000, realtime_burst_s=60))
    with daemon_thread(daemon) as running:
        _, messages, code = run_stream(running.url, frames, rate_hz, "s16le", 1600, pace_s=0.02)  # within max_pending_s
    assert code == 1000
    assert _utterances(messages) == want
    assert messages[-1]["type"] == "end" and messages[-1]["utterances"] == len(want)


def test_a_stream_without_an_id_never_gets_one_a_client_chose(model, daemon_thread):
    """The automatic ids ``s1``, ``s2`` … once collided with a client's own ``s2``: the second client, which had
    asked for no id at all, was refused as 'already streaming'."""
    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0), ListenConfig())
    with daemon_thread(daemon) as running, connect(f"{running.url}/listen") as named, \
            connect(f"{running.url}/listen") as unnamed:
        named.send(json.dumps({**json.loads(START), "stream_id": "s2"}))
        assert json.loads(named.recv(timeout=10))["stream_id"] == "s2"
        unnamed.send(START)
        hello = json.loads(unnamed.recv(timeout=10))
        assert hello["type"] == "hello" and hello["stream_id"] not in ("s2", "")


@pytest.mark.parametrize("stream_id", ["call:7", "a b", "x" * 65, "", "cam1\n", "ok.id-1_2"])
def test_listen_and_the_brokers_take_the_same_stream_ids(stream_id):
    """Two patterns once disagreed on ':' (/listen took it, --stream-id did not)."""
    from emostream.stream.sinks import PublishError, check_stream_id

    start = {"type": "start", "sample_rate_hz": 16000, "format": "s16le", "stream_id": stream_id}
    try:
        check_stream_id(stream_id)
        brokers_take_it = True
    except PublishError:
        brokers_take_it = False
    try:
        parse_start(start, PipelineConfig(), ListenConfig(), "s1")
        listen_takes_it = True
    except ListenError:
        listen_takes_it = False
    assert listen_takes_it == brokers_take_it == (stream_id == "ok.id-1_2")
