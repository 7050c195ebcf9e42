import json
from pathlib import Path

import pytest

from emostream.bench.cli import main, model_labels


def test_bench_runs_on_a_tiny_setting_and_writes_well_formed_output(tiny_onnx, tmp_path):
    out = tmp_path / "bench"
    code = main(["--model", str(tiny_onnx), "--no-keras", "--windows", "30", "--duration", "4",
                 "--subscribers", "1,3", "--rtf-seconds", "4", "--idle-seconds", "1", "--out", str(out),
                 "--also-model", str(tiny_onnx)])
    assert code == 0
    results = json.loads((out / "bench.json").read_text())
    assert results["features"]["ours"]["n"] == 30 and results["features"]["feature_version"] == "1"
    assert results["features"]["naive_over_ours_p50"] > 1  # the streaming update beats recomputing the window
    assert results["vad"]["silero (daemon default)"]["n"] == 30  # the voice-activity gate's cost per hop
    assert results["inference"]["onnxruntime fp32, 1 thread (daemon default)"]["p50_over_ours"] == 1.0
    beside = results["inference"][f"onnxruntime fp32, 1 thread, {tiny_onnx.name}"]  # --also-model, same run
    assert beside["n"] == 30 and beside["p50_over_ours"] > 0
    assert results["floor"]["model_mflop_per_window"] > 0 and results["floor"]["floor_ms"] > 0
    assert results["realtime"]["realtime_factor_cpu"] > 1
    for n in ("1", "3"):
        fan = results["fanout"][n]
        assert fan["connected"] == int(n) and fan["messages"] > 0
        assert 0 < fan["e2e"]["p50_ms"] < 1000 and fan["daemon_rss_mb"] > 0
    assert results["idle"]["cpu_percent"] >= 0
    assert {t["target"] for t in results["targets"]}
    assert (out / "latency.png").stat().st_size > 0
    assert "emostream benchmark" in (out / "bench.md").read_text()


def test_flop_count_of_the_reference_crnn_matches_the_arithmetic(tmp_path):
    import keras

    from emostream.bench.measure import onnx_flops_per_window
    from emostream.export.onnx_export import convert
    from emostream.features.contract import ModelContract
    from emostream.train.model import build_crnn

    keras.utils.set_random_seed(0)
    path = tmp_path / "ref.onnx"
    proto = convert(build_crnn(compile=False), ModelContract.for_features(list("abcdefgh")))
    path.write_bytes(proto.SerializeToString())
    conv = 2 * (126 * 98 * 32 * 9 * 1 + 61 * 47 * 64 * 9 * 32)
    lstm = 2 * 23 * 4 * (128 * (1920 + 128) + 64 * (128 + 64))
    dense = 2 * 64 * 8
    assert abs(onnx_flops_per_window(path) - (conv + lstm + dense)) / (conv + lstm + dense) < 0.01


def test_streams_bench_runs_both_ways_and_writes_its_table(tiny_onnx, tmp_path):
    out = tmp_path / "bench"
    code = main(["--model", str(tiny_onnx), "--streams", "2", "--streams-duration", "5", "--naive-max", "2",
                 "--out", str(out)])
    assert code == 0
    r = json.loads((out / "streams.json").read_text())
    for way in ("listen", "naive"):
        (level,) = r[way]
        assert level["streams"] == 2 and level["error_count"] == 0 and level["missing_windows"] == 0
        # 5 s of 16 kHz audio: (5 - 2.3) / 0.255 + 1 = 11 windows per stream
        assert level["windows"] == 2 * 11 and 0 < level["p50_ms"] <= level["p99_ms"] < 5000
        assert level["cpu_percent_per_stream"] > 0
    assert r["capacity_streams"] in (0, 2)
    assert "one daemon per stream" in (out / "streams.md").read_text()


def test_the_bench_times_the_feature_version_the_daemon_would_compute():
    """A version 3 model's windows hold the bands above 7.1 kHz at the floor; the bench must time and feed those."""
    import dataclasses

    import numpy as np
    from synth import speechlike

    from emostream.bench.measure import feature_update_times, windows_from
    from emostream.features import DEFAULT_CONFIG

    v3 = dataclasses.replace(DEFAULT_CONFIG, feature_version="3")
    signal = speechlike(4.0, seed=2)
    assert np.ptp(windows_from(signal, 3, c=v3)[:, 111:], axis=(1, 2)).max() == 0.0
    assert np.ptp(windows_from(signal, 3)[:, 111:], axis=(1, 2)).min() > 0.1
    ours, naive = feature_update_times(signal, 11, 5, v3)
    assert len(ours) == len(naive) == 5


def test_models_with_one_file_name_keep_a_row_each_and_a_repeat_is_refused(capsys):
    pooled, plain = Path("runs/a/emotion_crnn.onnx"), Path("runs/b/emotion_crnn.onnx")
    assert model_labels([pooled, plain, Path("member.onnx")]) == [str(pooled), str(plain), "member.onnx"]
    with pytest.raises(SystemExit):
        main(["--also-model", str(pooled), "--also-model", str(pooled)])
    assert "the same model given twice" in capsys.readouterr().err
