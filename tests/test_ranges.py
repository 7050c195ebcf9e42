"""One range per setting, checked wherever a value comes in: flags, the Python API, file headers, configs."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from emostream.features import AudioDecodeError
from emostream.inference.model import InferenceConfig
from emostream.inference.pipeline import (
    HOP_RANGE_S,
    INPUT_CHANNELS_RANGE,
    INPUT_RATE_RANGE_HZ,
    SILENCE_RANGE_DBFS,
    PipelineConfig,
)
from emostream.score import build_parser as score_parser
from emostream.score import main as score_main
from emostream.stream.daemon import build_parser as daemon_parser
from emostream.stream.daemon import main as daemon_main
from emostream.stream.listen import ListenConfig
from emostream.stream.sources import FileSource, SourceError, StdinSource


def wav_claiming(tmp_path, rate_hz: int):
    """A valid 16-bit WAV whose header says ``rate_hz``: libsndfile reads it as such."""
    path = tmp_path / f"claims-{rate_hz}.wav"
    sf.write(path, 0.1 * np.sin(np.arange(8000, dtype=np.float32) / 5), 16000, subtype="PCM_16")
    header = bytearray(path.read_bytes())
    header[24:32] = struct.pack("<II", rate_hz, 2 * rate_hz)  # sample rate, byte rate
    path.write_bytes(bytes(header))
    assert sf.info(path).samplerate == rate_hz
    return path


@pytest.mark.parametrize("rate_hz", [2**30, 1])
def test_a_file_header_out_of_range_is_a_one_line_error_before_anything_is_allocated(tmp_path, rate_hz, recognizer,
                                                                                     tiny_onnx, caplog):
    """2^30 Hz once sized a 40 GiB ring buffer (MemoryError traceback); 1 Hz a resample to 22050× the length."""
    path = wav_claiming(tmp_path, rate_hz)
    with pytest.raises(SourceError, match="sample_rate_hz must be") as err:
        FileSource(path)
    assert "\n" not in str(err.value)
    with pytest.raises(AudioDecodeError, match="sample_rate_hz must be") as err:
        recognizer.score_file(path)
    assert "\n" not in str(err.value)
    assert daemon_main(["--model", str(tiny_onnx), "--file", str(path), "--fast", "--port", "0"]) == 2
    assert "sample_rate_hz must be" in caplog.records[-1].getMessage()


def test_stdin_and_the_api_take_the_same_input_ranges(recognizer):
    low, high = INPUT_RATE_RANGE_HZ
    StdinSource(high, INPUT_CHANNELS_RANGE[1], stream=None)
    for rate, channels in ((low - 1, 1), (high + 1, 1), (16000, 0), (16000, INPUT_CHANNELS_RANGE[1] + 1)):
        with pytest.raises(SourceError):
            StdinSource(rate, channels)
        with pytest.raises(ValueError, match="sample_rate_hz|channels"):
            recognizer.stream(rate, channels)


def bounds(parser, flag: str):
    action = next(a for a in parser._actions if flag in a.option_strings)
    return action.type.bounds


def test_the_daemon_emostream_score_and_the_api_share_one_range_per_setting(recognizer):
    """These once disagreed (hop: 0.01–10 in the daemon, 0–2.3 in the API and emostream-score; silence: −200 in
    the daemon, −120 in the API)."""
    for parser in (daemon_parser(), score_parser()):
        assert bounds(parser, "--hop") == HOP_RANGE_S
        assert bounds(parser, "--silence-dbfs") == SILENCE_RANGE_DBFS
    assert bounds(daemon_parser(), "--rate") == INPUT_RATE_RANGE_HZ
    assert bounds(daemon_parser(), "--channels") == INPUT_CHANNELS_RANGE
    from emostream import EmotionRecognizer

    for edge in HOP_RANGE_S:
        PipelineConfig(hop_s=edge)
    for edge in SILENCE_RANGE_DBFS:
        PipelineConfig(silence_dbfs=edge)
    for kwargs in ({"hop_s": HOP_RANGE_S[1] + 0.1}, {"silence_dbfs": SILENCE_RANGE_DBFS[0] - 1},
                   {"smoothing": 1.0}, {"hop_s": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            EmotionRecognizer(**kwargs)


@pytest.mark.parametrize("changes", [{"max_batch_windows": 0}, {"intra_op_threads": 0}, {"intra_op_threads": 65}])
def test_inference_settings_have_ranges(changes):
    """``max_batch_windows=0`` once made every prediction an empty concatenate, killing the analysis worker."""
    with pytest.raises(ValueError, match=next(iter(changes))):
        InferenceConfig(**changes)


@pytest.mark.parametrize("changes", [{"min_rate_hz": 10}, {"max_rate_hz": 10**9}, {"min_rate_hz": 48000,
                                     "max_rate_hz": 16000}, {"max_channels": 0}, {"max_channels": 1000},
                                     {"min_hop_s": -1.0}, {"max_hop_s": 100.0}, {"min_hop_s": 1.0, "max_hop_s": 0.5}])
def test_every_listen_limit_has_a_range_inside_the_pipelines(changes):
    with pytest.raises(ValueError, match="|".join(changes)):
        ListenConfig(**changes).check()


def test_score_refuses_an_output_in_a_missing_folder_before_scoring(capsys, tmp_path, monkeypatch):
    import emostream.score as score

    monkeypatch.setattr(score, "_init", lambda *a: pytest.fail("the model was loaded before --out was checked"))
    with pytest.raises(SystemExit) as exited:
        score_main([str(tmp_path / "a.wav"), "--out", str(tmp_path / "absent" / "x.csv")])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "No such file or directory" in err and "Traceback" not in err


def test_score_refuses_an_output_that_is_a_folder(capsys, tmp_path, monkeypatch):
    import emostream.score as score

    monkeypatch.setattr(score, "_init", lambda *a: pytest.fail("the model was loaded before --out was checked"))
    with pytest.raises(SystemExit) as exited:
        score_main([str(tmp_path / "a.wav"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Is a directory" in err and "Traceback" not in err


def test_the_api_names_its_own_threads_argument(recognizer):
    from emostream import EmotionRecognizer

    with pytest.raises(ValueError, match="^threads must be"):
        EmotionRecognizer(threads=65)


def test_help_shows_each_range_as_it_is_checked_open_bounds_included():
    """--help said "smoothing (0.0–1.0)" while 1 was refused: the shown range must be the checked one."""
    daemon_help = " ".join(daemon_parser().format_help().split())
    assert "(0.0 ≤ x < 1.0)" in daemon_help  # --smoothing
    for parser in (daemon_parser(), score_parser()):
        for action in parser._actions:
            bounds = getattr(action.type, "bounds", None)
            if bounds is None or None in bounds or action.help is None:
                continue
            low, high = bounds
            for value, shown in ((low, "(" + str(low)), (high, str(high))):
                refused = False
                try:
                    action.type(str(value))
                except Exception:
                    refused = True
                assert shown in action.help, f"{action.dest}: range missing from its help {action.help!r}"
                if refused:  # an open bound: its help must not read as an inclusive "low–high"
                    assert f"{low}–{high}" not in action.help, f"{action.dest}: open bound shown closed"


def test_help_names_the_defaults_a_user_would_otherwise_guess():
    for parser, shown in ((daemon_parser(), ("(default: 0.25)", "(default: 0.0)", "(default: 127.0.0.1)",
                                             "(default: -50.0)")),
                          (score_parser(), ("(default: 0.25)", "(default: file)"))):
        text = " ".join(parser.format_help().split())
        for default in shown:
            assert default in text, default
        assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.parametrize("module", ["emostream.stream.daemon", "emostream.score", "emostream.train.robustness",
                                    "emostream.bench.cli", "emostream.bench.stress"])
def test_help_names_the_shipped_model_not_where_this_install_keeps_it(module, capsys):
    import importlib

    from emostream.paths import DEFAULT_MODEL_PATH

    with pytest.raises(SystemExit) as shown:
        importlib.import_module(module).main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert shown.value.code == 0
    assert f"the shipped {DEFAULT_MODEL_PATH.name}" in text and str(DEFAULT_MODEL_PATH.parent) not in text


@pytest.mark.parametrize("module, argv, flag", [
    ("emostream.train.robustness", ["--limit", "-1"], "--limit"),  # once: the last clip silently dropped
    ("emostream.train.robustness", ["--every", "0"], "--every"),
    ("emostream.train.evaluate", ["--epochs", "0"], "--epochs"),
    ("emostream.train.evaluate", ["--max-clips-per-class", "-2"], "--max-clips-per-class"),
    ("emostream.train.cli", ["--batch-size", "0"], "--batch-size"),
    ("emostream.train.cli", ["--max-clips-per-class", "4"], "--max-clips-per-class"),  # once: sklearn's traceback
    ("emostream.bench.vadcheck", ["--clips", "0"], "--clips"),  # once: ZeroDivisionError after 12 s of work
    ("emostream.bench.cli", ["--rtf-seconds", "2"], "--rtf-seconds"),  # once: a real-time factor of 0 windows
    ("emostream.bench.cli", ["--duration", "2"], "--duration")])  # once: fan-out levels of 0 messages, unsaid
def test_the_training_tools_refuse_numbers_out_of_range_before_any_work(module, argv, flag, capsys):
    import importlib

    entry = importlib.import_module(module)
    with pytest.raises(SystemExit) as refused:
        entry.parse_args(argv) if module.endswith(".cli") else entry.main(argv)
    assert refused.value.code == 2 and f"argument {flag}: must be" in capsys.readouterr().err
