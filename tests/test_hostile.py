"""Issue 16: what a hostile client or a careless user found, each case as the behaviour that now holds.

Rebinding (Host allow-list), option ranges (``--queue 0``, ``--hop 1e9``, ``--silence-dbfs nan``),
strict JSON on every send path, request floods (1008), the token from a file or the environment and
never in the logs, ``/healthz`` and ``/favicon.ico``, the subscriber's one-line errors, a stray byte on
s16le stdin, and the MP3 decoder's chatter.
"""

from __future__ import annotations

import io
import json
import logging
import math
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from needs import unavailable
from synth import SR, speechlike
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from emostream import messages
from emostream.inference.model import EmotionModel
from emostream.inference.pipeline import PipelineConfig
from emostream.stream.broadcast import ScoreBroadcaster
from emostream.stream.daemon import EmotionDaemon, ServerConfig, build_parser, resolve_token
from emostream.stream.daemon import main as daemon_main
from emostream.stream.guard import HostGuard, TokenBucket
from emostream.stream.sources import FileSource, StdinSource


@pytest.fixture(scope="module")
def model(tiny_onnx):
    return EmotionModel(tiny_onnx)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    import soundfile as sf

    path = tmp_path_factory.mktemp("hostile") / "a.wav"
    sf.write(path, speechlike(4.0, seed=3), SR)
    return path


@pytest.fixture
def make(model, audio):
    def _make(pipeline=PipelineConfig(hop_s=0.1), **server):
        return EmotionDaemon(model, FileSource(audio, realtime=True, loop=True), pipeline,
                             ServerConfig(port=0, **server))

    return _make


def strict(raw: str) -> dict:
    """JSON as a strict parser (a browser's JSON.parse) reads it: NaN and Infinity are errors."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(raw, parse_constant=refuse)


def raw_http(port: int, path: str = "/", headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 request with exactly these headers (Host included): (status, headers, body)."""
    headers = {"Connection": "close", **(headers or {})}
    lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall("\r\n".join(lines).encode())
        data = b""
        while chunk := s.recv(65536):  # until the server closes, or a 101's headers are in
            data += chunk
            if data.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in data:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), parsed, body


UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


# 1. DNS rebinding ---------------------------------------------------------------------------------

def test_a_rebound_host_name_is_refused_on_http_and_upgrade(make, daemon_thread):
    with daemon_thread(make(allowed_hosts=("emotion.lan",))) as running:
        port = running.daemon.port
        evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        assert raw_http(port, "/", {**evil, **UPGRADE})[0] == 421  # before: 101 and live scores
        assert raw_http(port, "/", evil)[0] == 421  # the dashboard page
        assert raw_http(port, "/healthz", evil)[0] == 421
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"emotion.lan:{port}"):
            assert raw_http(port, "/", {"Host": host, **UPGRADE})[0] == 101, host
        assert raw_http(port, "/", {**UPGRADE})[0] in (400, 421)  # no Host at all


def test_host_guard_names():
    guard = HostGuard("127.0.0.1", ("dash.example",))
    assert guard.allows("localhost:8765") and guard.allows("LOCALHOST.") and guard.allows("app.localhost")
    assert guard.allows("192.168.1.5:8765") and guard.allows("[fe80::1]:80") and guard.allows("dash.example")
    assert not guard.allows("evil.example:8765") and not guard.allows("") and not guard.allows(None)
    assert not guard.allows("127.0.0.1.evil.example")


# 2 and 4. Every option has a range ---------------------------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["--queue", "0"], "--queue"), (["--queue", "-5"], "--queue"), (["--port", "99999"], "--port"),
    (["--hop", "1e9"], "--hop"), (["--hop", "nan"], "--hop"), (["--hop", "-1"], "--hop"),
    (["--threads", "-3"], "--threads"), (["--max-subscribers", "-1"], "--max-subscribers"),
    (["--silence-dbfs", "nan"], "--silence-dbfs"), (["--smoothing", "1"], "--smoothing"),
    (["--rate", "0"], "--rate"), (["--channels", "1000"], "--channels"), (["--port", "80.5"], "--port"),
    (["--vad-threshold", "inf"], "--vad-threshold"), (["--requests-per-s", "0"], "--requests-per-s"),
])
def test_out_of_range_options_are_one_line_errors(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}:" in err and "Traceback" not in err


