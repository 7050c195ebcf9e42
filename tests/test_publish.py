"""Publishing beyond one machine: --publish to a real redis-server and mosquitto started by fixtures on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from brokers import MqttListener, wait_until
from needs import unavailable
from synth import speechlike
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from emostream import messages
from emostream.inference.model import EmotionModel
from emostream.inference.pipeline import PipelineConfig
from emostream.paths import DEFAULT_MODEL_PATH
from emostream.stream.daemon import EmotionDaemon, ServerConfig
from emostream.stream.daemon import main as daemon_main
from emostream.stream.sinks import PublishContext, PublishError, SinkOptions, make_sink, make_sinks
from emostream.stream.sources import FileSource

ROOT = Path(__file__).resolve().parent.parent
CLIP = "Audio_Speech_Actors_01-24/Actor_01/03-01-05-01-01-01-01.flac"  # actor 1, angry, normal intensity


@pytest.fixture(scope="module")
def model():
    return EmotionModel(DEFAULT_MODEL_PATH)  # the shipped model: no TensorFlow needed here


def needs_publish_extra() -> None:
    import importlib.util

    missing = [name for name in ("redis", "aiomqtt") if importlib.util.find_spec(name) is None]
    if missing:
        unavailable(f"{', '.join(missing)} missing: pip install 'emostream[publish]'")


def healthz(daemon) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/healthz", timeout=5) as response:
        return json.loads(response.read())




def redis_records(server, stream: str) -> list[dict]:
    from emostream.stream.sinks.redis_sink import decode

    return [decode(fields) for _, fields in server.client().xrange(stream)]


def same_windows(published: list[dict], ws_scores: list[dict]) -> None:
    """Same windows, same order, same numbers: seq, times, probabilities, top."""
    assert [m["seq"] for m in published] == [m["seq"] for m in ws_scores] == list(range(len(ws_scores)))
    for p, w in zip(published, ws_scores, strict=True):
        assert (p["start_s"], p["end_s"], p["top"], p["top_p"], p["silence"]) == \
            (w["start_s"], w["end_s"], w["top"], w["top_p"], w["silence"])
        assert p["probabilities"] == w["probabilities"]  # the same floats through JSON, not merely close


# -- URLs and options --------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, match", [
    ("ftp://127.0.0.1/x", "unsupported scheme 'ftp'"),
    ("redis:///0", "no host"),
    ("redis://127.0.0.1:99999/0", "port"),
    ("redis://127.0.0.1/abc", "database is a number"),
    ("redis://127.0.0.1/0?maxlen=0", "maxlen"),
    ("redis://127.0.0.1/0?maxlen=ten", "maxlen"),
    ("redis://127.0.0.1/0?strem=x", "unknown parameter 'strem'"),
    ("mqtt://127.0.0.1/a/+/b", "must not contain"),
    ("mqtt://127.0.0.1/x?qos=3", "qos is 0, 1 or 2"),
    ("mqtt://127.0.0.1/x?protocol=4", "protocol is 3.1.1 or 5"),
    ("mqtts://user:hunter2@127.0.0.1/x?retain=1", "unknown parameter 'retain'"),
    # connection options the client libraries read only when first connecting: before, a daemon that started,
    # said "cannot reach the broker" once and retried for ever, publishing nothing
    ("redis://:hunter2@127.0.0.1/0?socket_timeout=abc", "socket_timeout is seconds in (0, 3600], not 'abc'"),
    ("redis://127.0.0.1/0?socket_connect_timeout=0", "socket_connect_timeout is seconds"),
    ("redis://:hunter2@127.0.0.1/0?ssl_cert_reqs=required", "ssl_cert_reqs is for rediss:// (TLS)"),
    ("rediss://:hunter2@127.0.0.1/0?ssl_cert_reqs=x", "Invalid SSL Certificate Requirements Flag: x"),
    ("rediss://127.0.0.1/0?ssl_check_hostname=maybe", "ssl_check_hostname is true or false"),
    ("rediss://:hunter2@127.0.0.1/0?ssl_ca_certs=/no/such/ca.pem", "ssl_ca_certs /no/such/ca.pem: No such file"),
    ("redis://127.0.0.1/0?protocol=7", "protocol must be either 2 or 3"),
    ("mqtts://user:hunter2@127.0.0.1/x?ca=/no/such/ca.pem", "ca /no/such/ca.pem: No such file"),
    ("mqtt://127.0.0.1/x?ca=/no/such/ca.pem", "ca is for mqtts:// (TLS)"),
    ("mqtt://127.0.0.1/x?keepalive=0", "keepalive is whole seconds in 1..3600"),
    ("mqtt://127.0.0.1/x?keepalive=2.5", "keepalive is whole seconds in 1..3600"),
    ("mqtt://127.0.0.1/x?keepalive=%C2%B2", "keepalive is whole seconds in 1..3600"),  # '²'.isdigit() is True
])
def test_bad_publish_urls_are_one_line_errors_that_never_show_the_password(url, match):
    needs_publish_extra()
    with pytest.raises(PublishError, match=re.escape(match)) as err:
        make_sink(url)
    assert "\n" not in str(err.value) and "hunter2" not in str(err.value)


def test_publish_urls_parse_into_targets_with_defaults_and_redacted_names():
    needs_publish_extra()
    redis_sink = make_sink("rediss://:s3cret@cache.example:6380/2?stream=rooms&maxlen=5000&socket_timeout=3")
    assert (redis_sink.target.stream, redis_sink.target.maxlen_messages) == ("rooms", 5000)
    assert redis_sink.target.client_url == "rediss://:s3cret@cache.example:6380/2?socket_timeout=3"
    assert "s3cret" not in redis_sink.url and "s3cret" not in json.dumps(redis_sink.stats())
    mqtt_sink = make_sink("mqtts://alice:pw%40x@broker.example/home/emotion?qos=1&protocol=5")
    t = mqtt_sink.target
    assert (t.host, t.port, t.tls, t.prefix, t.username, t.password, t.qos, t.protocol) == \
        ("broker.example", 8883, True, "home/emotion", "alice", "pw@x", 1, "5")
    assert make_sink("mqtt://127.0.0.1").target.port == 1883 and make_sink("mqtt://127.0.0.1").target.prefix == \
        "emostream"
    assert make_sink("mqtt://127.0.0.1").target.keepalive_s == 10
    assert make_sink("mqtt://127.0.0.1?keepalive=60").target.keepalive_s == 60
    with pytest.raises(PublishError, match="queue_messages"):
        make_sink("mqtt://127.0.0.1", SinkOptions(queue_messages=0))


def test_the_daemon_refuses_bad_publish_options_in_one_line(caplog):
    for argv, match in ([["--publish", "ftp://x"], "unsupported scheme"],
                        [["--mqtt-discovery"], "--mqtt-discovery needs an mqtt://"],
                        [["--publish", "mqtt://127.0.0.1", "--stream-id", "a/b"], "--stream-id 'a/b'"]):
        needs_publish_extra()
        caplog.clear()
        assert daemon_main(argv) == 2
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and match in errors[0] and "\n" not in errors[0]


def test_the_publish_queue_flag_has_a_range(capsys):
    with pytest.raises(SystemExit) as exited:
        daemon_main(["--publish", "mqtt://127.0.0.1", "--publish-queue", "0"])
    assert exited.value.code == 2 and "--publish-queue: must be ≥ 1, got 0" in capsys.readouterr().err


def test_without_the_extra_the_daemon_says_what_to_install(monkeypatch, caplog):
    monkeypatch.delitem(sys.modules, "emostream.stream.sinks.redis_sink", raising=False)
    for name in ("redis", "redis.asyncio", "redis.exceptions"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError, as when it is not installed
    assert daemon_main(["--publish", "redis://127.0.0.1:6379/0"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "pip install 'emostream[publish]'" in errors[0] and "redis" in errors[0]


# -- against the real servers ---------------------------------------------------------------------------

def test_a_daemon_streaming_a_ravdess_clip_publishes_every_window_to_redis_and_mqtt(
        ravdess_dir, redis_server, mqtt_broker, model, daemon_thread):
    listener = MqttListener(mqtt_broker.port, "emo/#")
    sinks = make_sinks([f"{redis_server.url}?stream=scores&maxlen=1000", f"{mqtt_broker.url}/emo?qos=1"])
    daemon = EmotionDaemon(model, FileSource(ravdess_dir / CLIP, realtime=False), PipelineConfig(hop_s=0.1),
                           ServerConfig(port=0, wait_for_subscribers=1), sinks=sinks, stream_id="room-1")
    received = []
    with daemon_thread(daemon) as running, connect(running.url) as ws:
        hello = json.loads(ws.recv(timeout=20))
        try:
            while True:
                received.append(json.loads(ws.recv(timeout=20)))
        except ConnectionClosed:
            pass
    assert running.code == 0
    ws_scores = [m for m in received if m["type"] == "scores"]
    assert len(ws_scores) >= 12 and sum(not m["silence"] for m in ws_scores) >= 4

    records = redis_records(redis_server, "scores")
    assert records[0]["type"] == "status" and records[0]["daemon"] == "online"
    assert records[-1]["type"] == "status" and records[-1]["daemon"] == "offline"
    assert records[0]["labels"] == hello["labels"] and records[0]["model"] == hello["model"]
    same_windows([r for r in records if r["type"] == "scores"], ws_scores)
    assert {(r["stream_id"], r["source"], r["dropped"]) for r in records} == {("room-1", hello["source"], 0)}
    assert all(set(messages.SCHEMA["scores"]) <= set(r) for r in records if r["type"] == "scores")

    assert listener.wait_for(lambda: b"offline" in listener.on("emo/room-1/available"))
    same_windows([json.loads(p) for p in listener.on("emo/room-1/state")], ws_scores)
    assert listener.on("emo/room-1/available") == [b"online", b"offline"]
    assert [json.loads(p)["daemon"] for p in listener.on("emo/room-1/status")] == ["online", "offline"]
    listener.close()
    late = MqttListener(mqtt_broker.port, "emo/#")  # a consumer that comes later gets the retained latest
    assert late.wait_for(lambda: late.on("emo/room-1/state") and late.on("emo/room-1/available"), 5)
    assert json.loads(late.on("emo/room-1/state")[-1])["seq"] == ws_scores[-1]["seq"]
    assert late.on("emo/room-1/available") == [b"offline"]
    late.close()


def run_sinks(sinks, stream_id: str, items: list[dict]) -> None:
    """Start the sinks, offer the messages, stop (which delivers what is queued): the daemon's calls, in order."""
    hello = {"version": "test", "labels": ["a", "b"], "hop_s": 0.25, "model": {"run_id": "r1"}, "source": "test"}

    async def go():
        for sink in sinks:
            await sink.start(PublishContext(stream_id, "test source", hello))
        for message in items:
            for sink in sinks:
                sink.offer(message)
        await asyncio.gather(*(sink.stop() for sink in sinks))

    asyncio.run(go())


