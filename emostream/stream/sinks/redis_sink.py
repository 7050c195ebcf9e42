"""Redis Streams sink: every message ``XADD``ed to one stream with an approximate ``MAXLEN``.

Each entry's fields are the message's own fields (the WebSocket schema) plus ``source``, ``stream_id``
and ``dropped`` (what this sink has dropped so far); every field value is JSON text (``"scores"`` is
``"\\"scores\\""``, ``0.42`` is ``"0.42"``, probabilities a JSON object), so ``decode`` below — or
``json.loads`` on each value in any language — gives the message back. Consumers on other machines
read with ``XREAD`` or consumer groups (``XREADGROUP``). Many daemons can share one stream; their
entries differ by ``stream_id``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from emostream.messages import finite
from emostream.stream.sinks import PublishError, Sink, SinkOptions, check_tls_file, redact

logger = logging.getLogger(__name__)

#: URL query parameters passed on to redis-py as they are (its own connection options).
CLIENT_PARAMS = ("socket_timeout", "socket_connect_timeout", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile",
                 "ssl_keyfile", "ssl_check_hostname", "protocol", "client_name")


@dataclass(frozen=True)
class RedisTarget:
    url: str  # as given
    client_url: str  # what redis-py connects to (our own parameters removed)
    stream: str = "emostream"
    maxlen_messages: int = 100_000  # approximate: Redis trims whole nodes, keeping at least this many

    @classmethod
    def from_url(cls, url: str) -> RedisTarget:
        parts = urlsplit(url)
        shown = redact(url)
        try:
            port = parts.port
        except ValueError:
            raise PublishError(f"--publish {shown}: the port must be a number in 1..65535") from None
        if not parts.hostname:
            raise PublishError(f"--publish {shown}: no host (e.g. redis://127.0.0.1:6379/0)")
        if port == 0:
            raise PublishError(f"--publish {shown}: the port must be in 1..65535")
        db = parts.path.strip("/") or "0"
        if not db.isdigit() or int(db) > 10_000:
            raise PublishError(f"--publish {shown}: the database is a number (e.g. /0), not {db!r}")
        stream, maxlen, passed = "emostream", 100_000, []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "stream":
                stream = value
            elif name == "maxlen":
                if not value.isdigit() or not 1 <= int(value) <= 1_000_000_000:
                    raise PublishError(f"--publish {shown}: maxlen is a whole number of entries in 1..1e9")
                maxlen = int(value)
            elif name in CLIENT_PARAMS:
                passed.append((name, value))
            else:
                raise PublishError(f"--publish {shown}: unknown parameter {name!r}; "
                                   f"known: stream, maxlen, {', '.join(CLIENT_PARAMS)}")
        if not stream or len(stream) > 256 or any(c.isspace() for c in stream):
            raise PublishError(f"--publish {shown}: stream is a key name of 1..256 characters without spaces")
        client_url = urlunsplit((parts.scheme.lower(), parts.netloc, f"/{db}", urlencode(passed), ""))
        check_client_params(shown, parts.scheme.lower() == "rediss", passed, client_url)
        return cls(url, client_url, stream, maxlen)


def check_client_params(shown: str, tls: bool, passed: list[tuple[str, str]], client_url: str) -> None:
    """redis-py's own options, checked before the daemon starts: it reads them only when it first connects, so a
    bad one (``socket_timeout=abc``, ``ssl_cert_reqs`` on ``redis://``, a missing CA file) meant a daemon retrying
    for ever and publishing nothing."""
    for name, value in passed:
        if name.startswith("ssl_") and not tls:
            raise PublishError(f"--publish {shown}: {name} is for rediss:// (TLS)")
        if name in ("socket_timeout", "socket_connect_timeout"):
            try:
                seconds = float(value)
            except ValueError:
                seconds = float("nan")
            if not 0 < seconds <= 3600:  # NaN fails too
                raise PublishError(f"--publish {shown}: {name} is seconds in (0, 3600], not {value!r}")
        elif name == "ssl_check_hostname" and value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise PublishError(f"--publish {shown}: ssl_check_hostname is true or false, not {value!r}")
        elif name == "ssl_ca_certs":
            check_tls_file(shown, name, value)
        elif name in ("ssl_certfile", "ssl_keyfile"):
            check_tls_file(shown, name, value, certificates=False)
    try:
        aioredis.ConnectionPool.from_url(client_url).make_connection()  # parses every option; connects later
    except Exception as exc:  # redis-py's ValueError, TypeError or RedisError for a value it refuses
        raise PublishError(f"--publish {shown}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from None


def fields_of(record: dict) -> dict[str, str]:
    """A message as Redis stream fields: every value JSON text (NaN/Inf become null)."""
    return {key: json.dumps(finite(value), separators=(",", ":"), allow_nan=False) for key, value in record.items()}


def decode(fields: dict) -> dict:
    """A stream entry's fields (bytes or str, as redis-py returns them) back into the message."""
    return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in fields.items()}


class RedisSink(Sink):
    kind = "redis"
    transient = (OSError, asyncio.TimeoutError, RedisConnectionError, RedisTimeoutError)  # asyncio's: 3.10

    def __init__(self, target: RedisTarget, options: SinkOptions = SinkOptions()):
        super().__init__(target.url, options)
        self.target = target
        self.client: aioredis.Redis | None = None

    async def connect(self) -> None:
        self.client = aioredis.Redis.from_url(
            self.target.client_url, socket_connect_timeout=self.options.connect_timeout_s,
            socket_timeout=self.options.send_timeout_s, retry_on_timeout=False, retry=None,
            single_connection_client=True)
        await self.client.ping()

    async def send(self, batch: list[dict]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for message in batch:
            pipe.xadd(self.target.stream, fields_of(self.record(message)), maxlen=self.target.maxlen_messages,
                      approximate=True)
        await pipe.execute()

    async def disconnect(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()
