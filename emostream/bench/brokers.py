"""Local brokers for the publishing benchmark and tests: redis-server and mosquitto on free loopback ports,
their config in a work directory. Each can be killed and started again on the same port (a daemon must
reconnect by itself), or paused (SIGSTOP) to play a hung broker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


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
    binary_name = ""

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
    binary_name = "redis-server"

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
    binary_name = "mosquitto"

    def command(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false",
                 "set_tcp_nodelay true"]  # each small message leaves at once, not held for an ACK
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


@contextlib.contextmanager
def local_broker(kind: type[Broker]) -> Iterator[str]:
    """A broker of ``kind`` in a temporary directory while the block runs; yields its URL."""
    binary = find_binary(kind.binary_name)
    if binary is None:
        raise RuntimeError(f"{kind.binary_name} not found: apt-get install {kind.binary_name}, or give a broker URL")
    with tempfile.TemporaryDirectory(prefix=f"emostream-{kind.name}-") as workdir:
        broker = kind(binary, Path(workdir)).start()
        try:
            yield broker.url
        finally:
            broker.kill()
