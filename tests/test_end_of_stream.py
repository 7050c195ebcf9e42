"""A finite source ends: utterance results, an ``end`` message, subscribers that exit on it; run.sh's defaults."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from synth import SR, speechlike
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from emostream.bench.fanout import start_daemon
from emostream.inference.model import EmotionModel
from emostream.inference.pipeline import PipelineConfig
from emostream.stream.daemon import EmotionDaemon, ServerConfig
from emostream.stream.daemon import main as daemon_main
from emostream.stream.sources import FileSource
from emostream.stream.subscriber import subscribe

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shipped():
    return EmotionModel()


def daemon_for(model, path, **server):
    return EmotionDaemon(model, FileSource(path, realtime=False), PipelineConfig(),
                         ServerConfig(port=0, wait_for_subscribers=1, **server))


def stream_to_the_end(daemon_thread, daemon) -> tuple[str, int | None, int | None]:
    """``emostream-subscribe --json --until-end`` against ``daemon``: (its output, its exit code, the daemon's)."""
    out, result = io.StringIO(), {}
    with daemon_thread(daemon) as running:
        client = threading.Thread(target=lambda: result.setdefault(
            "code", asyncio.run(subscribe(running.url, as_json=True, out=out, until_end=True))), daemon=True)
        client.start()
        client.join(30)
    return out.getvalue(), result.get("code"), running.code


def test_a_file_cut_short_ends_with_a_read_error_and_exit_1_not_a_normal_end(shipped, tmp_path, daemon_thread):
    """Before: 'reading … failed' in the log, then the normal end ("source ended"), exit 0 from the daemon and
    from ``emostream-subscribe --until-end`` — a broken file looked like a finished one."""
    import soundfile as sf

    whole = tmp_path / "whole.flac"
    sf.write(whole, speechlike(8.0, seed=11), SR)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out, code, daemon_code = stream_to_the_end(daemon_thread, daemon_for(shipped, cut))
    assert code == 1 and daemon_code == 1
    end = json.loads(out.splitlines()[-1])
    assert end["type"] == "end" and end["reason"].startswith("read error: reading ") and "cut.flac" in end["reason"]
    assert end["windows"] >= 1  # what was read before the break was scored


def test_a_finite_file_ends_with_utterances_then_end_and_until_end_exits_0(shipped, speech_with_pause, daemon_thread):
    path, _ = speech_with_pause
    text, code, daemon_code = stream_to_the_end(daemon_thread, daemon_for(shipped, path))
    assert code == 0 and daemon_code == 0
    messages = [json.loads(line) for line in text.splitlines()]
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "hello" and kinds[-1] == "end" and kinds.count("end") == 1
    scores = [m for m in messages if m["type"] == "scores"]
    utterances = [m for m in messages if m["type"] == "utterance"]
    assert len(utterances) == 2 and messages[-1]["windows"] == len(scores) and messages[-1]["utterances"] == 2
    assert messages[-1]["duration_s"] == pytest.approx(9.0, abs=1e-3)
    first_silence = next(i for i, m in enumerate(messages) if m.get("silence"))
    assert messages[first_silence + 1]["type"] == "utterance"  # said as soon as the speech paused
    voiced = [m for m in scores if m["end_s"] <= utterances[0]["end_s"] and not m["silence"]]
    mean = np.mean([list(m["probabilities"].values()) for m in voiced], axis=0)
    np.testing.assert_allclose(list(utterances[0]["probabilities"].values()), mean, atol=1e-6)
    from emostream.messages import SCHEMA

    for m in messages:  # every message follows the one schema
        assert set(SCHEMA[m["type"]]) <= set(m), m["type"]


def test_a_file_shorter_than_a_window_gets_a_short_utterance(shipped, write_clip, daemon_thread):
    path = write_clip("short.wav", speechlike(1.5, seed=51))
    with daemon_thread(daemon_for(shipped, path)) as running, connect(running.url) as ws:
        messages = []
        while not messages or messages[-1]["type"] != "end":
            messages.append(json.loads(ws.recv(timeout=20)))
    assert [m["type"] for m in messages] == ["hello", "utterance", "end"]
    short = messages[1]
    assert short["short"] is True and short["end_s"] == pytest.approx(1.5, abs=1e-3)
    assert short["top"] in shipped.labels and abs(sum(short["probabilities"].values()) - 1) < 1e-5
    assert messages[2]["windows"] == 0 and messages[2]["utterances"] == 1


def test_a_looped_source_never_ends_and_stop_is_not_an_end(shipped, speech_with_pause, daemon_thread):
    path, _ = speech_with_pause
    daemon = EmotionDaemon(shipped, FileSource(path, realtime=True, loop=True), PipelineConfig(),
                           ServerConfig(port=0, drain_on_exit_s=0.5))
    with daemon_thread(daemon) as running, connect(running.url) as ws:
        ws.recv(timeout=10)
        json.loads(ws.recv(timeout=10))
        running.daemon.request_stop()
        rest = []
        try:
            while True:
                rest.append(json.loads(ws.recv(timeout=10)))
        except (ConnectionClosed, TimeoutError):
            pass
    assert all(m["type"] != "end" for m in rest)


def test_wait_for_subscribers_is_range_checked(caplog, capsys):
    with pytest.raises(SystemExit) as exited:
        daemon_main(["--wait-for-subscribers", "-1", "--port", "0"])
    assert exited.value.code == 2 and "--wait-for-subscribers: must be ≥ 0, got -1" in capsys.readouterr().err
    assert daemon_main(["--wait-for-subscribers", "5", "--max-subscribers", "3", "--port", "0"]) == 2
    assert "--wait-for-subscribers must be in [0, 3]" in caplog.text


def test_commands_daemon_fast_waits_and_subscriber_exits_on_end(write_clip):
    path = write_clip("talk.wav", speechlike(4.0, seed=52))
    # --no-vad: the synthetic chirp is not speech to the voice-activity gate, and every window must be scored
    proc, port = start_daemon(["--file", str(path), "--fast", "--wait-for-subscribers", "1", "--no-vad"])
    try:
        sub = subprocess.run([sys.executable, "-m", "emostream.stream.subscriber", f"ws://127.0.0.1:{port}",
                              "--until-end"], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert sub.returncode == 0, sub.stderr
        lines = sub.stdout.splitlines()
        windows = (round(4.0 * SR) - 50688) // (11 * 512) + 1
        assert sum(" s  " in line and "%" in line for line in lines) == windows  # every window, none missed
        assert lines[-1].startswith("# end: source ended after 4.00 s") and "# utterance" in sub.stdout
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()


@pytest.mark.parametrize("argv, expected", [
    ([], ["--loop"]),
    (["--port", "9000", "--hop", "0.1"], ["--loop", "--port", "9000", "--hop", "0.1"]),
    (["--file", "talk.wav", "--fast"], ["--file", "talk.wav", "--fast"]),
    (["--file=talk.wav"], ["--file=talk.wav"]),
    (["--mic"], ["--mic"]),
    (["--stdin", "--rate", "16000"], ["--stdin", "--rate", "16000"]),
    (["--listen-only"], ["--listen-only"]),  # no file to loop: --loop would be refused
])
def test_run_sh_loops_the_sample_unless_a_source_is_named(tmp_path, argv, expected):
    """scripts/run.sh in a copy of the tree whose setup.sh and daemon only report what they were given."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    run_sh = tmp_path / "scripts" / "run.sh"
    run_sh.write_text((ROOT / "scripts" / "run.sh").read_text())
    (tmp_path / "scripts" / "setup.sh").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / ".venv" / "bin" / "emostream-daemon").write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    for f in (run_sh, tmp_path / "scripts" / "setup.sh", tmp_path / ".venv" / "bin" / "emostream-daemon"):
        os.chmod(f, 0o755)
    out = subprocess.run(["bash", str(run_sh), *argv], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == expected


@pytest.mark.parametrize("argv", [["--fi", "talk.wav"], ["--mi"], ["--std"]])
def test_the_daemon_refuses_abbreviated_flags_that_run_sh_would_not_see_as_a_source(argv, capsys):
    """run.sh adds --loop unless a source flag is spelt out; an abbreviation must fail in one line, not loop the
    sample (``--fi``) or be refused for the --loop run.sh added (``--mi``)."""
    from emostream.stream.daemon import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--loop", *argv])
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {argv[0]}" in capsys.readouterr().err


def test_the_readme_documents_every_message_type_and_its_fields():
    from emostream.messages import SCHEMA

    readme = (ROOT / "README.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)`.*$", readme, re.M)}
    for kind in SCHEMA:
        assert f"`{kind}`" in readme, f"README does not document {kind!r} messages"
    for kind in ("utterance", "end"):
        assert all(f"`{f}`" in rows[kind] for f in SCHEMA[kind] if f != "type")
