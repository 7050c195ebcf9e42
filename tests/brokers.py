"""Real brokers for the publishing tests: redis-server and mosquitto on free loopback ports, config in a temp dir.

Each can be killed and started again on the same port (the daemon must reconnect by itself).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def wait_listening(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class Broker:
    """One server process on 127.0.0.1:``port``; ``kill``, ``start`` again, ``pause``/``resume`` (SIGSTOP/CONT)."""

    name = "broker"

    def __init__(self, binary: str, workdir: Path):
        self.binary, self.workdir = binary, workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Broker:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_listening(self.port)
        except TimeoutError:
            self.kill()
            raise RuntimeError(f"{self.name} did not start: {self.log.read_text()[-500:]}") from None
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


class RedisServer(Broker):
    name = "redis"

    def command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


class Mosquitto(Broker):
    name = "mosquitto"

    def command(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        return [self.binary, "-c", str(conf)]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class MqttListener:
    """A paho client on its own thread collecting (topic, payload, retained) for the topics it subscribed."""

    def __init__(self, port: int, *topics: str):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"listener-{free_port()}")
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
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def close(self) -> None:
        self.client.disconnect()  # first: the network thread then ends at once instead of after its 1 s select
        self.client.loop_stop()