def test_utterance_results_reach_their_own_topic_and_the_stream(redis_server, mqtt_broker):
    listener = MqttListener(mqtt_broker.port, "emo/#")
    utterance = messages.utterance(start_s=1.0, end_s=2.5, windows=6, labels=["a", "b"], p=[0.25, 0.75])
    sinks = make_sinks([f"{redis_server.url}?stream=u", f"{mqtt_broker.url}/emo"])
    run_sinks(sinks, "kitchen", [utterance])
    assert all(s.published == 3 and s.dropped == 0 for s in sinks)  # online, the utterance, offline
    [published] = [r for r in redis_records(redis_server, "u") if r["type"] == "utterance"]
    assert published == {**utterance, "source": "test source", "stream_id": "kitchen", "dropped": 0}
    assert listener.wait_for(lambda: listener.on("emo/kitchen/utterance"))
    assert json.loads(listener.on("emo/kitchen/utterance")[0]) == published
    assert not listener.on("emo/kitchen/state")  # utterances never overwrite the window state
    listener.close()


def test_home_assistant_discovery_configs_describe_one_device_with_consistent_sensors(mqtt_broker):
    listener = MqttListener(mqtt_broker.port, "homeassistant/#", "emo/#")
    scores = messages.scores(seq=0, start_s=0.0, end_s=2.3, ready_time=time.time(), level_dbfs=-31.5,
                             labels=["a", "b"], p=np.array([0.125, 0.875]), features_ms=1.0, inference_ms=2.0)
    sink = make_sink(f"{mqtt_broker.url}/emo", SinkOptions(mqtt_discovery=True))
    run_sinks([sink], "living.room", [scores])
    # The broker may deliver the discovery configs before the state message: wait for both.
    assert listener.wait_for(lambda: len([t for t, *_ in listener.messages if t.startswith("homeassistant/")]) >= 4
                             and listener.on("emo/living.room/state"))
    configs = {t: json.loads(p) for t, p, _ in listener.messages if t.startswith("homeassistant/")}
    published_topics = {t for t, *_ in listener.messages if t.startswith("emo/")}
    state = json.loads(listener.on("emo/living.room/state")[-1])
    devices, unique_ids = [], []
    for topic, config in configs.items():
        node, obj = re.fullmatch(r"homeassistant/sensor/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/config", topic).groups()
        assert node == "emostream_living_room"
        assert config["state_topic"] in published_topics | {"emo/living.room/utterance"}
        assert config["availability_topic"] == "emo/living.room/available"
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
        assert config["unique_id"].startswith(node) and config["name"]
        if "json_attributes_topic" in config:
            assert config["json_attributes_topic"] == config["state_topic"]
        fields = re.findall(r"value_json\.(\w+)", config["value_template"])
        sample = state if config["state_topic"].endswith("/state") else messages.utterance(
            start_s=0, end_s=1, windows=1, labels=["a"], p=[1.0])
        assert fields and set(fields) <= set(sample), (topic, fields)
        devices.append(config["device"])
        unique_ids.append(config["unique_id"])
    assert len(set(unique_ids)) == len(unique_ids) == 4
    assert all(d == devices[0] for d in devices) and devices[0]["identifiers"] == ["emostream_living_room"]
    assert {"name", "manufacturer", "sw_version"} <= set(devices[0])
    assert state["top"] == "b" and state["probabilities"] == {"a": 0.125, "b": 0.875}
    listener.close()


