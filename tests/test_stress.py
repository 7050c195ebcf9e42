import json

from emostream.bench.stress import main


def test_stress_command_runs_a_small_storm_crowd_and_soak(tiny_onnx, tmp_path):
    out = tmp_path / "stress"
    assert main(["--model", str(tiny_onnx), "--cycles", "60", "--subscribers", "8", "--stuck", "2", "--hold", "2",
                 "--soak", "3", "--short-hop-streams", "2", "--out", str(out)]) == 0
    r = json.loads((out / "stress.json").read_text())
    assert r["storm"]["load"]["cycles"] == 60 and r["storm"]["load"]["failures"] == 0
    for name in ("storm", "crowd"):
        assert r[name]["subscribers_after"] == 1  # every load client was cleaned up; the watcher remains
        assert r[name]["fds_after"] <= r[name]["fds_before"] + 1
        assert r[name]["cadence"]["messages"] > 0 and r[name]["exit_code"] == 0
    hostile = r["hostile"]["load"]  # one client flooding requests, and a DNS rebinding attempt
    assert hostile["flood"]["close_code"] == 1008 and hostile["flood"]["answered"] < 100
    assert hostile["rebind"] == {"upgrade": 421, "dashboard": 421, "healthz": 421, "loopback upgrade": 101}
    assert r["hostile"]["cadence"]["messages"] > 0 and r["hostile"]["subscribers_after"] == 1
    assert r["soak"]["windows"] > 0 and r["soak"]["overrun_frames"] == 0 and r["soak"]["exit_code"] == 0
    short_hops = r["listen_short_hops"]["load"]  # one real-time /listen stream, alone and beside two at hop 0.05 s
    assert short_hops["alone"]["windows"] > 0 and short_hops["beside"]["windows"] > 0
    assert short_hops["neighbour_windows"] > short_hops["beside"]["windows"]  # they asked for five times as many
    assert short_hops["alone"]["closed"] is None and short_hops["beside"]["closed"] is None