def test_configs_refuse_what_the_command_line_refuses():
    with pytest.raises(ValueError, match="queue_messages"):
        ServerConfig(queue_messages=0)
    with pytest.raises(ValueError, match="max_queue"):
        ScoreBroadcaster(max_queue=0)  # before: IndexError on every window for a stuck client
    for bad in ({"hop_s": 1e9}, {"hop_s": math.nan}, {"silence_dbfs": math.nan}, {"smoothing": -0.1}):
        with pytest.raises(ValueError):
            PipelineConfig(**bad)
    with pytest.raises(ValueError, match="port"):
        ServerConfig(port=99999)


# 3. Strict JSON everywhere, non-finite values kept out at the source ------------------------------

def test_huge_f32le_samples_give_strict_json_with_finite_levels(model, daemon_thread):
    garbage = np.full(int(3.5 * 16000), 1e30, np.float32)
    garbage[::7] = -1e30
    source = StdinSource(16000, 1, "f32le", stream=io.BytesIO(garbage.tobytes()))
    daemon = EmotionDaemon(model, source, PipelineConfig(hop_s=0.25),
                           ServerConfig(port=0, wait_for_subscribers=1))
    with daemon_thread(daemon) as running, connect(running.url) as ws:
        hello = strict(ws.recv(timeout=10))
        scores = []
        try:
            while True:
                scores.append(strict(ws.recv(timeout=20)))  # before: "level_dbfs": Infinity
        except ConnectionClosed:
            pass
    assert hello["type"] == "hello" and scores
    scores = [m for m in scores if m["type"] == "scores"]  # utterance and end messages follow the windows
    assert scores
    for m in scores:
        assert math.isfinite(m["level_dbfs"]) and m["level_dbfs"] <= 200
        if m["probabilities"] is not None:
            assert all(math.isfinite(v) for v in m["probabilities"].values())
    assert daemon.pipeline.clipped_samples > 0


def test_replies_and_hello_are_strict_json(make, daemon_thread):
    with daemon_thread(make()) as running, connect(running.url) as ws:
        strict(ws.recv(timeout=10))
        ws.send(json.dumps({"type": "status"}))
        while (m := strict(ws.recv(timeout=10)))["type"] == "scores":
            pass
        assert m["type"] == "status" and m["status"] == "ok"
    assert messages.encode({"x": math.inf, "y": [math.nan]}) == '{"x":null,"y":[null]}'


# 5. Request floods -------------------------------------------------------------------------------

def test_a_flooding_client_is_closed_and_the_others_keep_their_cadence(make, daemon_thread):
    with daemon_thread(make(requests_per_s=10, request_burst=20)) as running:
        with connect(running.url) as watcher, connect(running.url) as flooder:
            watcher.recv(timeout=10), flooder.recv(timeout=10)
            sent = 0
            try:
                for _ in range(2000):
                    flooder.send('{"type":"status"}')
                    sent += 1
            except ConnectionClosed:
                pass
            try:
                while True:
                    flooder.recv(timeout=10)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
            assert code == 1008, f"flooder not closed after {sent} requests"  # before: all answered
            arrivals = []
            deadline = time.monotonic() + 10
            while len(arrivals) < 5 and time.monotonic() < deadline:
                if json.loads(watcher.recv(timeout=10))["type"] == "scores":
                    arrivals.append(time.monotonic())
            assert len(arrivals) == 5  # the well-behaved subscriber is still served
        # A client within its budget is never closed.
        with connect(running.url) as polite:
            polite.recv(timeout=10)
            for _ in range(5):
                polite.send('{"type":"ping"}')
            pongs = 0
            while pongs < 5:
                pongs += json.loads(polite.recv(timeout=10))["type"] == "pong"


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucket(rate_per_s=2, burst=3, clock=lambda: now[0])
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    now[0] += 1.0
    assert [bucket.allow() for _ in range(3)] == [True, True, False]