def receive_scores_for(ws, seconds: float) -> list[tuple[float, int]]:
    """(arrival time, seq) of every scores message received for ``seconds``."""
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            m = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            break
        if m["type"] == "scores":
            out.append((time.monotonic(), m["seq"]))
    return out


@pytest.mark.parametrize("kind", ["redis", "mqtt"])
def test_a_broker_that_hangs_then_dies_never_delays_websocket_scores_and_is_reconnected(
        kind, request, model, write_clip, daemon_thread):
    broker = request.getfixturevalue("redis_server" if kind == "redis" else "mqtt_broker")
    url = f"{broker.url}?stream=s" if kind == "redis" else f"{broker.url}/emo"
    options = SinkOptions(queue_messages=8, backoff_initial_s=0.1, backoff_max_s=0.4, connect_timeout_s=0.5,
                          send_timeout_s=0.5, stop_timeout_s=1.0)
    sink = make_sink(url, options)
    path = write_clip("loop.wav", speechlike(3.0, seed=5))
    daemon = EmotionDaemon(model, FileSource(path, realtime=True, loop=True),
                           PipelineConfig(hop_s=0.05, silence_dbfs=-120), ServerConfig(port=0, wait_for_subscribers=1),
                           sinks=[sink], stream_id="s1")
    with daemon_thread(daemon) as running, connect(running.url) as ws:
        ws.recv(timeout=10)  # hello
        assert wait_until(lambda: sink.published >= 5)
        before = receive_scores_for(ws, 0.3)
        broker.pause()  # stops answering: sends time out
        hung = receive_scores_for(ws, 1.5)
        broker.kill()  # gone: connections refused
        gone = receive_scores_for(ws, 1.0)
        health = healthz(running.daemon)
        assert health["publish"][0]["connected"] is False and health["dropped_to_publish"] > 0
        assert health["publish"][0]["dropped"] == health["dropped_to_publish"]
        dropped_while_away = health["dropped_to_publish"]
        broker.start()  # same port: the sink finds it again by itself
        listener = MqttListener(broker.port, "emo/#") if kind == "mqtt" else None
        assert wait_until(lambda: sink.connected and sink.published > 0, 10)
        last_seen = gone[-1][1]

        def published_after():
            if kind == "redis":
                return [r for r in redis_records(broker, "s") if r["type"] == "scores"]
            return [json.loads(p) for p in listener.on("emo/s1/state")]

        assert wait_until(lambda: any(r["seq"] > last_seen for r in published_after()), 10)  # fresh windows flow
        after = published_after()
        assert after[-1]["dropped"] >= dropped_while_away  # the records carry the sink's drop count
        if listener is not None:
            listener.close()
    assert running.code == 0
    arrivals = before + hung + gone
    seqs = [s for _, s in arrivals]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # the WebSocket subscriber lost nothing
    gaps = np.diff([t for t, _ in arrivals])
    assert len(arrivals) >= 25 and gaps.max() < 0.5, f"a WebSocket gap of {gaps.max():.3f} s while the broker was away"


