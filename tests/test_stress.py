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
    assert short_hops["neighbours_closed"] == len(short_hops["neighbours_closed_after_s"])
    assert short_hops["beside_all_open"]["windows"] + short_hops["beside_after_first_close"]["windows"] == \
        short_hops["beside"]["windows"]  # the two phases split the measured stream's windows


def test_a_listen_client_records_the_daemons_close_that_its_reader_meets():
    """Before, a close with 1013 ended the reader task, the sender just stopped, and the stream was reported as
    never closed: the benchmark said no neighbour was dropped when most were."""
    import asyncio
    import time

    import numpy as np
    from websockets.asyncio.server import serve

    from emostream.bench.stress import listen_stream

    async def daemon_that_gives_up(ws):
        await ws.recv()  # start
        await ws.send(json.dumps({"type": "hello"}))
        await asyncio.sleep(0.3)
        await ws.close(1013, "analysis fell behind")

    async def go():
        async with serve(daemon_that_gives_up, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            return await listen_stream(f"ws://127.0.0.1:{port}", np.zeros(16000, "<i2"), time.monotonic() + 5, {})

    result = asyncio.run(go())
    assert result["closed"] == 1013 and 0.2 < result["closed_after_s"] < 2 and result["windows"] == 0
