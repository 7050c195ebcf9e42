"""``emostream-bench --streams 1,10,100``: how many real-time clients one daemon scores at once over ``/listen``.

Each client sends 16 kHz s16le in 100 ms frames on a real-time schedule (the bundled sample, looped) and
reads its own scores. Latency is measured from the moment the client sent the frame that completes a
window (known from running the same frames through ``EmotionPipeline`` offline) to the moment that
window's scores reached the client. A level is held in real time when every stream got every window its
frames completed, none was refused or closed with an error, and p99 ≤ ``P99_LIMIT_MS``.

The naive way, in the same run: one ``emostream-daemon --stdin`` process per stream, the client writing
the same frames to its stdin and reading the broadcast over WebSocket.

Each level runs in its own spawned process (clients, daemon start-up and CPU accounting), so the parent
holds no sockets or threads from an earlier level.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

from emostream.bench.fanout import raise_fd_limit, start_daemon, stop_daemon

logger = logging.getLogger(__name__)

RATE_HZ = 16000
FRAME_SAMPLES = 1600  # 100 ms
P99_LIMIT_MS = 100.0


def client_audio(audio_path, seconds: float) -> np.ndarray:
    """``seconds`` of the clip at 16 kHz, looped, as int16."""
    import soundfile as sf
    import soxr

    y, sr = sf.read(audio_path, dtype="float32", always_2d=True)
    y = soxr.resample(y.mean(axis=1), sr, RATE_HZ).astype(np.float32)
    n = int(seconds * RATE_HZ)
    y = np.tile(y, n // len(y) + 1)[:n]
    return np.clip(np.round(y * 32768), -32768, 32767).astype("<i2")


def completing_frames(model_path, samples: np.ndarray, hop_s: float) -> list[int]:
    """For each window (by seq), the index of the 100 ms frame whose arrival completes it."""
    from emostream.inference.model import EmotionModel
    from emostream.inference.pipeline import EmotionPipeline, PipelineConfig

    pipeline = EmotionPipeline(EmotionModel(model_path), PipelineConfig(hop_s=hop_s), RATE_HZ, 1)
    frames = []
    for k in range(len(samples) // FRAME_SAMPLES):
        chunk = samples[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES].astype(np.float32)[:, None] / 32768
        frames += [k] * sum(1 for m in pipeline.process(chunk) if m["type"] == "scores")
    return frames


def _cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            total += sum(psutil.Process(pid).cpu_times()[:2])
        except psutil.Error:
            pass
    return total


async def _listen_client(url, i, pcm: bytes, n_frames: int, stagger_s: float, record: dict):
    from websockets.asyncio.client import connect

    sent, got, info = record["sent"][i], record["got"][i], record["info"][i]
    async with connect(f"{url}/listen", open_timeout=60, max_size=2**20, compression=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate_hz": RATE_HZ, "format": "s16le", "channels": 1,
                                  "stream_id": f"bench-{i}"}))
        hello = json.loads(await ws.recv())
        if hello.get("type") != "hello":
            info["error"] = hello.get("error", "no hello")
            return

        async def read():
            async for raw in ws:
                now = time.perf_counter()
                m = json.loads(raw)
                if m["type"] == "scores":
                    got[m["seq"]] = now
                elif m["type"] == "end":
                    info["end"] = m
                elif m["type"] == "error":
                    info["error"] = m["error"]

        reader = asyncio.create_task(read())
        await record["go"].wait()
        start = record["t0"] + stagger_s
        step = FRAME_SAMPLES * 2
        for k in range(n_frames):
            delay = start + k * 0.1 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.append(time.perf_counter())
            await ws.send(pcm[k * step : (k + 1) * step])
        await ws.send(json.dumps({"type": "stop"}))
        try:
            await asyncio.wait_for(reader, 60)
        except asyncio.TimeoutError:
            info["error"] = "no end within 60 s of stop"


async def _naive_client(proc, port, i, pcm: bytes, n_frames: int, stagger_s: float, record: dict):
    from websockets.asyncio.client import connect

    sent, got = record["sent"][i], record["got"][i]
    async with connect(f"ws://127.0.0.1:{port}", open_timeout=60, max_size=2**20, compression=None) as ws:
        await ws.recv()  # hello

        async def read():
            async for raw in ws:
                now = time.perf_counter()
                m = json.loads(raw)
                if m.get("type") == "scores":
                    got[m["seq"]] = now

        reader = asyncio.create_task(read())
        await record["go"].wait()
        start = record["t0"] + stagger_s
        step = FRAME_SAMPLES * 2
        pipe = proc.stdin.buffer if hasattr(proc.stdin, "buffer") else proc.stdin
        for k in range(n_frames):
            delay = start + k * 0.1 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.append(time.perf_counter())
            pipe.write(pcm[k * step : (k + 1) * step])
            pipe.flush()
        await asyncio.sleep(1.0)  # the last windows' scores
        reader.cancel()


async def _level(mode: str, n: int, duration_s: float, model: str, pcm: bytes, workers: int, hop_s: float) -> dict:
    n_frames = int(duration_s * 10)
    record = {"sent": [[] for _ in range(n)], "got": [{} for _ in range(n)], "info": [{} for _ in range(n)],
              "go": asyncio.Event(), "t0": 0.0}
    common = ["--model", model, "--threads", "1", "--hop", str(hop_s)]
    procs = []
    try:
        if mode == "listen":
            proc, port = start_daemon([*common, "--listen-only", "--max-streams", str(n + 8),
                                       "--max-realtime-factor", "2", "--listen-workers", str(workers)])
            procs.append(proc)
            tasks = [asyncio.create_task(_listen_client(f"ws://127.0.0.1:{port}", i, pcm, n_frames, i * 0.1 / n,
                                                        record)) for i in range(n)]
        else:
            tasks = []
            for i in range(n):
                proc, port = start_daemon([*common, "--stdin", "--rate", str(RATE_HZ), "--format", "s16le",
                                           "--no-listen"])
                procs.append(proc)
                tasks.append(asyncio.create_task(_naive_client(proc, port, i, pcm, n_frames, i * 0.1 / n, record)))
        await asyncio.sleep(1.0)  # every client connected and started
        pids = [p.pid for p in procs]
        cpu_before, wall_before = _cpu_seconds(pids), time.perf_counter()
        record["t0"] = time.perf_counter() + 0.2
        record["go"].set()
        await asyncio.gather(*tasks, return_exceptions=True)
        cpu_used, wall = _cpu_seconds(pids) - cpu_before, time.perf_counter() - wall_before
        import psutil

        rss = sum(psutil.Process(p).memory_info().rss for p in pids) / 2**20
    finally:
        for p in procs:
            stop_daemon(p)
    return {"record": {k: record[k] for k in ("sent", "got", "info")}, "cpu_s": cpu_used, "wall_s": wall,
            "rss_mb": rss, "errors": [str(r) for r in await asyncio.gather(*tasks, return_exceptions=True)
                                      if isinstance(r, BaseException)]}


def _level_process(mode, n, duration_s, model, pcm, workers, hop_s, out):
    raise_fd_limit()
    logging.basicConfig(level=logging.WARNING)
    try:
        out.put(asyncio.run(_level(mode, n, duration_s, model, pcm, workers, hop_s)))
    except Exception as exc:  # report, never hang the parent
        out.put({"failed": f"{type(exc).__name__}: {exc}"})


def summarise(raw: dict, frame_of_window: list[int], n: int, duration_s: float) -> dict:
    latencies, missing, errors = [], 0, []
    for sent, got, info in zip(raw["record"]["sent"], raw["record"]["got"], raw["record"]["info"], strict=True):
        if "error" in info:
            errors.append(info["error"])
        expected = [seq for seq, k in enumerate(frame_of_window) if k < len(sent)]
        for seq in expected:
            if seq in got:
                latencies.append(got[seq] - sent[frame_of_window[seq]])
            else:
                missing += 1
    a = np.array(latencies) * 1e3
    p50 = float(np.percentile(a, 50)) if a.size else None
    p99 = float(np.percentile(a, 99)) if a.size else None
    errors += raw.get("errors", [])
    held = not errors and missing == 0 and p99 is not None and p99 <= P99_LIMIT_MS
    return {"streams": n, "windows": int(a.size), "missing_windows": missing, "errors": errors[:5],
            "error_count": len(errors), "p50_ms": p50, "p99_ms": p99,
            "max_ms": float(a.max()) if a.size else None,
            "cpu_percent_per_stream": 100 * raw["cpu_s"] / raw["wall_s"] / n,
            "cpu_percent_total": 100 * raw["cpu_s"] / raw["wall_s"], "rss_mb": raw["rss_mb"],
            "held_realtime": held}


def run_level(mode: str, n: int, duration_s: float, model, pcm: bytes, frame_of_window, workers: int,
              hop_s: float) -> dict:
    import os

    load_before = os.getloadavg()[0]  # other work on the machine: the figures mean little without it
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_level_process, args=(mode, n, duration_s, str(model), pcm, workers, hop_s, out))
    proc.start()
    try:
        raw = out.get(timeout=duration_s + 60 + 20 * n)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    if "failed" in raw:
        return {"streams": n, "held_realtime": False, "errors": [raw["failed"]], "error_count": 1,
                "load_average_1m": load_before}
    return {**summarise(raw, frame_of_window, n, duration_s), "load_average_1m": load_before}


def run_streams(levels: list[int], model, audio, duration_s: float, hop_s: float, workers: int,
                naive_max: int) -> dict:
    import os

    samples = client_audio(audio, duration_s)
    frame_of_window = completing_frames(model, samples, hop_s)
    pcm = samples.tobytes()
    results = {"settings": {"levels": levels, "duration_s": duration_s, "hop_s": hop_s, "rate_hz": RATE_HZ,
                            "frame_ms": 100, "listen_workers": workers, "naive_max": naive_max,
                            "p99_limit_ms": P99_LIMIT_MS, "cpu_cores": os.cpu_count(), "model": Path(model).name,
                            "audio": Path(audio).name},
               "listen": [], "naive": []}
    for n in levels:
        logger.info("/listen: %d streams for %.0f s", n, duration_s)
        r = run_level("listen", n, duration_s, model, pcm, frame_of_window, workers, hop_s)
        logger.info("  p50 %s ms, p99 %s ms, %s missing, %s errors, %.1f %% CPU per stream", r.get("p50_ms"),
                    r.get("p99_ms"), r.get("missing_windows"), r.get("error_count"), r.get("cpu_percent_per_stream", 0))
        results["listen"].append(r)
        if n <= naive_max:
            logger.info("naive: %d daemon processes for %.0f s", n, duration_s)
            r = run_level("naive", n, duration_s, model, pcm, frame_of_window, workers, hop_s)
            logger.info("  p50 %s ms, p99 %s ms, %s missing, %.1f %% CPU per stream", r.get("p50_ms"),
                        r.get("p99_ms"), r.get("missing_windows"), r.get("cpu_percent_per_stream", 0))
            results["naive"].append(r)
    held = [r["streams"] for r in results["listen"] if r["held_realtime"]]
    results["capacity_streams"] = max(held) if held else 0
    results["capacity_streams_per_core"] = results["capacity_streams"] / (os.cpu_count() or 1)
    naive_held = [r["streams"] for r in results["naive"] if r["held_realtime"]]
    results["naive_capacity_streams"] = max(naive_held) if naive_held else 0
    return results


def markdown(r: dict) -> str:
    s = r["settings"]
    lines = ["# emostream: many /listen streams at once\n",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {s['cpu_cores']} CPU cores; "
             f"{s['duration_s']:.0f} s per level of 16 kHz s16le in 100 ms frames, hop {s['hop_s']} s; "
             f"latency = the frame completing a window sent → its scores at the client. The machine is shared "
             f"(training runs, other jobs): its 1-minute load average before each level is in the last column.\n",
             "| way | streams | p50 ms | p99 ms | max ms | missing windows | errors | CPU % per stream | "
             "memory MB | real time, p99 ≤ 100 ms | machine load (1 min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(v, f="{:.1f}"):
        return "–" if v is None else f.format(v)

    for way in ("listen", "naive"):
        for x in r[way]:
            lines.append(f"| {'one daemon, /listen' if way == 'listen' else 'one daemon per stream'} | "
                         f"{x['streams']} | {fmt(x.get('p50_ms'))} | {fmt(x.get('p99_ms'))} | "
                         f"{fmt(x.get('max_ms'))} | {x.get('missing_windows', '–')} | {x.get('error_count', 0)} | "
                         f"{fmt(x.get('cpu_percent_per_stream'))} | {fmt(x.get('rss_mb'), '{:.0f}')} | "
                         f"{'yes' if x['held_realtime'] else 'no'} | {fmt(x.get('load_average_1m'))} |")
    lines.append(f"\nLargest level held in real time: **{r['capacity_streams']} streams** "
                 f"({r['capacity_streams_per_core']:.1f} per core) through /listen; "
                 f"{r['naive_capacity_streams']} with one daemon per stream (tried up to {s['naive_max']}).\n")
    return "\n".join(lines)
