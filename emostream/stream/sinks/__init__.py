"""Publish the daemon's messages to a message system beyond this machine: Redis Streams, MQTT.

``--publish URL`` (repeatable) names one sink each::

    redis://[:PASSWORD@]HOST[:PORT][/DB][?stream=emostream&maxlen=100000]    (rediss:// for TLS)
    mqtt://[USER:PASSWORD@]HOST[:PORT][/PREFIX][?qos=0&protocol=5&keepalive=10]  (mqtts:// for TLS)

The event loop hands every message to ``Sink.offer``, which only appends to the sink's own bounded
queue (the oldest message is dropped, and counted, when it is full) and never awaits: a slow, stopped
or unreachable broker cannot delay the audio, the analysis or a WebSocket subscriber. Each sink's task
connects, sends what is queued in batches, and reconnects with exponential backoff when the connection
fails; an unreachable broker at start is one error line, then quiet retries.

The clients (``redis``, ``aiomqtt``) are the optional extra ``emostream[publish]``, imported only when a
sink of their kind is made.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from emostream import messages

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'emostream[publish]'"
SCHEMES = {"redis": "redis", "rediss": "redis", "mqtt": "mqtt", "mqtts": "mqtt"}


class PublishError(ValueError):
    """A ``--publish`` URL or option the daemon cannot honour (one line, said before anything starts)."""


@dataclass(frozen=True)
class SinkOptions:
    """What every sink shares; each field has a range checked by ``check``."""

    queue_messages: int = 1000  # per sink; the oldest is dropped (and counted) beyond this
    batch_messages: int = 100  # sent in one round trip (a Redis pipeline, back-to-back MQTT publishes)
    backoff_initial_s: float = 0.2  # first wait before reconnecting; doubles up to backoff_max_s
    backoff_max_s: float = 5.0
    connect_timeout_s: float = 3.0
    send_timeout_s: float = 5.0  # a broker that stops answering counts as lost after this
    stop_timeout_s: float = 2.0  # at shutdown: time to deliver what is queued and say "offline"
    mqtt_discovery: bool = False  # Home Assistant MQTT discovery configs on connect

    def check(self) -> None:
        ranges = {"queue_messages": (1, 1_000_000), "batch_messages": (1, 10_000),
                  "backoff_initial_s": (0.01, 60.0), "backoff_max_s": (0.01, 600.0),
                  "connect_timeout_s": (0.1, 120.0), "send_timeout_s": (0.1, 120.0), "stop_timeout_s": (0.0, 60.0)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise PublishError(f"publish option {name}={value} is outside {low}..{high}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise PublishError("publish option backoff_max_s must be at least backoff_initial_s")


@dataclass(frozen=True)
class PublishContext:
    """Who is publishing: set when the daemon starts listening."""

    stream_id: str  # names this daemon's stream on every broker (MQTT topic level, Redis field)
    source: str  # the audio source's description, as in the hello message
    hello: dict  # the WebSocket hello: labels, hop, model; repeated in the status records


def default_stream_id(port: int) -> str:
    """``<hostname>-<port>``: distinct for every daemon on a network without configuration."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0]) or "emostream"
    return f"{host[:50]}-{port}"


def check_stream_id(stream_id: str) -> str:
    if not isinstance(stream_id, str) or not messages.STREAM_ID.fullmatch(stream_id):
        raise PublishError(f"--stream-id {stream_id!r:.80}: use {messages.STREAM_ID_RULE}")
    return stream_id