def test_a_qos0_mqtt_broker_that_hangs_is_noticed_by_its_keepalive(mqtt_broker, model, write_clip, daemon_thread):
    """At QoS 0 nothing is acknowledged, so sends never time out: before, a broker that stopped answering (but kept
    its connection) was counted as connected, and every message as published, for 36–44 s (keepalive 30 s)."""
    options = SinkOptions(backoff_initial_s=0.1, backoff_max_s=0.4, connect_timeout_s=0.5, send_timeout_s=30.0)
    sink = make_sink(f"{mqtt_broker.url}/emo?keepalive=1", options)
    path = write_clip("loop.wav", speechlike(3.0, seed=5))
    daemon = EmotionDaemon(model, FileSource(path, realtime=True, loop=True),
                           PipelineConfig(hop_s=0.05, silence_dbfs=-120), ServerConfig(port=0), sinks=[sink],
                           stream_id="s1")
    with daemon_thread(daemon):
        assert wait_until(lambda: sink.connected and sink.published >= 5)
        mqtt_broker.pause()
        hung_at = time.monotonic()
        assert wait_until(lambda: not sink.connected, 8), "the hung broker was still 'connected' after 8 s"
        noticed_s = time.monotonic() - hung_at
        assert sink.last_error
        mqtt_broker.resume()
        assert wait_until(lambda: sink.connected, 10)
        assert sink.connects >= 2 and sink.last_error is None  # before: the lost connection's error stayed
    assert noticed_s < 6  # one to two keepalives (and aiomqtt's 1 s housekeeping), not the 30 s send timeout


