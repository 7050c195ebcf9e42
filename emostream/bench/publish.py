"""``emostream-bench-publish``: what ``--publish redis://…`` costs one daemon, measured against a local Redis.

Two figures, both through the daemon's own ``RedisSink`` (same queue, batching and ``XADD … MAXLEN ~``):

* **throughput**: real scores messages (the pipeline's output on the bundled sample) offered as fast as
  the event loop can, until the sink has ``XADD``ed them all: messages/s one daemon can publish, and the
  event-loop CPU each costs.
* **added latency**: messages offered at a steady ``--rate`` while a consumer on another thread reads
  with ``XREAD BLOCK``: the time from ``offer`` (the moment the daemon hands the message over) to the
  consumer holding it, p50/p99/max.

Without ``--redis URL`` it starts ``redis-server`` on a free loopback port (no persistence) and stops it.
Writes ``publish.json`` and ``publish.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emostream.bench.brokers import Mosquitto, RedisServer, free_port, local_broker
from emostream.options import add_ranged, check_range
from emostream.paths import DEFAULT_MODEL_PATH, DEFAULT_SAMPLE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishBenchConfig:
    messages: int = 20_000  # throughput run
    rate_per_s: float = 100.0  # latency run: messages offered per second
    latency_seconds: float = 10.0  # per latency run
    repeats: int = 3  # latency runs; a loaded machine's p99 moves from run to run, so each is reported
    stream: str = "emostream-bench"

    def check(self) -> None:
        for flag, value in (("--messages", self.messages), ("--rate", self.rate_per_s),
                            ("--seconds", self.latency_seconds), ("--repeats", self.repeats)):
            check_range(flag, value, *PUBLISH_BENCH_RANGES[flag])


#: One range per flag, for the parser (shown in --help) and for library callers (``PublishBenchConfig.check``).
PUBLISH_BENCH_RANGES = {"--messages": (100, 10_000_000), "--rate": (1.0, 100_000.0), "--seconds": (1.0, 3600.0),
                        "--repeats": (1, 20)}


class MqttConsumer:
    """A subscriber on its own thread (paho), as on another machine: (arrival time, message) per scores message."""

    def __init__(self, url: str, topic: str):
        from urllib.parse import urlsplit

        import paho.mqtt.client as mqtt

        parts = urlsplit(url)
        self.received: list[tuple[float, dict]] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-consumer-{free_port()}")
        self.client.on_message = lambda c, u, msg: None if msg.retain else self.received.append(
            (time.time(), json.loads(msg.payload)))  # a retained message is an earlier run's
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(parts.hostname, parts.port or 1883)
        self.client.loop_start()
        self.client.subscribe(topic, qos=0)
        if not subscribed.wait(10):
            raise RuntimeError(f"the MQTT consumer could not subscribe at {url}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def mqtt_run(url: str, cfg: PublishBenchConfig, bodies: list[dict], count: int, rate_per_s: float | None):
    """Offer ``count`` messages (as fast as possible, or paced) to an MQTT sink; the consumer's arrivals."""
    from emostream.stream.sinks import SinkOptions, make_sink

    sink = make_sink(f"{url}/bench", SinkOptions(queue_messages=max(count, 1000), stop_timeout_s=60))
    await sink.start(make_context())
    await wait_connected(sink)
    consumer = MqttConsumer(url, "bench/bench-1/state")
    loop = asyncio.get_running_loop()
    start, t0 = loop.time(), time.perf_counter()
    for i in range(count):
        if rate_per_s:
            await asyncio.sleep(max(0.0, start + i / rate_per_s - loop.time()))
        elif i % 1000 == 999:
            await asyncio.sleep(0)
        sink.offer({**bodies[i % len(bodies)], "seq": i, "wall_time": time.time()})
    deadline, last = time.monotonic() + 120, (-1, time.monotonic())
    while len(consumer.received) < count and time.monotonic() < deadline:
        if len(consumer.received) != last[0]:
            last = (len(consumer.received), time.monotonic())
        elif time.monotonic() - last[1] > 5 and sink.queue == deque():  # nothing more is coming
            break
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    await sink.stop()
    consumer.close()
    return consumer.received, elapsed, sink.dropped


async def mqtt_throughput(url: str, cfg: PublishBenchConfig, bodies: list[dict]) -> dict:
    received, elapsed, dropped = await mqtt_run(url, cfg, bodies, cfg.messages, None)
    return {"messages": cfg.messages, "received": len(received), "seconds": round(elapsed, 3),
            "messages_per_s": round(len(received) / elapsed), "dropped": dropped}


async def mqtt_latency(url: str, cfg: PublishBenchConfig, bodies: list[dict]) -> dict:
    count = int(cfg.rate_per_s * cfg.latency_seconds)
    received, _, dropped = await mqtt_run(url, cfg, bodies, count, cfg.rate_per_s)
    return {"rate_per_s": cfg.rate_per_s, "messages": count, "received": len(received), "dropped": dropped,
            "raw_s": [t - m["wall_time"] for t, m in received]}


