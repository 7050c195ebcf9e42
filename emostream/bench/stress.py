"""``emostream-stress``: hostile and heavy clients, and a soak run, against the real daemon on loopback.

Each scenario runs the daemon as a subprocess, keeps one well-behaved subscriber connected to
measure its cadence (gaps between score messages), and records the daemon's memory. All load goes to
127.0.0.1 only and every loop is bounded in count and time. Figures go to ``--out``/stress.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

from emostream.bench.fanout import get_text, raise_fd_limit, start_daemon
from emostream.bench.measure import percentiles_ms
from emostream.options import add_model_option, add_ranged, add_sample_option

logger = logging.getLogger(__name__)


class Watcher:
    """One subscriber that reads everything and records arrival times of score messages."""

    def __init__(self, url: str):
        self.url, self.arrivals, self.max_dropped = url, [], 0

    async def run(self, stop: asyncio.Event) -> None:
        from websockets.asyncio.client import connect

        async with connect(self.url) as ws:
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 1.0)
                except asyncio.TimeoutError:
                    continue
                m = json.loads(raw)
                if m.get("type") == "scores":
                    self.arrivals.append(time.monotonic())
                    self.max_dropped = max(self.max_dropped, m.get("dropped", 0))

    def cadence(self) -> dict:
        gaps = np.diff(self.arrivals) * 1e3 if len(self.arrivals) > 1 else np.array([np.nan])
        return {"messages": len(self.arrivals), "gap_p50_ms": float(np.nanpercentile(gaps, 50)),
                "gap_p99_ms": float(np.nanpercentile(gaps, 99)), "gap_max_ms": float(np.nanmax(gaps)),
                "dropped": self.max_dropped}


async def storm(url: str, cycles: int, concurrency: int = 20) -> dict:
    """``cycles`` connect → hello → disconnect cycles, ``concurrency`` at a time; some leave without closing."""
    from websockets.asyncio.client import connect

    failures = 0
    done = 0

    async def worker(n: int):
        nonlocal failures, done
        for i in range(n):
            try:
                ws = await connect(url, open_timeout=10)
                await ws.recv()
                if i % 3 == 0:
                    ws.transport.abort()  # vanish without a close frame
                else:
                    await ws.close()
            except Exception:
                failures += 1
            done += 1

    started = time.monotonic()
    per = cycles // concurrency
    await asyncio.gather(*(worker(per) for _ in range(concurrency)))
    return {"cycles": done, "failures": failures, "seconds": time.monotonic() - started}


async def crowd(url: str, n: int, seconds: float, stuck: int = 0) -> dict:
    """``n`` reading subscribers plus ``stuck`` that never read, held for ``seconds``."""
    from websockets.asyncio.client import connect

    sockets = []
    for i in range(n + stuck):
        ws = await connect(url, open_timeout=30, max_queue=1 if i >= n else 16)
        sockets.append(ws)
        if i % 100 == 99:
            await asyncio.sleep(0.01)

    async def drain(ws):
        try:
            async for _ in ws:
                pass
        except Exception:
            pass

    readers = [asyncio.create_task(drain(ws)) for ws in sockets[:n]]
    await asyncio.sleep(seconds)
    for task in readers:
        task.cancel()
    for ws in sockets:
        ws.transport.abort()
    return {"subscribers": n, "stuck": stuck, "seconds": seconds}


async def flood(url: str, requests: int) -> dict:
    """One client sends ``requests`` status requests as fast as it can and reads nothing: the daemon should
    close it (1008) once its request budget is spent, while the watcher keeps its cadence."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    sent, answered, code = 0, 0, None
    started = time.monotonic()

    async def discard(ws):  # replies are read and counted so that the close frame is seen
        nonlocal answered
        try:
            async for raw in ws:
                answered += '"type":"status"' in raw
        except ConnectionClosed:
            pass

    async with connect(url, open_timeout=10) as ws:
        await ws.recv()
        reader = asyncio.create_task(discard(ws))
        try:
            for _ in range(requests):
                await ws.send('{"type":"status"}')
                sent += 1
        except ConnectionClosed:
            pass
        try:
            await asyncio.wait_for(reader, 10.0)
        except asyncio.TimeoutError:
            reader.cancel()
        code = ws.close_code
    return {"requests": requests, "sent": sent, "answered": answered, "close_code": code,
            "seconds": time.monotonic() - started}