def test_an_unreachable_broker_at_start_is_one_error_line_then_quiet_retries(redis_server, model, write_clip,
                                                                            daemon_thread, caplog):
    caplog.set_level(logging.INFO)
    redis_server.kill()  # nothing listens on its port until started again below
    sink = make_sink(f"{redis_server.url}?stream=late", SinkOptions(backoff_initial_s=0.05, backoff_max_s=0.2))
    path = write_clip("loop.wav", speechlike(2.0, seed=6))
    daemon = EmotionDaemon(model, FileSource(path, realtime=True, loop=True),
                           PipelineConfig(hop_s=0.05, silence_dbfs=-120), ServerConfig(port=0), sinks=[sink],
                           stream_id="s2")
    with daemon_thread(daemon) as running, connect(running.url) as ws:
        ws.recv(timeout=10)
        assert len(receive_scores_for(ws, 3.5)) >= 10  # served while the broker is away
        assert sink.connects == 0 and len(sink.queue) > 0  # kept for when it comes
        redis_server.start()
        assert wait_until(lambda: sink.connected, 10)
    errors = [r for r in caplog.records if r.name.startswith("emostream.stream.sinks") and r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    line = errors[0].getMessage()
    assert "cannot reach the broker" in line and f":{redis_server.port}" in line and "\n" not in line
    assert any("connected again" in r.getMessage() for r in caplog.records)


def test_publish_benchmark_measures_throughput_and_added_latency(redis_server, mqtt_broker, tmp_path):
    from emostream.bench.publish import main as bench_main

    out = tmp_path / "results"
    assert bench_main(["--redis", redis_server.url, "--mqtt", mqtt_broker.url, "--messages", "300", "--rate", "100",
                       "--seconds", "1", "--repeats", "2", "--out", str(out)]) == 0
    result = json.loads((out / "publish.json").read_text())
    t, lat = result["throughput"], result["latency"]
    assert t["messages"] == 300 and t["dropped"] == 0 and t["messages_per_s"] > 0
    assert redis_server.client().xlen("emostream-bench-throughput") == 302  # online + 300 + offline
    assert lat["received"] == lat["messages"] == 200 and 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert len(lat["p99_ms_per_run"]) == 2
    mqtt = result["mqtt"]
    assert mqtt["throughput"]["received"] == 300 and mqtt["latency"]["received"] == 200  # loopback QoS 0: all
    assert 0 < mqtt["latency"]["p50_ms"] <= mqtt["latency"]["p99_ms"]
    assert "messages/s published" in (out / "publish.md").read_text()


def test_redis_with_password_and_tls(secure_redis, tls_files):
    scores = messages.scores(seq=0, start_s=0.0, end_s=2.3, ready_time=time.time(), level_dbfs=-20.0,
                             labels=["a", "b"], p=np.array([0.5, 0.5]), features_ms=1.0, inference_ms=1.0)
    options = SinkOptions(stop_timeout_s=0.5, backoff_initial_s=0.05)
    good = make_sink(f"{secure_redis.url}?stream=tls&ssl_ca_certs={tls_files['ca']}", SinkOptions(stop_timeout_s=5))
    wrong = make_sink(f"{secure_redis.url.replace('s3cret-pw', 'wrong')}?stream=tls2&ssl_ca_certs={tls_files['ca']}",
                      options)
    plain = make_sink(f"{secure_redis.url.replace('rediss://', 'redis://')}?stream=tls3", options)
    run_sinks([good, wrong, plain], "vault", [scores])
    assert good.published == 3 and good.connects == 1
    [record] = [r for r in redis_records(secure_redis, "tls") if r["type"] == "scores"]
    assert record["probabilities"] == {"a": 0.5, "b": 0.5} and record["stream_id"] == "vault"
    for refused in (wrong, plain):  # never connected: what was queued is counted as dropped at stop
        assert refused.connects == 0 and refused.published == 0 and refused.dropped == 3
        assert refused.last_error and "s3cret" not in refused.last_error and "s3cret" not in json.dumps(
            refused.stats())
    assert secure_redis.client().exists("tls2", "tls3") == 0


def test_mqtt_with_username_password_and_tls(secure_mqtt_broker, tls_files):
    listener = MqttListener(secure_mqtt_broker.port, "emo/#", broker=secure_mqtt_broker)
    utterance = messages.utterance(start_s=0.0, end_s=1.0, windows=3, labels=["a", "b"], p=[0.9, 0.1])
    options = SinkOptions(stop_timeout_s=0.5, backoff_initial_s=0.05)
    good = make_sink(f"{secure_mqtt_broker.url}/emo?ca={tls_files['ca']}&protocol=5", SinkOptions(stop_timeout_s=5))
    wrong = make_sink(f"{secure_mqtt_broker.url.replace('s3cret-pw', 'wrong')}/emo?ca={tls_files['ca']}", options)
    run_sinks([good, wrong], "vault", [utterance])
    assert good.published == 3 and good.connects == 1
    assert listener.wait_for(lambda: listener.on("emo/vault/utterance"))
    assert json.loads(listener.on("emo/vault/utterance")[0])["top"] == "a"
    assert wrong.connects == 0 and wrong.dropped == 3 and "s3cret" not in json.dumps(wrong.stats())
    listener.close()


def test_redis_stream_is_trimmed_and_readable_by_a_consumer_group(redis_server):
    bodies = [messages.scores(seq=i, start_s=i * 0.25, end_s=i * 0.25 + 2.3, ready_time=time.time(),
                              level_dbfs=-20.0, labels=["a", "b"], p=np.array([0.25, 0.75]), features_ms=1.0,
                              inference_ms=1.0) for i in range(1000)]
    sink = make_sink(f"{redis_server.url}?stream=trim&maxlen=100", SinkOptions(queue_messages=2000))
    run_sinks([sink], "s", bodies)
    assert sink.published == 1002 and sink.dropped == 0
    client = redis_server.client()
    assert 100 <= client.xlen("trim") < 400  # approximate MAXLEN: whole nodes trimmed, never below 100
    client.xgroup_create("trim", "consumers", id="0")
    [(_, entries)] = client.xreadgroup("consumers", "worker-1", {"trim": ">"}, count=10_000)
    from emostream.stream.sinks.redis_sink import decode

    seqs = [decode(f)["seq"] for _, f in entries if decode(f)["type"] == "scores"]
    assert seqs == list(range(1000 - len(seqs), 1000))  # the newest, in order


def test_the_daemon_command_publishes_the_bundled_sample(redis_server, tmp_path):
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, wherever the venv points
    result = subprocess.run([sys.executable, "-m", "emostream.stream.daemon", "--fast", "--port", "0", "--stream-id",
                             "cli-1", "--publish", f"{redis_server.url}?stream=cli"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    windows = int(re.search(r"stopped after (\d+) windows", result.stderr).group(1))
    records = redis_records(redis_server, "cli")
    types = [r["type"] for r in records]
    assert types[0] == types[-1] == "status" and types[-2] == "end"  # the end of the file, then going offline
    assert set(types[1:-2]) <= {"scores", "utterance"} and "utterance" in types
    assert [r["seq"] for r in records if r["type"] == "scores"] == list(range(windows)) and windows > 10
    assert {r["stream_id"] for r in records} == {"cli-1"} and "sample.flac" in records[1]["source"]
    assert "publishing as 'cli-1'" in result.stderr


def test_a_broker_that_refuses_the_messages_costs_them_but_not_the_connection(redis_server, caplog):
    redis_server.client().set("taken", "a string, not a stream")  # XADD to it fails with WRONGTYPE
    bodies = [messages.error(f"e{i}") for i in range(250)]
    sink = make_sink(f"{redis_server.url}?stream=taken", SinkOptions(batch_messages=50))
    run_sinks([sink], "s", bodies)
    assert sink.dropped == 252 and sink.published == 0 and sink.connects == 1 and "WRONGTYPE" in sink.last_error
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1  # one line, not one per batch


def test_the_daemon_stops_in_time_while_its_brokers_hang(redis_server, mqtt_broker, model, write_clip, daemon_thread):
    options = SinkOptions(stop_timeout_s=1.0, send_timeout_s=5.0)
    sinks = make_sinks([redis_server.url, f"{mqtt_broker.url}/emo"], options)
    path = write_clip("loop.wav", speechlike(3.0, seed=8))
    daemon = EmotionDaemon(model, FileSource(path, realtime=True, loop=True),
                           PipelineConfig(hop_s=0.05, silence_dbfs=-120), ServerConfig(port=0), sinks=sinks,
                           stream_id="s3")
    running = daemon_thread(daemon).__enter__()
    assert wait_until(lambda: all(s.published >= 3 for s in sinks))
    redis_server.pause()
    mqtt_broker.pause()
    time.sleep(0.3)
    started = time.monotonic()
    daemon.request_stop()
    running.thread.join(10)
    took = time.monotonic() - started
    assert not running.thread.is_alive() and running.code == 0
    assert took < 5.0, f"shutdown took {took:.1f} s with hung brokers"  # stop_timeout_s + closing, not send_timeout_s
    assert sinks[0].dropped > 0  # Redis: what was not acknowledged is counted (MQTT QoS 0 ends in the socket buffer)
    assert not any(s.queue for s in sinks)  # nothing left behind unaccounted