def latency_summary(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1e3
    if ms.size == 0:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3)}


def pipeline_messages(limit: int = 200) -> list[dict]:
    """Real scores messages: the shipped model on the bundled sample (what a daemon publishes)."""
    from emostream.features import load_audio
    from emostream.inference.model import EmotionModel
    from emostream.inference.pipeline import EmotionPipeline, PipelineConfig

    model = EmotionModel(DEFAULT_MODEL_PATH)
    y = load_audio(DEFAULT_SAMPLE, model.contract.feature_config())
    pipeline = EmotionPipeline(model, PipelineConfig(), model.contract.sample_rate_hz, 1)
    out = [m for m in pipeline.process(y.reshape(-1, 1), last=True) if m["type"] == "scores"]
    return out[:limit]


def make_context():
    from emostream import __version__
    from emostream.stream.sinks import PublishContext

    return PublishContext("bench-1", "bench", {"version": __version__, "labels": [], "hop_s": 0.0, "model": {}})


async def wait_connected(sink, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not sink.connected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"cannot reach {sink.url}: {sink.last_error}")
        await asyncio.sleep(0.01)


async def throughput(url: str, cfg: PublishBenchConfig, bodies: list[dict]) -> dict:
    from emostream.stream.sinks import SinkOptions, make_sink

    sink = make_sink(f"{url}?stream={cfg.stream}-throughput&maxlen={cfg.messages}",
                     SinkOptions(queue_messages=cfg.messages, stop_timeout_s=60))
    await sink.start(make_context())
    await wait_connected(sink)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(cfg.messages):
        sink.offer({**bodies[i % len(bodies)], "seq": i})
        if i % 1000 == 999:
            await asyncio.sleep(0)  # let the sink's task run, as the daemon's loop does between windows
    deadline = time.monotonic() + 300
    while sink.published + sink.dropped < cfg.messages + 1 and time.monotonic() < deadline:  # + "online" record
        await asyncio.sleep(0.001)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await sink.stop()
    return {"messages": cfg.messages, "seconds": round(elapsed, 3), "messages_per_s": round(cfg.messages / elapsed),
            "cpu_us_per_message": round(cpu / cfg.messages * 1e6, 1), "dropped": sink.dropped}


def consume(url: str, stream: str, expected: int, stop: threading.Event, latencies: list[float]) -> None:
    """Another client (as on another machine): XREAD BLOCK, latency = now - the message's offer time."""
    import redis

    client = redis.Redis.from_url(url)
    last_id = "0-0"
    while not stop.is_set() and len(latencies) < expected:
        reply = client.xread({stream: last_id}, count=500, block=200)
        now = time.time()
        for _, entries in reply or []:
            for entry_id, fields in entries:
                last_id = entry_id
                if fields.get(b"type") == b'"scores"':
                    latencies.append(now - json.loads(fields[b"wall_time"]))
    client.close()


async def latency(url: str, cfg: PublishBenchConfig, bodies: list[dict]) -> dict:
    from emostream.stream.sinks import SinkOptions, make_sink

    stream = f"{cfg.stream}-latency"
    await asyncio.to_thread(delete_stream, url, stream)  # the consumer reads from the start: this run's only
    sink = make_sink(f"{url}?stream={stream}", SinkOptions())
    await sink.start(make_context())
    await wait_connected(sink)
    count = int(cfg.rate_per_s * cfg.latency_seconds)
    latencies: list[float] = []
    stop = threading.Event()
    consumer = threading.Thread(target=consume, args=(url, stream, count, stop, latencies), daemon=True)
    consumer.start()
    loop = asyncio.get_running_loop()
    start, period = loop.time(), 1.0 / cfg.rate_per_s
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i * period - loop.time()))
        sink.offer({**bodies[i % len(bodies)], "seq": i, "wall_time": time.time()})  # wall_time: the hand-over
    deadline = time.monotonic() + 10
    while len(latencies) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.to_thread(consumer.join, 5)
    await sink.stop()
    return {"rate_per_s": cfg.rate_per_s, "messages": count, "received": len(latencies), "dropped": sink.dropped,
            "raw_s": latencies}


def repeated(run, url: str, cfg: PublishBenchConfig, bodies: list[dict]) -> dict:
    """``cfg.repeats`` latency runs: percentiles over all their messages, and each run's p99."""
    runs = [asyncio.run(run(url, cfg, bodies)) for _ in range(cfg.repeats)]
    pooled = [x for r in runs for x in r["raw_s"]]
    return {"rate_per_s": cfg.rate_per_s, "runs": cfg.repeats, "messages": sum(r["messages"] for r in runs),
            "received": sum(r["received"] for r in runs), "dropped": sum(r["dropped"] for r in runs),
            **latency_summary(pooled), "p99_ms_per_run": [latency_summary(r["raw_s"])["p99_ms"] for r in runs]}


