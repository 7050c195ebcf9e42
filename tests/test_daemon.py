"""The daemon on loopback: file source → daemon → real websockets clients."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from synth import SR, speechlike
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from emostream.bench.fanout import start_daemon
from emostream.features import compute_log_mel_spect
from emostream.inference.model import EmotionModel
from emostream.inference.pipeline import PipelineConfig
from emostream.stream.daemon import EmotionDaemon, ServerConfig, build_parser, unused_source_flags
from emostream.stream.daemon import main as daemon_main
from emostream.stream.sources import FileSource, MicrophoneSource, SourceError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model(tiny_onnx):
    return EmotionModel(tiny_onnx)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    import soundfile as sf

    y = np.concatenate([speechlike(5.0, seed=21), np.zeros(SR, np.float32), speechlike(3.0, seed=22)])
    path = tmp_path_factory.mktemp("audio") / "clip.wav"
    sf.write(path, y, SR, subtype="FLOAT")
    return path, y


def make_daemon(model, path, realtime=False, loop=False, **server):
    server.setdefault("port", 0)
    return EmotionDaemon(model, FileSource(path, realtime=realtime, loop=loop),
                         PipelineConfig(silence_dbfs=-60), ServerConfig(**server))


def receive_all(ws, timeout=20, kinds=("scores",)):
    """Messages until the daemon closes the connection; returns (hello, messages of ``kinds``, close code)."""
    hello = json.loads(ws.recv(timeout=timeout))
    scores = []
    try:
        while True:
            m = json.loads(ws.recv(timeout=timeout))
            if m["type"] in kinds:
                scores.append(m)
    except ConnectionClosed as closed:
        return hello, scores, closed.rcvd.code if closed.rcvd else None


def next_scores(ws, timeout=10):
    """The next window's scores, past any utterance or status message."""
    while (m := json.loads(ws.recv(timeout=timeout)))["type"] != "scores":
        pass
    return m


def test_scores_over_websocket_equal_offline_onnxruntime_on_the_same_samples(model, clip, daemon_thread):
    path, y = clip
    with daemon_thread(make_daemon(model, path, wait_for_subscribers=1)) as running, connect(running.url) as ws:
        hello, scores, code = receive_all(ws)
    assert running.code == 0 and code == 1000
    assert hello["type"] == "hello" and hello["labels"] == model.labels
    assert hello["sample_rate_hz"] == SR and hello["window_frames"] == 100
    assert hello["hop_s"] == pytest.approx(11 * 512 / SR, abs=1e-5)
    expected = (len(y) - 50688) // (11 * 512) + 1
    assert [m["seq"] for m in scores] == list(range(expected))
    voiced = [m for m in scores if not m["silence"]]
    assert len(voiced) >= expected - 4
    for m in voiced:
        start, end = round(m["start_s"] * SR), round(m["end_s"] * SR)
        offline = model.predict(compute_log_mel_spect(y[start:end]))[0]
        np.testing.assert_allclose([m["probabilities"][k] for k in model.labels], offline, atol=1e-5)
        assert {"wall_time", "features_ms", "inference_ms", "top", "top_p", "dropped", "level_dbfs"} <= set(m)


def test_a_stuck_subscriber_does_not_delay_a_fast_one(model, tmp_path, daemon_thread):
    """Real-time audio at one window per STFT hop (43/s); one client stops reading after its first message.

    The 32-message queue (0.75 s) lets the reader fall behind on a loaded machine without losing windows;
    the stuck client still overflows it within a second.
    """
    import socket

    import soundfile as sf

    path = tmp_path / "speech.wav"
    y = speechlike(8.0, seed=5)
    sf.write(path, y, SR)
    daemon = EmotionDaemon(model, FileSource(path, realtime=True), PipelineConfig(hop_s=0.0, silence_dbfs=-120),
                           ServerConfig(port=0, queue_messages=32, wait_for_subscribers=2, drain_on_exit_s=0.5,
                                        send_buffer_bytes=4096, write_limit_bytes=4096))
    with daemon_thread(daemon) as running:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # fills after a few messages
        sock.connect(("127.0.0.1", running.daemon.port))
        stuck = connect(running.url, sock=sock, max_queue=1)
        latencies_ms = []
        with connect(running.url) as fast:
            hello = json.loads(fast.recv(timeout=10))
            scores = []
            try:
                while True:
                    if (m := json.loads(fast.recv(timeout=20)))["type"] == "scores":
                        scores.append(m)
                        latencies_ms.append((time.time() - m["wall_time"]) * 1e3)
            except ConnectionClosed:
                pass
        stuck.close()
    assert hello["type"] == "hello"
    expected = (len(y) - 50688) // 512 + 1
    assert [m["seq"] for m in scores] == list(range(expected))  # every window, in order
    assert all(m["dropped"] == 0 for m in scores)
    assert np.percentile(latencies_ms, 95) < 250
    assert daemon.broadcaster.dropped_total > 0  # the stuck one lost windows instead of holding others up
    assert running.code == 0


