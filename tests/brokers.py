"""Real brokers for the publishing tests: redis-server and mosquitto on free loopback ports, config in a temp dir.

Each can be killed and started again on the same port (the daemon must reconnect by itself).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def wait_until(predicate, timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` every 20 ms until it holds or ``timeout_s`` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def wait_listening(port: int, timeout_s: float = 10.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise TimeoutError(f"the server exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class Broker:
    """One server process on 127.0.0.1:``port``; ``kill``, ``start`` again, ``pause``/``resume`` (SIGSTOP/CONT)."""

    name = "broker"

    def __init__(self, binary: str, workdir: Path, password: str | None = None, tls: dict | None = None):
        self.binary, self.workdir = binary, workdir
        self.password = password  # required of clients when set (Redis: AUTH; MQTT: user "alice")
        self.tls = tls  # {"ca": Path, "cert": Path, "key": Path}: the port speaks TLS only
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Broker:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_listening(self.port, process=self.process)
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
        args = [self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            return args + ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls["cert"]),
                           "--tls-key-file", str(self.tls["key"]), "--tls-ca-cert-file", str(self.tls["ca"]),
                           "--tls-auth-clients", "no"]
        return args + ["--port", str(self.port)]

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        tls = {"ssl": True, "ssl_ca_certs": str(self.tls["ca"])} if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5, **tls)


class Mosquitto(Broker):
    name = "mosquitto"

    def command(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false"]
        if os.geteuid() == 0:
            lines.append("user root")  # as root it would drop to "mosquitto", who cannot read the temp dir
        if self.password:
            passwd = self.workdir / "passwd"
            subprocess.run([find_binary("mosquitto_passwd") or "mosquitto_passwd", "-b", "-c", str(passwd), "alice",
                            self.password], check=True, capture_output=True)
            passwd.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += [f"cafile {self.tls['ca']}", f"certfile {self.tls['cert']}", f"keyfile {self.tls['key']}"]
        conf.write_text("\n".join(lines) + "\n")
        return [self.binary, "-c", str(conf)]

    @property
    def url(self) -> str:
        auth = f"alice:{self.password}@" if self.password else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}127.0.0.1:{self.port}"


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