def delete_stream(url: str, stream: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.delete(stream)
    finally:
        client.close()


def redis_version(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server").get("redis_version"))
    finally:
        client.close()


def write_results(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "publish.json").write_text(json.dumps(result, indent=2) + "\n")
    t, lat = result["throughput"], result["latency"]
    (out / "publish.md").write_text(
        "# Publishing to Redis Streams (`--publish redis://…`)\n\n"
        f"One daemon's `RedisSink` against Redis {result['redis_version']} on loopback; {result['machine']}.\n\n"
        "| measure | value |\n|---|---|\n"
        f"| messages/s published (one sink, {t['messages']} scores messages) | {t['messages_per_s']} |\n"
        f"| process CPU per message (encode + client) | {t['cpu_us_per_message']} µs |\n"
        f"| added latency offer → `XREAD` at {lat['rate_per_s']:g}/s, {lat['runs']} runs of "
        f"{result['config']['latency_seconds']:g} s: p50 | {lat['p50_ms']} ms |\n"
        f"| added latency p99 (each run's) | {lat['p99_ms']} ms ({', '.join(map(str, lat['p99_ms_per_run']))}) |\n"
        f"| added latency max | {lat['max_ms']} ms |\n"
        f"| dropped | {t['dropped'] + lat['dropped']} |\n\n"
        + mqtt_table(result.get("mqtt"))
        + f"Load average at the start: {result['loadavg_1m']}. Command: `{result['command']}`\n")


def mqtt_table(mqtt: dict | None) -> str:
    if not mqtt:
        return ""
    t, lat = mqtt["throughput"], mqtt["latency"]
    return ("## MQTT (`--publish mqtt://…`, QoS 0), mosquitto on loopback\n\n"
            "| measure | value |\n|---|---|\n"
            f"| messages/s received by a subscriber ({t['messages']} offered) | {t['messages_per_s']} |\n"
            f"| received / offered | {t['received']} / {t['messages']} |\n"
            f"| added latency offer → subscriber at {lat['rate_per_s']:g}/s, {lat['runs']} runs: p50 "
            f"| {lat['p50_ms']} ms |\n"
            f"| added latency p99 (each run's) | {lat['p99_ms']} ms ({', '.join(map(str, lat['p99_ms_per_run']))}) |\n"
            f"| added latency max | {lat['max_ms']} ms |\n\n")


def build_parser() -> argparse.ArgumentParser:
    d = PublishBenchConfig()
    p = argparse.ArgumentParser(prog="emostream-bench-publish", description=__doc__.splitlines()[0])
    p.add_argument("--redis", help="redis://HOST:PORT/DB to measure (default: start a local redis-server)")
    r = PUBLISH_BENCH_RANGES
    add_ranged(p, "--messages", int, d.messages, *r["--messages"], help="messages in the throughput run")
    add_ranged(p, "--rate", float, d.rate_per_s, *r["--rate"], unit="messages/s", help="offered in the latency run")
    add_ranged(p, "--seconds", float, d.latency_seconds, *r["--seconds"], unit="s", help="length of each latency run")
    add_ranged(p, "--repeats", int, d.repeats, *r["--repeats"], help="latency runs")
    p.add_argument("--mqtt", nargs="?", const="local", metavar="URL",
                   help="also measure MQTT: mqtt://HOST:PORT, or a local mosquitto when no URL is given")
    p.add_argument("--out", type=Path, default=Path("bench") / "results")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import redis  # noqa: F401
    except ImportError:
        logger.error("the publishing benchmark needs the redis package: pip install 'emostream[publish]'")
        return 2
    try:
        cfg = PublishBenchConfig(args.messages, args.rate, args.seconds, args.repeats)
        cfg.check()
        bodies = pipeline_messages()
        with (local_broker(RedisServer) if args.redis is None else _given(args.redis)) as url:
            t = asyncio.run(throughput(url, cfg, bodies))
            logger.info("throughput: %s", t)
            lat = repeated(latency, url, cfg, bodies)
            logger.info("latency: %s", lat)
            version = redis_version(url)
        mqtt = None
        if args.mqtt:
            with (local_broker(Mosquitto) if args.mqtt == "local" else _given(args.mqtt)) as mqtt_url:
                mqtt = {"throughput": asyncio.run(mqtt_throughput(mqtt_url, cfg, bodies)),
                        "latency": repeated(mqtt_latency, mqtt_url, cfg, bodies)}
            logger.info("mqtt: %s", mqtt)
    except (ValueError, RuntimeError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    from emostream.bench.cli import cpu_name

    result = {"config": asdict(cfg), "throughput": t, "latency": lat, "redis_version": version, "mqtt": mqtt,
              "machine": f"{cpu_name()}, {os.cpu_count()} CPUs", "loadavg_1m": round(os.getloadavg()[0], 2),
              "command": "emostream-bench-publish " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_results(result, args.out)
    print(f"published {t['messages_per_s']} messages/s; added latency p99 {lat['p99_ms']} ms at "
          f"{lat['rate_per_s']:g}/s (results in {args.out})")
    return 0


class _given:
    def __init__(self, url: str):
        self.url = url

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
