import asyncio
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
from synth import SR, speechlike

from emostream.inference.model import EmotionModel
from emostream.inference.pipeline import PipelineConfig
from emostream.stream.daemon import EmotionDaemon, ServerConfig
from emostream.stream.sources import FileSource
from emostream.stream.subscriber import format_line, subscribe

LABELS = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]


def test_lines_show_top_emotion_bars_and_silence():
    p = dict.fromkeys(LABELS, 0.0) | {"sad": 0.75, "calm": 0.25}
    line = format_line({"end_s": 4.6, "silence": False, "probabilities": p, "top": "sad", "top_p": 0.75,
                        "dropped": 0}, LABELS)
    assert "sad" in line and "75%" in line and "4.60 s" in line
    bars = line.split()[-1]
    assert len(bars) == 8 and bars[LABELS.index("sad")] == "▆" and bars[LABELS.index("angry")] == "▁"
    quiet = format_line({"end_s": 1.0, "silence": True, "level_dbfs": -71.2}, LABELS)
    assert "(silence)" in quiet and "-71.2 dBFS" in quiet
    assert "dropped 3" in format_line({"end_s": 1.0, "silence": False, "probabilities": p, "top": "sad",
                                      "top_p": 0.75, "dropped": 3}, LABELS)
    # A probability the message lacks or holds as null (non-finite) is a blank bar, never a crash.
    gappy = {k: v for k, v in p.items() if k != "angry"} | {"calm": None}
    line = format_line({"end_s": 1.0, "silence": False, "probabilities": gappy, "top": "sad", "top_p": 0.75},
                       LABELS)
    bars = line.split("75%  ", 1)[1]
    assert len(bars) == 8 and bars[LABELS.index("angry")] == bars[LABELS.index("calm")] == " "
    assert bars[LABELS.index("sad")] == "▆"


def test_subscriber_reconnects_when_the_daemon_restarts(tiny_onnx, tmp_path, daemon_thread):
    import soundfile as sf

    path = tmp_path / "a.wav"
    sf.write(path, speechlike(4.0, seed=2), SR)
    with socket.socket() as s:  # a free port both daemons will use in turn
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = EmotionModel(tiny_onnx)

    def daemon():
        return EmotionDaemon(model, FileSource(path, realtime=True, loop=True), PipelineConfig(hop_s=0.05),
                             ServerConfig(port=port))

    out = io.StringIO()
    result = {}
    client = threading.Thread(target=lambda: result.setdefault(
        "code", asyncio.run(subscribe(f"ws://127.0.0.1:{port}", as_json=True, count=6, out=out))), daemon=True)
    with daemon_thread(daemon()):
        client.start()
        deadline = time.time() + 20
        while out.getvalue().count('"scores"') < 2 and time.time() < deadline:
            time.sleep(0.05)
    assert out.getvalue().count('"scores"') >= 2
    with daemon_thread(daemon()):  # the same port, a new process life
        client.join(60)
    assert result.get("code") == 0
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [m["type"] for m in messages].count("hello") == 2  # connected twice
    assert sum(m["type"] == "scores" for m in messages) == 6
    assert np.all([abs(sum(m["probabilities"].values()) - 1) < 1e-5 for m in messages if m["type"] == "scores"])


@pytest.mark.parametrize("argv", [["--help"]])
def test_subscriber_command_has_help(argv, capsys):
    from emostream.stream.subscriber import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0 and "--json" in capsys.readouterr().out


def test_a_reader_that_stops_early_ends_the_subscriber_quietly_and_token_files_read_as_the_daemon_reads_them(
        tiny_onnx, tmp_path, daemon_thread):
    """``emostream-subscribe | head -1`` once exited 2 with 'cannot read token file None: Broken pipe'; an empty
    token file was silently no token here but an error in the daemon."""
    import subprocess
    import sys

    import soundfile as sf

    path = tmp_path / "a.wav"
    sf.write(path, speechlike(4.0, seed=3), SR)
    model = EmotionModel(tiny_onnx)
    daemon = EmotionDaemon(model, FileSource(path, realtime=True, loop=True), PipelineConfig(hop_s=0.05),
                           ServerConfig(port=0))
    command = [sys.executable, "-m", "emostream.stream.subscriber"]
    with daemon_thread(daemon) as running:
        reader = subprocess.Popen([*command, running.url, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert json.loads(reader.stdout.readline())["type"] == "hello"
        reader.stdout.close()  # what `head -1` does after its line
        assert reader.wait(timeout=30) == 0
        err = reader.stderr.read().decode()
        assert "token file" not in err and "Traceback" not in err
        empty = tmp_path / "token"
        empty.write_text("\n")
        refused = subprocess.run([*command, running.url, "--token-file", str(empty)], capture_output=True,
                                 text=True, timeout=30)
        assert refused.returncode == 2 and f"token file {empty} is empty" in refused.stderr
        with open("/dev/full", "w") as full:  # any other output error: one line, exit 1, no traceback
            failed = subprocess.run([*command, running.url, "--json"], stdout=full, stderr=subprocess.PIPE,
                                    text=True, timeout=30)
        assert failed.returncode == 1 and "cannot write the output" in failed.stderr
        assert "Traceback" not in failed.stderr and "token file" not in failed.stderr


def test_certificate_failures_are_explained_by_what_would_fix_them():
    import ssl

    from emostream.stream.subscriber import explain

    def failure(code, message):
        exc = ssl.SSLCertVerificationError(1, message)
        exc.verify_code, exc.verify_message = code, message
        return exc

    untrusted = explain(failure(18, "self-signed certificate"), "wss://h:8765")
    assert "not trusted (self-signed certificate)" in untrusted and "--cafile" in untrusted
    for code in (62, 64):  # trusted, but issued for another name or address: --cafile would not help
        wrong_name = explain(failure(code, "Hostname mismatch"), "wss://h:8765")
        assert "does not name this host" in wrong_name and "--cafile" not in wrong_name
    assert explain(ConnectionRefusedError(), "wss://h:8765") is None  # worth retrying
