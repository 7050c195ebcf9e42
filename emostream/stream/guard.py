"""Checks every request and every client message passes before the daemon spends anything on it.

- ``HostGuard``: DNS rebinding. A page on ``evil.example`` whose name is re-pointed at 127.0.0.1 makes
  the browser send ``Host: evil.example:PORT`` and ``Origin: http://evil.example:PORT`` — an Origin that
  matches the Host, so an Origin check alone lets it in. Only Host names the daemon is really reached
  by are accepted: IP literals (a rebinding page cannot make the browser send one for its own origin),
  ``localhost`` and ``*.localhost``, the bound host, this machine's name, and ``--allowed-host`` entries.
  Anything else gets 421 (Misdirected Request), on plain HTTP and on the WebSocket upgrade alike.
- ``TokenBucket``: client requests (``ping``, ``status``, errors) are answered on the event loop that
  also fans scores out; a client sending thousands of them would delay every subscriber. Each
  connection gets a bucket; one that runs dry is closed with 1008 (policy violation).
- ``resolve_token``: the shared secret, read the same way by the daemon and the subscriber.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def host_name_of(header: str) -> str:
    """The name part of a Host header: ``[::1]:8765`` → ``::1``, ``Example.COM.:80`` → ``example.com``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header[1:]
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return header.rstrip(".")


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostGuard:
    """Which ``Host`` header values the daemon answers."""

    def __init__(self, bound_host: str, allowed_hosts: tuple[str, ...] = ()):
        names = {*LOOPBACK_NAMES, host_name_of(bound_host)}
        names.update(host_name_of(h) for h in allowed_hosts)
        if bound_host not in ("127.0.0.1", "localhost", "::1"):  # reached from other machines by its name
            for name in (socket.gethostname(), socket.getfqdn()):
                if name:
                    names.add(name.lower().rstrip("."))
        self.names = frozenset(n for n in names if n)

    def allows(self, host_header: str | None) -> bool:
        if not host_header:
            return False
        name = host_name_of(host_header)
        return is_ip_literal(name) or name in self.names or name.endswith(".localhost")


class TokenBucket:
    """``rate_per_s`` requests per second on average, bursts of up to ``burst``."""

    def __init__(self, rate_per_s: float, burst: int, clock=time.monotonic):
        self.rate_per_s, self.burst, self._clock = rate_per_s, burst, clock
        self._tokens = float(burst)
        self._last = clock()

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


TOKEN_ENV = "EMOSTREAM_TOKEN"


def resolve_token(token: str | None, token_file: str | Path | None, environ=os.environ) -> str | None:
    """The token from --token, else --token-file, else $EMOSTREAM_TOKEN; ValueError (one line) for an
    unreadable or empty file. The value itself never appears in a message."""
    if token is not None:
        return token
    if token_file is not None:
        try:
            lines = Path(token_file).read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read token file {token_file}: {exc.strerror or exc}") from None
        if not lines or not lines[0].strip():
            raise ValueError(f"token file {token_file} is empty")
        return lines[0].strip()
    return environ.get(TOKEN_ENV) or None