# 6. Secrets: token from a file or the environment, never logged; /healthz; /favicon.ico ------------

def test_token_from_file_or_environment(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    assert resolve_token(None, secret, {}) == "from-file"
    assert resolve_token(None, None, {"EMOSTREAM_TOKEN": "from-env"}) == "from-env"
    assert resolve_token("argv", secret, {"EMOSTREAM_TOKEN": "x"}) == "argv"
    assert resolve_token(None, None, {}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        resolve_token(None, tmp_path / "empty", {})
    with pytest.raises(ValueError, match="cannot read"):
        resolve_token(None, tmp_path / "absent", {})


def test_the_token_is_never_logged_even_verbose(tiny_onnx, audio, monkeypatch, caplog):
    secret = "Zq9-never-in-logs"
    monkeypatch.setenv("EMOSTREAM_TOKEN", secret)
    caplog.set_level(logging.DEBUG)
    created = []
    original_init = EmotionDaemon.__init__

    def spy(self, *args, **kwargs):  # the daemon main() builds, so the test can stop it
        original_init(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(EmotionDaemon, "__init__", spy)
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("code", daemon_main(
        ["--model", str(tiny_onnx), "--file", str(audio), "--loop", "--port", "0", "--no-vad", "-v"])), daemon=True)
    runner.start()
    deadline = time.monotonic() + 30
    while not (created and created[0].port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert created and created[0].port, "daemon did not start"
    url = f"ws://127.0.0.1:{created[0].port}"
    try:
        with pytest.raises(InvalidStatus) as refused:
            connect(url, open_timeout=10).close()
        assert refused.value.response.status_code == 401  # the environment's token is required
        with connect(f"{url}/?token={secret}") as ws:
            assert strict(ws.recv(timeout=10))["type"] == "hello"
        with connect(url, additional_headers={"Authorization": f"Bearer {secret}"}) as ws:
            ws.recv(timeout=10)
    finally:
        created[0].request_stop()
        runner.join(30)
    assert result.get("code") == 0
    assert secret not in caplog.text  # before: three times with -v


def test_healthz_is_json_and_its_details_need_the_token(make, daemon_thread):
    with daemon_thread(make(token="s3cret")) as running:
        base = f"http://127.0.0.1:{running.daemon.port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
            assert r.headers["Content-Type"] == "application/json"  # before: text/plain
            assert strict(r.read().decode()) == {"status": "ok"}  # liveness only: no file name
        with urllib.request.urlopen(f"{base}/healthz?token=s3cret", timeout=5) as r:
            details = strict(r.read().decode())
        assert details["status"] == "ok" and "source" in details and "subscribers" in details
        status, headers, _ = raw_http(running.daemon.port, "/favicon.ico", {"Host": f"127.0.0.1:{running.daemon.port}"})
        assert status in (204, 404)  # before: 426, a console error on every dashboard visit


# 7. The subscriber's one-line errors -------------------------------------------------------------

def test_subscriber_errors_are_one_line(make, daemon_thread, caplog, capsys):
    from emostream.stream.subscriber import main as subscribe_main

    with daemon_thread(make(token="s3cret")) as running:
        assert subscribe_main([running.url, "--count", "1"]) == 2
        assert "token" in caplog.records[-1].getMessage() and "401" in caplog.records[-1].getMessage()
        port = running.daemon.port
        assert subscribe_main([f"http://127.0.0.1:{port}", "--count", "1"]) == 2
        assert f"use ws://127.0.0.1:{port}" in caplog.records[-1].getMessage()
    assert "Traceback" not in capsys.readouterr().err and "Traceback" not in caplog.text


def test_subscriber_prints_windows_without_speech():
    from emostream.stream.subscriber import format_line

    line = format_line({"end_s": 2.0, "silence": False, "speech": False, "probabilities": None, "top": None,
                        "top_p": None, "level_dbfs": -31.0}, ["a", "b"])
    assert "(no speech)" in line and "-31.0 dBFS" in line


# 9. A stray byte on s16le stdin ------------------------------------------------------------------

def test_a_stray_byte_on_s16le_stdin_is_reported(caplog):
    from emostream.stream.ring_buffer import RingBuffer

    pcm = (speechlike(3.0, seed=5) * 0.5 * 32767).astype("<i2").tobytes()
    for data, warned in ((pcm, False), (b"\x00" + pcm, True)):
        caplog.clear()
        source = StdinSource(SR, 1, "s16le", stream=io.BytesIO(data))
        source.run(RingBuffer(SR * 4, 1), threading.Event())
        assert (source.misaligned_blocks > 0) is warned
        assert any("one byte off" in r.getMessage() for r in caplog.records) is warned


# 10. MP3 decoder chatter -------------------------------------------------------------------------

def test_mp3_decoder_warnings_stay_out_of_the_terminal(tmp_path, capfd, caplog, recognizer):
    import soundfile as sf

    from emostream.stream.ring_buffer import RingBuffer

    if "MP3" not in sf.available_formats():
        unavailable("this libsndfile has no MP3 support (soundfile's wheel bundles one that has)")
    clean = tmp_path / "clean.mp3"
    sf.write(clean, speechlike(3.0, seed=6), SR, format="MP3")
    data = bytearray(clean.read_bytes())
    for i in np.random.default_rng(1).integers(2000, len(data) - 100, 40):
        data[i] ^= 0xFF  # damaged frames: libmpg123 complains on fd 2 and conceals them
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(bytes(data))
    caplog.set_level(logging.INFO)
    source = FileSource(damaged, realtime=False)
    ring = RingBuffer(SR * 10, 1)
    source.run(ring, threading.Event())
    err = capfd.readouterr().err
    assert ring.available > 2 * SR  # it decodes fine …
    assert "mpg123" not in err and "part2_3_length" not in err and "resync" not in err  # … quietly
    assert any("MP3 decoder reported" in r.getMessage() for r in caplog.records)
    from emostream.features import load_audio

    assert load_audio(damaged).size > 2 * SR  # the offline path (evaluation) is quiet too
    assert "mpg123" not in capfd.readouterr().err
    disguised = tmp_path / "damaged.audio"  # an MP3 by its content, not its name
    disguised.write_bytes(bytes(data))
    for path in (damaged, disguised):  # file scoring (emostream-score, the API): before, the chatter got through
        assert recognizer.score_file(path).summary.duration_s > 2
        assert "mpg123" not in capfd.readouterr().err


def test_stderr_still_reaches_the_terminal_while_an_mp3_is_read(capfd):
    import os

    from emostream.decoder_noise import quiet_decoder

    with quiet_decoder("x.mp3"):
        os.write(2, b"[src/libmpg123/layer3.c:1] error: part2_3_length too large\nour own line\n")
    assert capfd.readouterr().err == "our own line\n"


# 8. Voice-activity gate --------------------------------------------------------------------------

def pink_noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    from emostream.bench.vadcheck import coloured_noise

    return coloured_noise(seconds, 1.0, dbfs, seed)


def run_pipeline(model, y, config):
    from emostream.inference.pipeline import EmotionPipeline

    pipeline = EmotionPipeline(model, config, SR)
    out = []
    for i in range(0, y.size, 2048):
        out += pipeline.process(y[i:i + 2048, None])
    return out + pipeline.process(np.zeros((0, 1), np.float32), last=True)


def test_pink_noise_at_minus_44_dbfs_gets_no_label(model):
    from emostream.inference.vad import VadConfig

    y = pink_noise(6.0, -44)
    level_only = run_pipeline(model, y, PipelineConfig())
    assert level_only and all(m["top"] is not None for m in level_only)  # the level gate alone labels noise
    gated = run_pipeline(model, y, PipelineConfig(vad=VadConfig()))
    assert len(gated) == len(level_only)
    for m in gated:
        assert m["speech"] is False and m["silence"] is False
        assert m["top"] is None and m["probabilities"] is None and m["top_p"] is None
        assert set(messages.SCHEMA["scores"]) <= set(m)


def test_real_speech_gets_labelled_windows(model, ravdess_dir):
    from emostream.features import load_audio
    from emostream.inference.scoring import embed_in_noise_floor
    from emostream.inference.vad import VadConfig

    clip = sorted((ravdess_dir / "Audio_Speech_Actors_01-24" / "Actor_01").glob("03-01-05-*"))[0]  # angry
    y = embed_in_noise_floor(load_audio(clip), seed=1)
    gated = run_pipeline(model, y, PipelineConfig(vad=VadConfig()))
    speech = [m for m in gated if m["speech"]]
    assert len(speech) >= len(gated) // 2 and all(m["top"] in model.labels for m in speech)


@pytest.mark.parametrize("rate", [16000, SR, 48000])
def test_a_stream_shorter_than_a_window_passes_the_voice_gate_only_with_speech(model, rate):
    """1.5 s of loud pink noise: the level gate alone gives it a short utterance; the voice gate, none. 1.5 s
    of real speech (the embedded sample) gets its short utterance either way — at any input rate (the
    resamplers' tails are flushed before the gate looks)."""
    import soundfile as sf
    import soxr

    from emostream.inference.pipeline import EmotionPipeline
    from emostream.inference.vad import VadConfig
    from emostream.paths import DEFAULT_SAMPLE

    def utterances(y, config):
        pipeline = EmotionPipeline(model, config, rate)
        out = pipeline.process(soxr.resample(y, SR, rate)[:, None]) + pipeline.finish()
        assert not [m for m in out if m["type"] == "scores"]  # never a whole window
        return [m for m in out if m["type"] == "utterance"]

    noise = pink_noise(1.5, -30)
    assert [m["short"] for m in utterances(noise, PipelineConfig())] == [True]
    assert utterances(noise, PipelineConfig(vad=VadConfig())) == []
    speech, sr = sf.read(DEFAULT_SAMPLE, dtype="float32", frames=int(1.5 * SR))
    assert sr == SR
    voiced = utterances(speech, PipelineConfig(vad=VadConfig()))
    assert [m["short"] for m in voiced] == [True] and voiced[0]["top"] in model.labels


def test_the_hello_carries_the_voice_gate(model, audio):
    from emostream.inference.vad import VadConfig

    daemon = EmotionDaemon(model, FileSource(audio), PipelineConfig(vad=VadConfig(threshold=0.6)), ServerConfig(port=0))
    assert daemon.hello["vad"] == {"backend": "silero", "threshold": 0.6, "min_speech_s": 0.25}
    assert set(messages.SCHEMA["hello"]) <= set(daemon.hello)
    args = build_parser().parse_args([])
    assert args.no_vad is False and args.vad_threshold == 0.5  # on by default in the daemon


def test_vad_config_ranges(model):
    from emostream.inference.pipeline import EmotionPipeline
    from emostream.inference.vad import VadConfig

    for bad in ({"threshold": 0.0}, {"threshold": 1.0}, {"min_speech_s": -1}, {"backend": "torch"}):
        with pytest.raises(ValueError):
            VadConfig(**bad)
    with pytest.raises(ValueError, match="longer than a window"):
        EmotionPipeline(model, PipelineConfig(vad=VadConfig(min_speech_s=5.0)), SR)
