"""``emostream-score``: inputs, formats, tables, bad files, --jobs, and equality with the daemon's windows."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from synth import SR, speechlike
from websockets.sync.client import connect

from emostream.score import main as score_main


def run(capsys, *argv):
    code = score_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def folder(write_clip):
    a = write_clip("in/a.wav", speechlike(3.0, seed=41))
    b = write_clip("in/sub/b.flac", speechlike(2.6, seed=42))
    c = write_clip("in/c.wav", speechlike(1.0, seed=43))  # shorter than one window
    return a.parent, (a, b, c)


def test_per_file_jsonl_over_a_folder_a_glob_and_bad_inputs(capsys, caplog, folder, tmp_path, recognizer):
    root, (a, b, c) = folder
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00")
    code, out, err = run(capsys, root, root / "*.wav", tmp_path / "absent.wav", "--format", "jsonl", "--no-vad")
    assert code == 1  # something was unreadable, the rest was still scored
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["file"] for line in lines] == [str(a), str(c), str(b)]  # folder order; the glob adds nothing new
    for line in lines:
        assert set(line) == {"file", "top", "top_p", "probabilities", "duration_s", "windows", "short"}
        assert line["top"] == max(line["probabilities"], key=line["probabilities"].get)
        assert abs(sum(line["probabilities"].values()) - 1) < 1e-5
    assert [line["short"] for line in lines] == [False, True, False]
    assert lines[0]["duration_s"] == pytest.approx(3.0, abs=1e-3)
    problems = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]  # stderr, via logging
    assert all("\n" not in p for p in problems)
    assert any("broken.wav" in p and "cannot read" in p for p in problems)
    assert any("absent.wav" in p for p in problems) and problems[-1].endswith("2 of 5 inputs could not be scored")
    # The same figures as the API's
    summary = recognizer.score_file(a).summary
    assert lines[0]["probabilities"] == summary.probabilities


def test_per_window_and_per_utterance_csv(capsys, speech_with_pause, recognizer, tmp_path):
    path, _ = speech_with_pause
    scored = recognizer.score_file(path)
    out_file = tmp_path / "w.csv"
    assert run(capsys, path, "--per", "window", "--out", out_file, "--no-vad")[0] == 0
    table = list(csv.DictReader(out_file.open()))
    assert [int(r["seq"]) for r in table] == [w.seq for w in scored.windows]
    silent = [r for r in table if r["silence"] == "True"]
    assert silent and all(r["top"] == "" and r["p_angry"] == "" for r in silent)
    voiced = [(r, w) for r, w in zip(table, scored.windows, strict=True) if not w.silence]
    for r, w in voiced:
        assert [float(r[f"p_{k}"]) for k in recognizer.labels] == [w.probabilities[k] for k in recognizer.labels]
    code, out, _ = run(capsys, path, "--per", "utterance", "--no-vad")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [(float(r["start_s"]), r["top"]) for r in rows] == \
        [(u.start_s, u.top) for u in scored.utterances] and len(rows) == 2


@pytest.mark.parametrize("gate", [[], ["--no-vad"]], ids=["voice-gate", "level-gate"])
def test_jobs_give_the_same_table_in_the_same_order(capsys, caplog, folder, gate):
    root, _ = folder
    one = run(capsys, root, "--per", "window", "--format", "jsonl", *gate)
    told = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    short_scored = ["1 file(s) shorter than one window have no window rows; each is one utterance flagged short "
                    "(--per utterance or --per file)"]
    assert told == (short_scored if gate else [])  # the voice gate hears no speech in the chirp: nothing scored
    two = run(capsys, root, "--per", "window", "--format", "jsonl", "--jobs", "2", *gate)
    assert one[0] == two[0] == 0 and one[1] == two[1]
    rows = [json.loads(line) for line in one[1].splitlines()]
    assert len(rows) == 5  # 3 + 2 windows; the short clip has none
    assert [r["speech"] for r in rows] == [bool(gate)] * 5  # synthetic chirps are no speech to the voice gate


def test_classes_give_only_their_columns_and_unknown_ones_are_refused(capsys, caplog, folder):
    root, (a, _, _) = folder
    code, out, _ = run(capsys, a, "--classes", "sad,angry", "--no-vad")
    assert code == 0
    row = next(csv.DictReader(io.StringIO(out)))
    assert [k for k in row if k.startswith("p_")] == ["p_angry", "p_sad"]  # the model's order
    assert row["top"] in ("angry", "sad") and abs(float(row["p_angry"]) + float(row["p_sad"]) - 1) < 1e-5
    assert run(capsys, a, "--classes", "angry,joy")[0] == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "'joy'" in errors[0] and "\n" not in errors[0]
    with pytest.raises(SystemExit) as exited:
        score_main([str(a), "--classes", "angry"])
    assert exited.value.code == 2 and "--classes" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [(["--jobs", "0"], "--jobs"), (["--hop", "-0.1"], "--hop"),
                                         (["--silence-dbfs", "3"], "--silence-dbfs"),
                                         (["--vad-threshold", "1"], "--vad-threshold"),
                                         (["--vad-min-speech", "10.5"], "--vad-min-speech")])
def test_options_out_of_range_are_refused(capsys, folder, argv, match):
    root, _ = folder
    with pytest.raises(SystemExit) as exited:
        score_main([str(root), *argv])
    assert exited.value.code == 2 and match in capsys.readouterr().err


def test_window_scores_equal_the_daemons_for_the_same_file(capsys, speech_with_pause, daemon_thread):
    """A 44.1 kHz stereo file: the daemon (ring buffer, worker, any chunking) and emostream-score agree."""
    from emostream.inference.model import EmotionModel
    from emostream.inference.pipeline import PipelineConfig
    from emostream.stream.daemon import EmotionDaemon, ServerConfig
    from emostream.stream.sources import FileSource

    path, _ = speech_with_pause
    daemon = EmotionDaemon(EmotionModel(), FileSource(path, realtime=False), PipelineConfig(),
                           ServerConfig(port=0, wait_for_subscribers=1))
    received = []
    with daemon_thread(daemon) as running, connect(running.url) as ws:
        while (m := json.loads(ws.recv(timeout=30)))["type"] != "end":
            received.append(m)
    sent = {kind: [m for m in received if m["type"] == kind] for kind in ("scores", "utterance")}
    code, out, _ = run(capsys, path, "--per", "window", "--format", "jsonl", "--no-vad")
    ours = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(ours) == len(sent["scores"]) > 10
    for d, s in zip(sent["scores"], ours, strict=True):
        assert (d["seq"], d["start_s"], d["end_s"], d["silence"]) == (s["seq"], s["start_s"], s["end_s"], s["silence"])
        if not d["silence"]:
            np.testing.assert_allclose(list(d["probabilities"].values()), list(s["probabilities"].values()), atol=1e-5)
    assert m == {**m, "windows": len(ours), "utterances": 2}
    code, out, _ = run(capsys, path, "--per", "utterance", "--format", "jsonl", "--no-vad")
    assert [(u["start_s"], u["end_s"], u["windows"]) for u in map(json.loads, out.splitlines())] == \
        [(u["start_s"], u["end_s"], u["windows"]) for u in sent["utterance"]]


def test_default_gates_are_the_daemons_speech_scored_and_noise_not(capsys, write_clip, daemon_thread, tmp_path):
    """Real speech (the embedded sample), then 3 s of loud pink noise: with no flags, emostream-score applies
    the daemon's default voice gate — the noise windows are loud, unclassified and "speech": false, exactly
    as the daemon sends them — and ``--no-vad`` classifies them."""
    import soundfile as sf

    from emostream.bench.vadcheck import coloured_noise
    from emostream.inference.model import EmotionModel
    from emostream.inference.pipeline import PipelineConfig
    from emostream.inference.vad import VadConfig
    from emostream.paths import DEFAULT_SAMPLE
    from emostream.stream.daemon import EmotionDaemon, ServerConfig
    from emostream.stream.sources import FileSource

    speech, sr = sf.read(DEFAULT_SAMPLE, dtype="float32")
    noise = coloured_noise(3.0, 1.0, -24, seed=7).astype(np.float32)  # loud pink noise
    path = write_clip("speech-then-noise.wav", np.concatenate([speech, noise]), sr)
    daemon = EmotionDaemon(EmotionModel(), FileSource(path, realtime=False), PipelineConfig(vad=VadConfig()),
                           ServerConfig(port=0, wait_for_subscribers=1))
    received = []
    with daemon_thread(daemon) as running, connect(running.url) as ws:
        while (m := json.loads(ws.recv(timeout=30)))["type"] != "end":
            received.append(m)
    sent = [m for m in received if m["type"] == "scores"]
    code, out, _ = run(capsys, path, "--per", "window", "--format", "jsonl")
    ours = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(ours) == len(sent)
    for d, s in zip(sent, ours, strict=True):
        assert (d["seq"], d["silence"], d["speech"]) == (s["seq"], s["silence"], s["speech"])
        if d["speech"]:
            np.testing.assert_allclose(list(d["probabilities"].values()), list(s["probabilities"].values()), atol=1e-5)
    noise_rows = [s for s in ours if s["start_s"] >= speech.size / sr]
    assert noise_rows and all(not s["silence"] and not s["speech"] and s["top"] is None for s in noise_rows)
    assert sum(s["speech"] for s in ours) > len(ours) // 2  # the sample itself is speech
    code, out, _ = run(capsys, path, "--per", "window", "--format", "jsonl", "--no-vad")
    assert code == 0 and all(s["speech"] and s["top"] for s in map(json.loads, out.splitlines())
                             if s["start_s"] >= speech.size / sr)


def test_a_voice_gate_no_window_can_meet_is_refused_before_any_file(capsys, caplog, folder):
    root, _ = folder
    code, out, _ = run(capsys, root, "--vad-min-speech", "5")
    assert code == 2 and out == ""
    assert any("min_speech_s" in r.getMessage() and "\n" not in r.getMessage() for r in caplog.records)


@pytest.mark.data
def test_a_ravdess_clip_scores_as_one_utterance(capsys, ravdess_dir):
    clip = sorted((ravdess_dir / "Audio_Speech_Actors_01-24" / "Actor_01").glob("03-01-05-*"))[0]
    code, out, _ = run(capsys, clip, "--per", "utterance", "--format", "jsonl")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) >= 1 and all(not r["short"] and r["windows"] >= 1 for r in rows)


def test_speechlike_at_the_model_rate_needs_no_resampling(capsys, write_clip, recognizer):
    """Sanity: a 22.05 kHz mono file's windows are the API's streamed windows of the same samples."""
    import soundfile as sf

    path = write_clip("m.wav", speechlike(4.0, seed=44))
    y, sr = sf.read(path, dtype="float32")
    assert sr == SR
    code, out, _ = run(capsys, path, "--per", "window", "--format", "jsonl", "--no-vad")
    streamed = list(recognizer.iter_scores([y], SR))
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["probabilities"] for r in rows] == [w.probabilities for w in streamed]


def test_a_reader_that_goes_away_ends_the_scoring_quietly(folder):
    """`emostream-score … | head`: the reader closes the pipe; no traceback, exit 0."""
    import subprocess
    import sys

    root, _ = folder
    proc = subprocess.Popen([sys.executable, "-m", "emostream.score", str(root), "--per", "window", "--no-vad"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # gone before the first row
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert b"not found" not in err and b"could not be scored" not in err, err.decode()  # it did score


def test_a_folder_walk_follows_linked_folders_once_and_skips_hidden_files(write_clip, tmp_path):
    """Before: macOS's ``._a.wav`` resource files were read as audio (exit 1) and a linked folder was not entered."""
    from emostream.score import expand

    a = write_clip("root/a.wav", speechlike(0.5, seed=1))
    (a.parent / "._a.wav").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # AppleDouble, not audio
    write_clip("root/.cache/x.wav", speechlike(0.5, seed=2))
    b = write_clip("other/b.wav", speechlike(0.5, seed=3))
    (a.parent / "link").symlink_to(b.parent, target_is_directory=True)
    (b.parent / "back").symlink_to(a.parent, target_is_directory=True)  # a loop: root → link → back → root
    files, missing = expand([str(a.parent)])
    assert files == [a, a.parent / "link" / "b.wav"] and missing == []