def raw_status(port: int, host: str, path: str = "/", upgrade: bool = False) -> int:
    """The status a request with this ``Host`` (and a matching Origin, as a rebinding page sends) gets."""
    import socket

    headers = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", f"Origin: http://{host}:{port}"]
    if upgrade:
        headers += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
    else:
        headers.append("Connection: close")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        line = s.recv(4096).split(b"\r\n", 1)[0]
    return int(line.split()[1])


async def rebind(url: str) -> dict:
    """DNS rebinding as a hostile page would try it: a foreign Host (and Origin) on the upgrade, the page and
    /healthz. Every answer should be 421; loopback names still get in."""
    port = int(url.rsplit(":", 1)[1])
    tries = {"upgrade": ("/", True), "dashboard": ("/", False), "healthz": ("/healthz", False)}
    statuses = {name: await asyncio.to_thread(raw_status, port, "rebound.example", path, up)
                for name, (path, up) in tries.items()}
    statuses["loopback upgrade"] = await asyncio.to_thread(raw_status, port, "localhost", "/", True)
    return statuses


async def hostile(url: str, requests: int) -> dict:
    # The flooder gets its own thread and event loop: sharing the watcher's loop, its tight send loop would
    # delay the watcher's reads in this process and be mistaken for the daemon's delay.
    flooded = await asyncio.to_thread(asyncio.run, flood(url, requests))
    return {"flood": flooded, "rebind": await rebind(url)}


LISTEN_RATE_HZ = 16000
LISTEN_FRAME_S = 0.1  # each /listen client sends 100 ms frames


async def listen_stream(url: str, audio: np.ndarray, stop_at: float, start: dict, speed: float = 1.0) -> dict:
    """One /listen client sending ``audio`` (16 kHz int16, looped) in 100 ms frames at ``speed`` × real time until
    ``stop_at`` (monotonic); returns its windows' latencies (``latencies_s``) — the frame that completed each window
    (its end) sent → that window's scores read — with when that frame was sent (``sent_s``, monotonic), their
    percentiles, and how the stream ended."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    frame = int(LISTEN_FRAME_S * LISTEN_RATE_HZ)
    frames = [audio[i : i + frame].tobytes() for i in range(0, len(audio) - frame + 1, frame)]
    sent_at: list[float] = []
    latencies_s: list[float] = []
    completed_at: list[float] = []  # when each measured window's completing frame was sent
    closed: dict = {}  # the daemon's close, when it ended the stream before the client did: code, seconds in
    opened = time.monotonic()
    try:
        async with connect(url.rstrip("/") + "/listen", open_timeout=10) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate_hz": LISTEN_RATE_HZ, "format": "s16le",
                                      **start}))
            await ws.recv()  # hello

            async def read():
                try:
                    async for raw in ws:
                        m = json.loads(raw)
                        if m.get("type") == "scores":  # the frame holding the window's last sample completed it
                            k = math.ceil(m["end_s"] / LISTEN_FRAME_S - 1e-9)
                            if 0 < k <= len(sent_at):
                                latencies_s.append(time.monotonic() - sent_at[k - 1])
                                completed_at.append(sent_at[k - 1])
                except ConnectionClosed as exc:  # here, not in the sender: the reader meets the close first
                    closed.update(code=exc.rcvd.code if exc.rcvd else None, after_s=time.monotonic() - opened)

            reader = asyncio.create_task(read())
            started = time.monotonic()
            while time.monotonic() < stop_at and not reader.done():
                await ws.send(frames[len(sent_at) % len(frames)])
                sent_at.append(time.monotonic())
                await asyncio.sleep(max(0.0, started + len(sent_at) * LISTEN_FRAME_S / speed - time.monotonic()))
            await asyncio.sleep(1.0)  # the last windows' scores
            reader.cancel()
    except ConnectionClosed as exc:
        closed = closed or {"code": exc.rcvd.code if exc.rcvd else None, "after_s": time.monotonic() - opened}
    return {**latency_figures(latencies_s), "closed": closed.get("code"), "closed_after_s": closed.get("after_s"),
            "opened_s": opened, "latencies_s": latencies_s, "sent_s": completed_at}


def latency_figures(latencies_s: list[float]) -> dict:
    """The count of windows, and ``measure.percentiles_ms`` of their latencies when there are any."""
    return {"windows": len(latencies_s), **(percentiles_ms(latencies_s) if latencies_s else {})}


def phase(stream: dict, start_s: float, end_s: float) -> dict:
    """``stream``'s latency figures over the windows whose completing frame was sent in [start_s, end_s)."""
    return latency_figures([lat for lat, t in zip(stream["latencies_s"], stream["sent_s"], strict=True)
                            if start_s <= t < end_s])


