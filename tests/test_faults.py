"""Faults around the daemon: the input file vanishing, running out of file descriptors."""

import json
import time
from pathlib import Path

import soundfile as sf
from synth import SR, speechlike
from websockets.sync.client import connect

from emostream.bench.fanout import start_daemon
from emostream.inference.model import EmotionModel
from emostream.inference.pipeline import PipelineConfig
from emostream.stream.daemon import EmotionDaemon, ServerConfig
from emostream.stream.sources import FileSource

ROOT = Path(__file__).resolve().parent.parent


def scores(ws, n, timeout=10):
    got = []
    while len(got) < n:
        m = json.loads(ws.recv(timeout=timeout))
        if m["type"] == "scores":
            got.append(m)
    return got


def test_input_file_vanishing_mid_stream_does_not_stop_the_daemon(tiny_onnx, tmp_path, daemon_thread):
    path = tmp_path / "talk.wav"
    sf.write(path, speechlike(3.0, seed=8), SR)
    daemon = EmotionDaemon(EmotionModel(tiny_onnx), FileSource(path, realtime=True, loop=True),
                           PipelineConfig(hop_s=0.05), ServerConfig(port=0))
    with daemon_thread(daemon) as running, connect(running.url) as ws:
        first = scores(ws, 2)
        path.unlink()  # the open file stays readable; the loop goes on
        later = scores(ws, 30)
        assert later[-1]["seq"] > first[-1]["seq"] and later[-1]["end_s"] > 3.0  # looped past the file's end


def test_running_out_of_file_descriptors_keeps_existing_subscribers_served(tiny_onnx, tmp_path):
    """The daemon under a 64-descriptor limit: connections beyond it fail, the ones inside keep their cadence."""
    path = tmp_path / "talk.wav"
    sf.write(path, speechlike(4.0, seed=9), SR)
    proc, port = start_daemon(["--model", str(tiny_onnx), "--file", str(path), "--loop", "--hop", "0.05"],
                              preamble="import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))")
    extra = []
    try:
        url = f"ws://127.0.0.1:{port}"
        with connect(url) as steady:
            scores(steady, 2)
            refused = 0
            for _ in range(60):  # beyond what 64 descriptors allow
                try:
                    extra.append(connect(url, open_timeout=0.5))
                except Exception:
                    refused += 1
            assert refused > 0
            started = time.monotonic()
            got = scores(steady, 10)  # the steady subscriber still gets windows on cadence
            assert time.monotonic() - started < 5 and got[-1]["seq"] - got[0]["seq"] == 9
            for ws in extra:
                ws.socket.close()  # gone at once: no close handshake to wait for
            extra.clear()
            time.sleep(1.0)
            with connect(url, open_timeout=5) as again:  # descriptors freed: new clients get in again
                assert json.loads(again.recv(timeout=10))["type"] == "hello"
        assert proc.poll() is None
    finally:
        for ws in extra:
            ws.socket.close()
        proc.terminate()
        proc.wait(10)