def test_jobs_workers_log_like_the_main_process_and_name_the_file(write_clip, tmp_path):
    """Before: a worker had no logging set up — its warnings came out bare, without the file's name."""
    import soundfile as sf

    y = speechlike(3.0, seed=5)
    y[1000:1100] = np.nan
    bad = tmp_path / "nan.wav"
    sf.write(bad, y, SR, subtype="FLOAT")
    good = write_clip("good.wav", speechlike(3.0, seed=6))
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "emostream.score", str(bad), str(good), "--jobs", "2", "--no-vad"],
                          capture_output=True, text=True, timeout=120)  # its own forkserver, its own stderr
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert f"emostream-score: {bad} holds NaN/Inf samples: replaced by 0" in err and "/healthz" not in err


def test_a_file_name_that_is_not_utf8_is_scored_and_written_back_as_its_bytes(tmp_path, capsys):
    """Before: soundfile encoded the name as strict UTF-8 and every such file failed ('surrogates not allowed')."""
    import os

    import soundfile as sf

    folder = tmp_path / "latin1"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9.wav"  # "café" as Latin-1 bytes, as an old system may have written it
    with open(raw, "wb") as f:
        sf.write(f, speechlike(3.0, seed=7), SR, format="WAV")
    out = tmp_path / "t.csv"
    assert score_main([str(folder), "--no-vad", "--out", str(out)]) == 0
    rows = out.read_bytes().splitlines()
    assert len(rows) == 2 and rows[1].startswith(raw + b",")