def check_tls_file(shown: str, name: str, path: str, certificates: bool = True) -> None:
    """A certificate (or key) file named in a ``--publish`` URL must be readable now, not at the first connection:
    a missing one otherwise meant a daemon that retried for ever and published nothing."""
    import ssl

    try:
        if certificates:
            ssl.create_default_context(cafile=path)
        else:
            open(path, "rb").close()
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise PublishError(f"--publish {shown}: {name} {path}: {reason}") from None


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs and /healthz)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def sink_kind(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise PublishError(f"--publish {redact(url)}: unsupported scheme {scheme or '(none)'!r}; "
                           "use redis://, rediss://, mqtt:// or mqtts://")
    return SCHEMES[scheme]


def make_sink(url: str, options: SinkOptions = SinkOptions()) -> Sink:
    """Parse ``url`` and build its sink (not yet connected); a bad URL or a missing client is a ``PublishError``."""
    options.check()
    kind = sink_kind(url)
    try:
        if kind == "redis":
            from emostream.stream.sinks.redis_sink import RedisSink, RedisTarget
            return RedisSink(RedisTarget.from_url(url), options)
        from emostream.stream.sinks.mqtt_sink import MqttSink, MqttTarget
        return MqttSink(MqttTarget.from_url(url), options)
    except ImportError as exc:
        client = "redis" if kind == "redis" else "aiomqtt"
        raise PublishError(f"--publish {kind}:// needs the {client} package ({exc.name} is missing): "
                           f"{INSTALL_HINT}") from None


def make_sinks(urls, options: SinkOptions = SinkOptions()) -> list[Sink]:
    return [make_sink(url, options) for url in urls]


class Sink:
    """One broker connection fed by a bounded queue; ``offer`` is the only call on the hot path.

    Subclasses implement ``connect``, ``send(batch)`` and ``disconnect``; ``transient`` names the
    exceptions that mean "connection lost" (the batch is kept and sent again after reconnecting),
    anything else drops the batch (counted) and keeps the connection.
    """

    kind = "sink"
    transient: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError)

    def __init__(self, url: str, options: SinkOptions):
        self.url = redact(url)
        self.options = options
        self.queue: deque[dict] = deque()
        self.context: PublishContext | None = None
        self.offered = 0
        self.published = 0
        self.dropped = 0
        self.connects = 0
        self.connected = False
        self.last_error: str | None = None
        self._wakeup: asyncio.Event | None = None
        self._closing: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._last_refusal: type | None = None

    # -- hot path (event loop, never awaits) --------------------------------------------------------

    def offer(self, message: dict) -> None:
        """Queue ``message`` for sending; drops (and counts) the oldest when the queue is full."""
        self.offered += 1
        if len(self.queue) >= self.options.queue_messages:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(message)
        if self._wakeup is not None:
            self._wakeup.set()

    # -- life cycle ----------------------------------------------------------------------------------

    async def start(self, context: PublishContext) -> None:
        self.context = context
        self._wakeup, self._closing = asyncio.Event(), asyncio.Event()
        self.queue.appendleft(messages.daemon_status(state="online", hello=context.hello))
        self._task = asyncio.create_task(self._run(), name=f"emostream-publish-{self.kind}")

    async def stop(self) -> None:
        """Queue the "offline" record, deliver what is queued within ``stop_timeout_s``, disconnect."""
        if self._task is None:
            return
        self.offer(messages.daemon_status(state="offline", hello=self.context.hello))
        self._closing.set()
        self._wakeup.set()
        done, _ = await asyncio.wait([self._task], timeout=self.options.stop_timeout_s)
        if not done:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.queue:
            logger.warning("publish %s: %d messages not delivered at shutdown", self.url, len(self.queue))
            self.dropped += len(self.queue)
            self.queue.clear()
        self._task = None

    def stats(self) -> dict:
        return {"url": self.url, "connected": self.connected, "published": self.published,
                "dropped": self.dropped, "queued": len(self.queue), "connects": self.connects,
                "last_error": self.last_error}

    def record(self, message: dict) -> dict:
        """The message as published: the WebSocket fields plus who sent it and what this sink dropped."""
        return {**message, "source": self.context.source, "stream_id": self.context.stream_id,
                "dropped": self.dropped}

    # -- the sink's own task ---------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._serve()
        except asyncio.CancelledError:  # stop() ran out of time: close what is open, then end
            self.connected = False
            await self._disconnect_quietly()
            raise

    async def _serve(self) -> None:
        delay = self.options.backoff_initial_s
        failures = 0
        while not self._closing.is_set():
            try:
                await asyncio.wait_for(self.connect(), self.connect_limit_s)
            except Exception as exc:  # unreachable, refused, auth: say so once, then retry quietly
                self.last_error = one_line(exc)
                await self._disconnect_quietly()
                if failures == 0:
                    logger.error("publish %s: cannot reach the broker (%s); retrying with backoff up to %g s, "
                                 "WebSocket subscribers are served meanwhile",
                                 self.url, self.last_error, self.options.backoff_max_s)
                failures += 1
                await self._sleep(delay)
                delay = min(delay * 2, self.options.backoff_max_s)
                continue
            self.connected, self.last_error = True, None  # an error of an earlier connection is not this one's
            self.connects += 1
            if failures or self.connects > 1:
                logger.info("publish %s: connected again (%d queued, %d dropped so far)", self.url,
                            len(self.queue), self.dropped)
            else:
                logger.info("publish %s: connected", self.url)
            failures, delay = 0, self.options.backoff_initial_s
            try:
                await self._pump()
                await self.disconnect()
                self.connected = False
                return
            except Exception as exc:
                self.last_error = one_line(exc)
                logger.warning("publish %s: connection lost (%s); reconnecting", self.url, self.last_error)
                self.connected = False
                failures = 1
                await self._disconnect_quietly()
                await self._sleep(delay)

    async def _pump(self) -> None:
        """Send queued messages until closing with an empty queue; raises when the connection fails."""
        while True:
            if not self.queue:
                if self._closing.is_set():
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self.queue.popleft() for _ in range(min(len(self.queue), self.options.batch_messages))]
            try:
                await asyncio.wait_for(self.send(batch), self.send_limit_s)
            except self.transient:
                self._put_back(batch)
                raise
            except Exception as exc:  # refused by the broker (e.g. the key holds another type): drop, go on
                self.dropped += len(batch)
                if type(exc) is not self._last_refusal:  # one line per kind of refusal, not one per batch
                    logger.warning("publish %s: %d messages refused (%s)", self.url, len(batch), one_line(exc))
                self._last_refusal, self.last_error = type(exc), one_line(exc)
                continue
            self.published += len(batch)

    def _put_back(self, batch: list[dict]) -> None:
        """A batch whose send failed goes back to the front, to be sent after reconnecting (still bounded)."""
        self.queue.extendleft(reversed(batch))
        while len(self.queue) > self.options.queue_messages:
            self.queue.popleft()
            self.dropped += 1

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _disconnect_quietly(self) -> None:
        try:
            await asyncio.wait_for(self.disconnect(), 1.0)
        except Exception as exc:
            logger.debug("publish %s: disconnect: %s", self.url, exc)

    # -- per broker --------------------------------------------------------------------------------------

    @property
    def connect_limit_s(self) -> float:
        """Outer limit on ``connect``; a client that enforces its own timeout gets a margin above it."""
        return self.options.connect_timeout_s

    @property
    def send_limit_s(self) -> float:
        return self.options.send_timeout_s

    async def connect(self) -> None:
        raise NotImplementedError

    async def send(self, batch: list[dict]) -> None:
        raise NotImplementedError

    async def disconnect(self) -> None:
        raise NotImplementedError


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