def summary(stream: dict) -> dict:
    return {k: v for k, v in stream.items() if k not in ("latencies_s", "sent_s", "opened_s")}


async def short_hop_neighbours(url: str, audio: np.ndarray, n: int, seconds: float) -> dict:
    """One real-time /listen stream at the default hop, alone and then beside ``n`` streams that ask for a window
    every 0.05 s and send 1.9× real time (inside the per-stream limits): its latency both ways, in one run. Each
    part lasts at least 4 s (a first window needs 2.3 s of audio); alone at most 8 s."""
    seconds = max(seconds, 4.0)
    alone = await listen_stream(url, audio, time.monotonic() + min(seconds, 8.0), {})
    stop_at = time.monotonic() + seconds
    good, *neighbours = await asyncio.gather(
        listen_stream(url, audio, stop_at, {}),
        *(listen_stream(url, audio, stop_at, {"hop_s": 0.05}, speed=1.9) for _ in range(n)))
    closed = [r for r in neighbours if r["closed_after_s"] is not None]
    # The daemon closes neighbours that fall 10 s behind (1013): the crowded phase is the measured stream's time
    # until the first of them is closed; after it, fewer (or none) remain.
    first_close = min((r["opened_s"] + r["closed_after_s"] for r in closed), default=math.inf)
    return {"neighbours": n, "seconds": seconds, "alone": summary(alone), "beside": summary(good),
            "beside_all_open": {**phase(good, -math.inf, first_close),
                                "seconds": round(min(first_close, stop_at) - good["opened_s"], 1)},
            "beside_after_first_close": phase(good, first_close, math.inf),
            "neighbour_windows": sum(r["windows"] for r in neighbours),
            "neighbours_closed": len(closed), "neighbour_close_codes": sorted({r["closed"] for r in closed}),
            "neighbours_closed_after_s": sorted(round(r["closed_after_s"], 1) for r in closed)}


async def scenario(daemon_args: list[str], load, settle_s: float = 3.0) -> dict:
    import psutil

    proc, port = start_daemon(daemon_args)
    url = f"ws://127.0.0.1:{port}"
    daemon = psutil.Process(proc.pid)
    try:
        stop = asyncio.Event()
        watcher = Watcher(url)
        watching = asyncio.create_task(watcher.run(stop))
        await asyncio.sleep(settle_s)
        rss_before = daemon.memory_info().rss
        fds_before = daemon.num_fds()
        load_result = await load(url)
        await asyncio.sleep(settle_s)
        health = json.loads(await asyncio.to_thread(get_text, f"http://127.0.0.1:{port}/healthz"))
        rss_after = daemon.memory_info().rss
        fds_after = daemon.num_fds()
        stop.set()
        await watching
    finally:
        proc.terminate()
        code = proc.wait(15)
    return {"load": load_result, "cadence": watcher.cadence(), "rss_before_mb": rss_before / 2**20,
            "rss_after_mb": rss_after / 2**20, "fds_before": fds_before, "fds_after": fds_after,
            "subscribers_after": health["subscribers"], "exit_code": code}


