"""Latency through the real daemon (a subprocess) to N WebSocket subscribers (another process), on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import re
import resource
import subprocess
import sys
import threading
import time

import numpy as np

logger = logging.getLogger(__name__)

MAX_SAMPLES = 200_000


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def start_daemon(args: list[str], env: dict | None = None, preamble: str = "") -> tuple[subprocess.Popen, int]:
    """``python -m emostream.stream.daemon ARGS --port 0``; returns the process and the port it bound.

    ``preamble``: Python run first in the daemon's process (e.g. lowering a resource limit). The daemon's
    stderr is read on a thread into ``proc.log_lines`` so it never blocks on a full pipe.
    """
    code = f"{preamble}\nimport sys\nfrom emostream.stream.daemon import main\nsys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *args, "--port", "0"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc.log_lines = []
    for line in proc.stderr:
        proc.log_lines.append(line)
        if match := re.search(r"listening on ws://[\d.]+:(\d+)", line):
            proc.log_reader = threading.Thread(target=lambda: proc.log_lines.extend(proc.stderr), daemon=True)
            proc.log_reader.start()
            return proc, int(match.group(1))
    raise RuntimeError(f"daemon did not start (exit {proc.wait()}): {''.join(proc.log_lines[-3:]).strip()}")


def get_text(url: str) -> str:
    """A plain HTTP GET on loopback (the daemon's /healthz)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def _client_process(url: str, n: int, duration_s: float, out: mp.Queue) -> None:
    raise_fd_limit()
    out.put(asyncio.run(_clients(url, n, duration_s)))


async def _clients(url: str, n: int, duration_s: float) -> dict:
    from websockets.asyncio.client import connect

    received: list[tuple[float, str]] = []  # parsed after the run: JSON work must not delay receipt times
    state = {"recording": False, "messages": 0}

    async def one(i):
        async with connect(url, open_timeout=60, max_size=2**20, compression=None) as ws:
            await ws.recv()  # hello
            connected.append(i)
            async for raw in ws:
                if state["recording"]:
                    state["messages"] += 1
                    if len(received) < MAX_SAMPLES:
                        received.append((time.time(), raw))

    connected: list[int] = []
    tasks = []
    for i in range(n):  # connect in small batches: no SYN storm
        tasks.append(asyncio.create_task(one(i)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    deadline = time.time() + 120
    while len(connected) < n and time.time() < deadline:
        await asyncio.sleep(0.05)
    state["recording"] = True
    started = time.time()
    await asyncio.sleep(duration_s)
    state["recording"] = False
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    messages = [(now, json.loads(raw)) for now, raw in received]
    scores = [(now, m) for now, m in messages if m.get("type") == "scores"]
    return {"connected": len(connected), "seconds": time.time() - started, "messages": state["messages"],
            "max_dropped": max((m.get("dropped", 0) for _, m in scores), default=0),
            "e2e": np.array([now - m["ready_time"] for now, m in scores]),
            "broadcast": np.array([now - m["wall_time"] for now, m in scores])}


def fanout_run(daemon_args: list[str], subscribers: int, duration_s: float) -> dict:
    """Latencies seen by ``subscribers`` clients over ``duration_s``, and the daemon's CPU and memory meanwhile."""
    import psutil

    proc, port = start_daemon(daemon_args)
    try:
        daemon = psutil.Process(proc.pid)
        queue: mp.Queue = mp.get_context("spawn").Queue()
        clients = mp.get_context("spawn").Process(
            target=_client_process, args=(f"ws://127.0.0.1:{port}", subscribers, duration_s, queue))
        clients.start()
        time.sleep(min(2.0, duration_s / 4))
        # CPU and memory while every subscriber is connected and receiving.
        cpu_before, wall_before = sum(daemon.cpu_times()[:2]), time.time()
        result = queue.get(timeout=duration_s + 180)
        cpu_after, wall_after = sum(daemon.cpu_times()[:2]), time.time()
        rss = daemon.memory_info().rss
        result["daemon_publish_ms"] = json.loads(get_text(f"http://127.0.0.1:{port}/healthz"))["publish_ms"]
        clients.join(10)
    finally:
        stop_daemon(proc)
    result["daemon_cpu_percent"] = 100 * (cpu_after - cpu_before) / (wall_after - wall_before)
    result["daemon_rss_mb"] = rss / 2**20
    return result


def stop_daemon(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM (the daemon drains and exits 0); SIGKILL only if a starved machine keeps it past ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        logger.warning("daemon %d still running %.0f s after SIGTERM; killing it", proc.pid, grace_s)
        proc.kill()
        proc.wait()


def idle_cpu_percent(daemon_args: list[str], seconds: float = 5.0) -> dict:
    """The daemon with a silent stdin (no audio arriving) and no subscribers: CPU it burns doing nothing."""
    import psutil

    proc, _ = start_daemon(daemon_args)
    try:
        daemon = psutil.Process(proc.pid)
        time.sleep(1.0)
        before = sum(daemon.cpu_times()[:2])
        time.sleep(seconds)
        used = sum(daemon.cpu_times()[:2]) - before
        rss = daemon.memory_info().rss
    finally:
        stop_daemon(proc)
    return {"cpu_percent": 100 * used / seconds, "rss_mb": rss / 2**20, "seconds": seconds}
