"""Helpers of the publishing tests: polling, an MQTT listener, throw-away TLS files. The brokers themselves are
``emostream.bench.brokers`` (the benchmark starts the same ones)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from emostream.bench.brokers import Broker, free_port


def wait_until(predicate, timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` every 20 ms until it holds or ``timeout_s`` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class MqttListener:
    """A paho client on its own thread collecting (topic, payload, retained) for the topics it subscribed."""

    def __init__(self, port: int, *topics: str, broker: Broker | None = None):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"listener-{free_port()}")
        if broker is not None and broker.password:
            self.client.username_pw_set("alice", broker.password)
        if broker is not None and broker.tls:
            self.client.tls_set(ca_certs=str(broker.tls["ca"]))
        self.client.on_message = lambda c, u, msg: self.messages.append((msg.topic, msg.payload, bool(msg.retain)))
        subscribed = []
        self.client.on_subscribe = lambda *a: subscribed.append(1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        for topic in topics:
            self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + 5
        while len(subscribed) < len(topics) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(subscribed) == len(topics), "the MQTT listener's subscriptions were not acknowledged"

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload, _ in self.messages if t == topic]

    def wait_for(self, predicate, timeout_s: float = 10.0) -> bool:
        return wait_until(predicate, timeout_s)

    def close(self) -> None:
        self.client.disconnect()  # first: the network thread then ends at once instead of after its 1 s select
        self.client.loop_stop()


def make_tls_files(directory: Path) -> dict:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl), for the brokers' TLS ports."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl")
    files = {"ca": directory / "ca.crt", "cert": directory / "server.crt", "key": directory / "server.key"}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run([openssl, *args], check=True, capture_output=True, cwd=directory)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=emostream test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    for path in files.values():
        path.chmod(0o644)  # mosquitto may read them after dropping root to its own user
    return files