def test_a_client_that_vanishes_mid_stream_is_cleaned_up(model, clip, daemon_thread):
    path, _ = clip
    with daemon_thread(make_daemon(model, path, realtime=True, loop=True)) as running:
        with connect(running.url) as steady:
            vanishing = connect(running.url)
            vanishing.recv(timeout=10)
            json.loads(vanishing.recv(timeout=10))
            assert len(running.daemon.broadcaster.subscribers) == 2
            vanishing.socket.shutdown(2)  # no close frame: the peer just disappears
            vanishing.socket.close()
            deadline = time.time() + 5
            while len(running.daemon.broadcaster.subscribers) > 1 and time.time() < deadline:
                time.sleep(0.05)
            assert len(running.daemon.broadcaster.subscribers) == 1
            steady.recv(timeout=10)  # hello
            before = next_scores(steady)["seq"]
            after = next_scores(steady)["seq"]
            assert after == before + 1  # the stream goes on for the others


def test_malformed_client_messages_get_one_line_errors_and_keep_the_connection(model, clip, daemon_thread):
    path, _ = clip
    with daemon_thread(make_daemon(model, path, realtime=True, loop=True)) as running, connect(running.url) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"

        def reply(payload):
            ws.send(payload)
            while True:
                message = json.loads(ws.recv(timeout=10))
                if message["type"] != "scores":
                    return message

        assert reply("{not json")["error"] == "malformed JSON"
        assert reply("[" * 1500 + "]" * 1500)["error"] == "malformed JSON"  # a RecursionError once closed it
        assert "binary" in reply(b"\x00\x01")["error"]
        assert "unknown message type" in reply(json.dumps({"type": "subscribe-all"}))["error"]
        assert "unknown message type" in reply("[1, 2]")["error"]
        assert reply(json.dumps({"type": "ping"}))["type"] == "pong"
        status = reply(json.dumps({"type": "status"}))
        assert status["status"] == "ok" and status["subscribers"] == 1
        ws.send("x" * 10_000)  # beyond max_size: the daemon closes this connection with 1009
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1009
        assert running.thread.is_alive()  # one bad client closes only its own connection


def test_healthz_answers_plain_http_on_the_same_port(model, clip, daemon_thread):
    path, _ = clip
    with daemon_thread(make_daemon(model, path, realtime=True, loop=True)) as running:
        with urllib.request.urlopen(f"http://127.0.0.1:{running.daemon.port}/healthz", timeout=5) as response:
            health = json.loads(response.read())
        assert response.status == 200
        assert health["status"] == "ok" and health["overrun_frames"] == 0 and "clip.wav" in health["source"]


def test_no_microphone_is_a_clear_one_line_error(caplog):
    with pytest.raises(SourceError) as err:
        MicrophoneSource()
    message = str(err.value)
    assert "\n" not in message and "--file" in message
    assert "PortAudio" in message or "no audio input device" in message