async def soak(daemon_args: list[str], seconds: float, sample_every_s: float = 10.0) -> dict:
    """The daemon on ``--fast --loop`` for ``seconds``: RSS over time, windows, drops and overruns."""
    import psutil

    proc, port = start_daemon([*daemon_args, "--fast"])
    daemon = psutil.Process(proc.pid)
    watcher = Watcher(f"ws://127.0.0.1:{port}")
    stop = asyncio.Event()
    watching = asyncio.create_task(watcher.run(stop))
    samples = []
    started = time.monotonic()
    step = min(sample_every_s, seconds / 3)
    try:
        while True:
            elapsed = time.monotonic() - started
            health = json.loads(await asyncio.to_thread(get_text, f"http://127.0.0.1:{port}/healthz"))
            samples.append({"t_s": round(elapsed, 1), "rss_mb": daemon.memory_info().rss / 2**20,
                            "windows": health["windows"], "overrun_frames": health["overrun_frames"],
                            "dropped": health["dropped_to_subscribers"]})
            if elapsed >= seconds:
                break
            await asyncio.sleep(min(step, seconds - elapsed))
        stop.set()
        await watching
    finally:
        proc.terminate()
        code = proc.wait(15)
    rss = [s["rss_mb"] for s in samples]
    half = len(rss) // 2
    return {"seconds": seconds, "samples": samples, "exit_code": code,
            "rss_first_mb": rss[0], "rss_last_mb": rss[-1],
            "rss_growth_second_half_mb": rss[-1] - rss[half] if half else 0.0,
            "windows": samples[-1]["windows"], "windows_per_s": samples[-1]["windows"] / max(samples[-1]["t_s"], 1),
            "overrun_frames": samples[-1]["overrun_frames"], "dropped": samples[-1]["dropped"],
            "watcher": watcher.cadence()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emostream-stress", description=__doc__.splitlines()[0])
    add_model_option(p, help="ONNX model the daemon serves")
    add_sample_option(p, help="audio the daemon streams")
    add_ranged(p, "--cycles", int, 10_000, 0, 1_000_000, help="connect/disconnect storm size (0 skips)")
    add_ranged(p, "--subscribers", int, 1000, 0, 20_000, help="concurrent reading subscribers (0 skips)")
    add_ranged(p, "--stuck", int, 50, 0, 10_000, help="subscribers that never read, alongside the crowd")
    add_ranged(p, "--hold", float, 20.0, 0.1, 3600.0, unit="s", help="seconds to hold the crowd")
    add_ranged(p, "--soak", float, 600.0, 0.0, 86_400.0, unit="s", help="seconds of --fast --loop soak (0 to skip)")
    add_ranged(p, "--flood", int, 5000, 0, 1_000_000, help="status requests from one flooding client, alongside "
               "a DNS rebinding attempt (0 skips both)")
    add_ranged(p, "--short-hop-streams", int, 12, 0, 1000,
               help="/listen streams asking for hop 0.05 s at 1.9x real time beside one real-time stream at the "
                    "default hop, whose result latency is measured alone and beside them for --hold (0 skips)")
    p.add_argument("--no-request-limit", action="store_true",
                   help="hostile scenario against a daemon whose request limit is out of reach (the comparison "
                        "figure: what the flood costs the watcher without it); stored as hostile_unlimited")
    p.add_argument("--out", type=Path, default=Path("bench") / "results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise_fd_limit()
    daemon_args = ["--model", str(args.model), "--file", str(args.audio), "--loop", "--hop", "0.25"]

    out_file = args.out / "stress.json"

    async def everything():
        # Scenarios set to 0 are skipped and keep their figures from an earlier run.
        results = json.loads(out_file.read_text()) if out_file.is_file() else {}
        if args.cycles:
            logger.info("storm: %d connect/disconnect cycles", args.cycles)
            results["storm"] = await scenario(daemon_args, lambda url: storm(url, args.cycles))
        if args.subscribers:
            logger.info("crowd: %d subscribers + %d stuck for %.0f s", args.subscribers, args.stuck, args.hold)
            results["crowd"] = await scenario(daemon_args,
                                              lambda url: crowd(url, args.subscribers, args.hold, args.stuck))
        if args.flood:
            logger.info("hostile: one client flooding %d requests, and a DNS rebinding attempt", args.flood)
            name, extra = ("hostile_unlimited", ["--requests-per-s", "10000", "--request-burst", "100000"]) \
                if args.no_request_limit else ("hostile", [])
            results[name] = await scenario([*daemon_args, *extra], lambda url: hostile(url, args.flood))
        if args.short_hop_streams:
            from emostream.bench.streams import client_audio

            logger.info("listen_short_hops: one real-time /listen stream beside %d at hop 0.05 s for %.0f s",
                        args.short_hop_streams, args.hold)
            audio = client_audio(args.audio, 20.0)
            results["listen_short_hops"] = await scenario(
                daemon_args, lambda url: short_hop_neighbours(url, audio, args.short_hop_streams, args.hold))
        if args.soak > 0:
            logger.info("soak: %.0f s --fast --loop", args.soak)
            results["soak"] = await soak(daemon_args, args.soak)
        return results

    results = asyncio.run(everything())
    args.out.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(results, indent=2) + "\n")
    for name, r in results.items():
        summary = {k: v for k, v in r.items() if k != "samples"}
        print(f"{name}: {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