def test_classes_set_the_hello_labels_and_every_score(tiny_onnx, clip, daemon_thread):
    path, _ = clip
    daemon = EmotionDaemon(EmotionModel(tiny_onnx), FileSource(path), PipelineConfig(silence_dbfs=-60,
                           classes=("sad", "angry")), ServerConfig(port=0, wait_for_subscribers=1))
    with daemon_thread(daemon) as running, connect(running.url) as ws:
        hello, messages, _ = receive_all(ws, kinds=("scores", "utterance"))
    assert hello["labels"] == ["angry", "sad"]  # the model's order
    assert hello["confidence_bands"] is None  # the words were measured over every class, not renormalised scores
    classified = [m for m in messages if m.get("probabilities")]
    assert classified and all(list(m["probabilities"]) == ["angry", "sad"] and m["top"] in ("angry", "sad")
                              for m in classified)
    assert all(abs(sum(m["probabilities"].values()) - 1) < 1e-4 for m in classified)


@pytest.mark.parametrize(
    "args,match",
    [(["--mic"], "--file"), (["--classes", "angry,joy"], "'joy'"),
     (["--model", "/nonexistent/model.onnx"], "not found"), (["--file", "/nonexistent/a.wav"], "not found"),
     (["--model", "/"], "model file / is a folder, not a file"), (["--file", "/"], "audio file / is a folder")],
)
def test_daemon_command_fails_cleanly(tiny_onnx, caplog, args, match):
    full = ["--model", str(tiny_onnx), "--port", "0", *args]
    assert daemon_main(full) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and match in errors[0] and "\n" not in errors[0]


@pytest.mark.parametrize("args, named", [
    (["--rate", "16000"], "--rate"), (["--file", "a.wav", "--format", "f32le"], "--format"),
    (["--stdin", "--loop"], "--loop"), (["--listen-only", "--fast", "--channels", "2"], "--channels, --fast"),
    (["--device", "3"], "--device")])
def test_a_flag_its_source_never_reads_is_refused_not_ignored(args, named, capsys):
    with pytest.raises(SystemExit) as refused:
        daemon_main(args)
    assert refused.value.code == 2 and f"{named}: not read with" in capsys.readouterr().err
    parser = build_parser()
    for fine in (["--stdin", "--rate", "16000"], ["--mic", "--device", "3"], ["--loop", "--fast"], ["--rate", "22050"]):
        assert unused_source_flags(parser.parse_args(fine), parser) == []  # a default restated is not an error


@pytest.mark.parametrize("args, message", [
    (["--no-vad", "--vad-threshold", "0.9"], "--vad-threshold: not read with --no-vad"),
    (["--no-listen", "--max-streams", "3", "--broadcast-listeners"],
     "--max-streams, --broadcast-listeners: not read with --no-listen")])
def test_settings_of_a_part_switched_off_are_refused_not_ignored(tiny_onnx, caplog, args, message):
    assert daemon_main(["--model", str(tiny_onnx), "--port", "0", *args]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith(message)


def test_sigterm_while_the_model_loads_is_a_clean_stop(tiny_onnx):
    """Before: the signal handlers came with the server, after the model: SIGTERM then killed it (rc -15) and Ctrl-C
    printed a traceback. The signal is sent from inside the model's constructor, so it lands there every run."""
    import subprocess
    import sys

    code = ("import os, signal, sys\n"
            "from emostream.stream import daemon\n"
            "load = daemon.EmotionModel\n"
            "def loading(*a, **k):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return load(*a, **k)\n"
            "daemon.EmotionModel = loading\n"
            f"sys.exit(daemon.main(['--model', {str(tiny_onnx)!r}, '--port', '0']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "stopped before serving" in done.stderr


def test_sigterm_closes_subscribers_normally_and_exits_0_without_tensorflow(tiny_onnx, clip, tmp_path):
    path, _ = clip
    blocker = tmp_path / "block"
    for name in ("tensorflow", "keras", "tf2onnx"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('the daemon imported {name}')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}"}
    proc, port = start_daemon(["--model", str(tiny_onnx), "--file", str(path), "--loop"], env=env)
    try:
        with connect(f"ws://127.0.0.1:{port}") as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
            assert next_scores(ws)["type"] == "scores"
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1000
        assert proc.wait(timeout=15) == 0
        proc.log_reader.join(5)
        log = "".join(proc.log_lines)
        assert "imported" not in log and "shutting down" in log
    finally:
        proc.kill()
