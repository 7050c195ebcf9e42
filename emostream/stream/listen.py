"""``/listen``: clients stream their own audio to the daemon and get their own scores back, many at once.

Protocol (README "Audio in: /listen"): the first message is text JSON ``{"type": "start", "sample_rate_hz":
16000, "format": "s16le" | "f32le", "channels": 1}`` (optional ``hop_s``, ``smoothing``, ``classes``, ``stream_id``);
the daemon answers ``hello``; then binary messages of raw interleaved PCM (whole frames, any count up to
the size limit); the daemon sends ``scores`` per window (tagged with ``stream_id``), ``utterance`` when a
speech segment ends, and after ``{"type": "stop"}`` the last windows, ``end``, and close 1000.
A mistake is one ``error`` line (with its close code) and the close.

Each stream owns an ``EmotionPipeline`` (resampler, log-Mel stream, smoothing, gate,
utterances); all share one ``EmotionModel``. Analysis never runs on the event loop: a small thread pool takes
one slice of one stream per job (``slice_s`` of audio at the default hop; as many windows, so less audio, at a
shorter one), and a stream with more waiting goes back to the end of the pool's queue, so a stream that sends a
burst, or asks for many windows, cannot hold the others back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
from websockets.exceptions import ConnectionClosed

from emostream import messages as msg
from emostream.confidence import bands_for
from emostream.inference.model import EmotionModel
from emostream.inference.pipeline import (
    HOP_RANGE_S,
    INPUT_CHANNELS_RANGE,
    INPUT_RATE_RANGE_HZ,
    SMOOTHING_RANGE,
    EmotionPipeline,
    PipelineConfig,
    checked_classes,
)
from emostream.options import check_range
from emostream.stream.guard import TokenBucket
from emostream.stream.sources import PCM_FORMATS

logger = logging.getLogger(__name__)

FORMATS = PCM_FORMATS

# Close codes (RFC 6455 §7.4.1) for each kind of mistake; the error line carries the same number.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # the daemon is stopping
CLOSE_BAD_DATA = 1007  # binary data that is not whole frames of the announced format
CLOSE_POLICY = 1008  # bad start message, out of range, audio before start, faster than allowed, not reading
CLOSE_TOO_BIG = 1009  # one message over the size limit
CLOSE_INTERNAL = 1011  # analysis failed
CLOSE_TRY_LATER = 1013  # too many streams, or analysis fell behind

MESSAGES_PER_S_RANGE = (10.0, 100_000.0)  # a 128-frame AudioWorklet block sent as is: 375/s at 48 kHz, 750 at 96



@dataclass(frozen=True)
class ListenConfig:
    """Limits of ``/listen``; every one has a range (``check``). Units in the names."""

    max_streams: int = 64
    max_realtime_factor: float = 2.0  # audio seconds per wall second a stream may send on average
    realtime_burst_s: float = 1.0  # audio a stream may send ahead of that budget (a buffered start)
    max_message_bytes: int = 1 << 20  # one binary message; larger → close 1009
    max_messages_per_s: float = 2000.0  # messages a stream may send per second on average (bursts of one second's)
    start_timeout_s: float = 10.0  # time to send the start message
    max_pending_s: float = 10.0  # audio received but not yet analysed; beyond → close 1013
    max_unsent_messages: int = 256  # results the client has not read; beyond → close 1008
    send_buffer_bytes: int = 65536  # kernel send buffer per stream, so unread results pile up where they are counted
    workers: int = 0  # analysis threads; 0 = one per CPU core
    slice_s: float = 0.5  # most audio one job analyses before the next stream's turn, at the default hop
    min_rate_hz: int = 8000
    max_rate_hz: int = 192000
    max_channels: int = 8
    min_hop_s: float = 0.05
    max_hop_s: float = 2.0
    broadcast: bool = False  # also publish every stream's scores (tagged) to the broadcast subscribers

    def check(self) -> None:
        check_range("--max-streams", self.max_streams, 1, 10000)
        check_range("--max-realtime-factor", self.max_realtime_factor, 1.0, 1000.0)
        check_range("realtime_burst_s", self.realtime_burst_s, 0.0, 600.0)
        check_range("--max-listen-message-bytes", self.max_message_bytes, 1024, 16 << 20)
        check_range("--max-listen-messages-per-s", self.max_messages_per_s, *MESSAGES_PER_S_RANGE)
        check_range("start_timeout_s", self.start_timeout_s, 0.1, 300.0)
        check_range("max_pending_s", self.max_pending_s, 1.0, 600.0)
        check_range("max_unsent_messages", self.max_unsent_messages, 8, 100000)
        check_range("send_buffer_bytes", self.send_buffer_bytes, 4096, 64 << 20)
        check_range("--listen-workers", self.workers, 0, 256)
        check_range("slice_s", self.slice_s, 0.05, 10.0)
        # The operator's limits for clients lie inside what the pipeline itself accepts.
        check_range("min_rate_hz", self.min_rate_hz, *INPUT_RATE_RANGE_HZ)
        check_range("max_rate_hz", self.max_rate_hz, self.min_rate_hz, INPUT_RATE_RANGE_HZ[1])
        check_range("max_channels", self.max_channels, *INPUT_CHANNELS_RANGE)
        check_range("min_hop_s", self.min_hop_s, *HOP_RANGE_S)
        check_range("max_hop_s", self.max_hop_s, self.min_hop_s, HOP_RANGE_S[1])

    def worker_count(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)


class ListenError(Exception):
    """A client's mistake: ``str(self)`` is the one-line error, ``code`` the close code."""

    def __init__(self, text: str, code: int = CLOSE_POLICY):
        super().__init__(text)
        self.code = code


@dataclass(frozen=True)
class StreamSpec:
    """What a start message asked for, checked."""

    stream_id: str
    sample_rate_hz: int
    sample_format: str
    channels: int
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    @property
    def frame_bytes(self) -> int:
        return self.channels * FORMATS[self.sample_format].itemsize


START_FIELDS = ("type", "sample_rate_hz", "format", "channels", "hop_s", "smoothing", "classes", "stream_id")


def _number(message: dict, key: str, kind=float):
    """The field as ``kind``; ``ListenError`` for anything else, a 400-digit number included (once an
    OverflowError that closed the stream without a word)."""
    value = message[key]
    shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:37]}..."
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (kind is int and isinstance(value, float) and not value.is_integer()):
        raise ListenError(f"start: {key} must be {'an integer' if kind is int else 'a number'}, got {shown}")
    if abs(value) > 2**53:  # also 1e300 as an integer, and infinities
        raise ListenError(f"start: {key} {shown} out of range")
    return kind(value)


def parse_start(message, defaults: PipelineConfig, config: ListenConfig, stream_id: str) -> StreamSpec:
    """The checked ``StreamSpec`` of a decoded start message; ``ListenError`` (1008) for anything else."""
    if not isinstance(message, dict) or message.get("type") != "start":
        kind = message.get("type") if isinstance(message, dict) else type(message).__name__
        raise ListenError(f"expected a start message first, got {kind!r}")
    unknown = sorted(set(message) - set(START_FIELDS))
    if unknown:
        raise ListenError(f"start: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(START_FIELDS[1:])}")
    for key in ("sample_rate_hz", "format"):
        if key not in message:
            raise ListenError(f"start: {key} is required")
    rate = _number(message, "sample_rate_hz", int)
    if not config.min_rate_hz <= rate <= config.max_rate_hz:
        raise ListenError(f"start: sample_rate_hz {rate} out of range [{config.min_rate_hz}, {config.max_rate_hz}]")
    sample_format = message["format"]
    if not isinstance(sample_format, str) or sample_format not in FORMATS:
        shown = repr(sample_format)[:40]
        raise ListenError(f"start: format {shown} not supported; use one of {', '.join(FORMATS)}")
    channels = _number(message, "channels", int) if "channels" in message else 1
    if not 1 <= channels <= config.max_channels:
        raise ListenError(f"start: channels {channels} out of range [1, {config.max_channels}]")
    pipeline = defaults
    if "hop_s" in message:
        hop_s = _number(message, "hop_s")
        if not config.min_hop_s <= hop_s <= config.max_hop_s:
            raise ListenError(f"start: hop_s {hop_s} out of range [{config.min_hop_s}, {config.max_hop_s}]")
        pipeline = replace(pipeline, hop_s=hop_s)
    if "smoothing" in message:
        smoothing = _number(message, "smoothing")
        if not SMOOTHING_RANGE[0] <= smoothing < SMOOTHING_RANGE[1]:
            raise ListenError(f"start: smoothing {smoothing} out of range [{SMOOTHING_RANGE[0]:g}, "
                              f"{SMOOTHING_RANGE[1]:g})")
        pipeline = replace(pipeline, smoothing=smoothing)
    if message.get("classes", ...) is None:  # every class of the model, whatever the daemon's --classes
        pipeline = replace(pipeline, classes=None)
    elif "classes" in message:  # names the model lacks are refused when the stream's pipeline is built
        if not isinstance(message["classes"], list):
            raise ListenError("start: classes must be a list of class names (or null: every class)")
        try:
            pipeline = replace(pipeline, classes=checked_classes(message["classes"]))
        except ValueError as exc:
            raise ListenError(f"start: {exc}") from None
    if "stream_id" in message:
        stream_id = message["stream_id"]
        if not isinstance(stream_id, str) or not msg.STREAM_ID.fullmatch(stream_id):
            raise ListenError(f"start: stream_id must be {msg.STREAM_ID_RULE}")
    return StreamSpec(stream_id, rate, sample_format, channels, pipeline)


def decode_pcm(data: bytes, spec: StreamSpec) -> np.ndarray:
    """(frames, channels) float32 of one binary message; ``ListenError`` (1007) unless whole frames."""
    if len(data) % spec.frame_bytes:
        raise ListenError(f"{len(data)} bytes is not a whole number of {spec.sample_format} frames of "
                          f"{spec.channels} channel(s) ({spec.frame_bytes} bytes each)", CLOSE_BAD_DATA)
    samples = np.frombuffer(data, dtype=FORMATS[spec.sample_format]).reshape(-1, spec.channels)
    if spec.sample_format == "s16le":
        return samples.astype(np.float32) * np.float32(1 / 32768)
    return samples.astype(np.float32)


class RealtimeLimiter:
    """Audio seconds received may not exceed ``factor`` × wall seconds since the stream's audio began, plus a burst.

    The first message's audio, up to ``OPENING_S``, counts as recorded before it arrived (sent at ``factor`` × real
    time), so a client may open with a buffered chunk; before, a 2 s first message at exactly real time was refused.
    """

    OPENING_S = 5.0  # the most buffered audio a stream's first message may carry beyond the burst

    def __init__(self, factor: float, burst_s: float, clock: Callable[[], float] = time.monotonic):
        self.factor, self.burst_s, self.clock = factor, burst_s, clock
        self.started: float | None = None
        self.audio_s = 0.0

    def admit(self, audio_s: float) -> None:
        now = self.clock()
        if self.started is None:
            self.started = now - min(audio_s, self.OPENING_S) / self.factor
        self.audio_s += audio_s
        allowed = self.factor * (now - self.started) + self.burst_s
        if self.audio_s > allowed:
            raise ListenError(f"sending faster than {self.factor:g}x real time ({self.audio_s:.2f} s of audio "
                              f"in {now - self.started:.2f} s)")


def slice_frames(slice_s: float, sample_rate_hz: int, hop_s: float,
                 reference_hop_s: float = PipelineConfig.hop_s) -> int:
    """Input frames one job of a stream analyses: ``slice_s`` of audio at the default hop, less at a shorter one.

    A turn's cost is the model runs it makes, one per hop, not its seconds of audio: a stream at hop 0.05 s makes
    five times the windows of one at 0.25 s from the same audio. So its slice is cut to the same number of
    windows, and streams that ask for short hops cannot take more of the pool per turn than the others."""
    scale = min(1.0, hop_s / reference_hop_s)
    return max(1, int(slice_s * scale * sample_rate_hz))


class ListenSession:
    """One client's stream: its pipeline and queues. Analysis runs in the pool, one job at a time."""

    def __init__(self, server: ListenServer, websocket, spec: StreamSpec):
        self.server, self.websocket, self.spec = server, websocket, spec
        self.pipeline = EmotionPipeline(server.model, spec.pipeline, spec.sample_rate_hz, spec.channels)
        self.limiter = RealtimeLimiter(server.config.max_realtime_factor, server.config.realtime_burst_s)
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue = asyncio.Queue()  # messages, then None after the last one
        self.abort: asyncio.Future = self.loop.create_future()  # set to a ListenError found off the reader
        self.abort.add_done_callback(lambda f: f.cancelled() or f.exception())  # read even if nobody waits
        self.lock = threading.Lock()
        self.pending: deque[np.ndarray] = deque()  # guarded by lock
        self.pending_frames = 0
        self.scheduled = False
        self.finishing = False
        self.closed = False  # the client is gone or was refused: results are dropped
        self.windows = self.utterances = 0
        self.frames_in = 0
        self.failure: str | None = None

    # -- event-loop side -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        frames = decode_pcm(data, self.spec)
        if not len(frames):
            return
        self.limiter.admit(len(frames) / self.spec.sample_rate_hz)
        self.frames_in += len(frames)
        with self.lock:
            if self.pending_frames + len(frames) > self.server.config.max_pending_s * self.spec.sample_rate_hz:
                raise ListenError("analysis fell behind this stream; try again later", CLOSE_TRY_LATER)
            self.pending.append(frames)
            self.pending_frames += len(frames)
        self._schedule()

    def finish(self) -> None:
        """``stop``: analyse what is left (flushing the resampler), then end."""
        with self.lock:
            self.finishing = True
        self._schedule()

    def _schedule(self) -> None:
        with self.lock:
            if self.scheduled or self.closed:
                return
            self.scheduled = True
        self.server.executor.submit(self._job)

    def _deliver(self, messages: list) -> None:
        if self.closed:
            return
        for m in messages:
            self.outbox.put_nowait(m)
            if m is not None and self.server.on_broadcast is not None and m.get("type") in ("scores", "utterance"):
                self.server.on_broadcast(m)
        limit = self.server.config.max_unsent_messages
        if self.outbox.qsize() > limit and not self.abort.done():
            self.closed = True
            self.abort.set_exception(ListenError(f"client is not reading its results ({limit} unsent)"))

    # -- pool side ---------------------------------------------------------------------------------

    def _job(self) -> None:
        """Analyse one slice of this stream's audio (``slice_frames``); requeue behind the other streams if more
        waits."""
        limit = slice_frames(self.server.config.slice_s, self.spec.sample_rate_hz, self.pipeline.hop_s)
        with self.lock:
            taken, n = [], 0
            while self.pending and n < limit:
                chunk = self.pending.popleft()
                if n + len(chunk) > limit:  # a big message is analysed a slice at a time too
                    self.pending.appendleft(chunk[limit - n :])
                    chunk = chunk[: limit - n]
                taken.append(chunk)
                n += len(chunk)
            self.pending_frames -= n
            last = self.finishing and not self.pending
        out: list[dict] = []
        try:
            if not self.closed:
                if taken:
                    out += self._analyse(np.concatenate(taken) if len(taken) > 1 else taken[0], False)
                if last:
                    out += self._tagged(self.pipeline.finish())
                    out.append(msg.tagged(msg.end(windows=self.windows, utterances=self.utterances,
                                                  duration_s=self.frames_in / self.spec.sample_rate_hz,
                                                  reason="client stopped"), self.spec.stream_id))
        except Exception as exc:  # one stream's failure ends that stream only
            logger.exception("stream %s: analysis failed", self.spec.stream_id)
            self.failure = f"analysis failed: {type(exc).__name__}: {exc}"
            last = True
        with self.lock:  # more audio, or a stop that came in while this job ran: another turn
            again = (bool(self.pending) or self.finishing) and not last and not self.closed
            self.scheduled = again
        if out or last:
            self.loop.call_soon_threadsafe(self._deliver, out + ([None] if last else []))
        if again:
            self.server.executor.submit(self._job)

    def _analyse(self, frames: np.ndarray, last: bool) -> list[dict]:
        return self._tagged(self.pipeline.process(frames, last=last))

    def _tagged(self, messages: list[dict]) -> list[dict]:
        """The pipeline's scores and utterances (its own, as the daemon and the API send them), counted and tagged."""
        for m in messages:
            kind = m.get("type")
            self.windows += kind == "scores"
            self.utterances += kind == "utterance"
        return [msg.tagged(m, self.spec.stream_id) for m in messages]


class ListenServer:
    """The ``/listen`` endpoint: stream count, shared model and worker pool; lives on the daemon's event loop."""

    def __init__(self, model: EmotionModel, pipeline_defaults: PipelineConfig, config: ListenConfig,
                 hello: dict, on_broadcast: Callable[[dict], None] | None = None):
        config.check()
        self.model, self.pipeline_defaults, self.config = model, pipeline_defaults, config
        self.hello = hello  # the daemon's hello; each stream's adds its own settings
        self.on_broadcast = on_broadcast
        self.executor = ThreadPoolExecutor(config.worker_count(), thread_name_prefix="emostream-listen")
        self.sessions: dict[str, ListenSession] = {}
        self.accepted = self.refused = 0
        self._ids = itertools.count(1)

    def _free_id(self) -> str:
        """``s1``, ``s2`` … skipping ids in use, which a client may have chosen itself."""
        while (stream_id := f"s{next(self._ids)}") in self.sessions:
            pass
        return stream_id

    def health(self) -> dict:
        return {"streams": len(self.sessions), "max_streams": self.config.max_streams,
                "accepted": self.accepted, "refused": self.refused}

    def arm_frame_limit(self, connection) -> None:
        """Called from ``process_request`` for /listen: this connection takes messages up to the listen limit,
        and one over it gets the error line before websockets' own close 1009."""
        protocol = connection.protocol
        protocol.max_message_size = self.config.max_message_bytes
        limit = self.config.max_message_bytes
        original_fail = protocol.fail

        def fail(code, reason: str = "") -> None:
            if int(code) == CLOSE_TOO_BIG and protocol.state.name == "OPEN":
                protocol.send_text(msg.encode(msg.error(f"message over the {limit} byte limit ({reason})",
                                                        code=CLOSE_TOO_BIG)).encode())
            original_fail(code, reason)

        protocol.fail = fail

    async def serve(self, websocket) -> None:
        """The whole life of one /listen connection."""
        peer = websocket.remote_address
        sock = websocket.transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.send_buffer_bytes)
        session = None
        try:
            if len(self.sessions) >= self.config.max_streams:
                raise ListenError(f"too many streams ({self.config.max_streams}); try again later", CLOSE_TRY_LATER)
            session = await self._start(websocket)
            logger.info("stream %s from %s: %s %d Hz, %d ch (%d streams now)", session.spec.stream_id, peer,
                        session.spec.sample_format, session.spec.sample_rate_hz, session.spec.channels,
                        len(self.sessions))
            await self._run(session)
        except ListenError as exc:
            self.refused += session is None
            logger.info("stream %s from %s: %s (close %d)", session.spec.stream_id if session else "-", peer,
                        exc, exc.code)
            await self._refuse(websocket, str(exc), exc.code)
        except (ConnectionClosed, OSError) as exc:  # the client went away: nobody to tell
            logger.debug("stream from %s: %s", peer, exc)
        except Exception as exc:  # a defect here: the client hears of it (1011), the other streams go on
            logger.exception("stream %s from %s failed", session.spec.stream_id if session else "-", peer)
            await self._refuse(websocket, f"internal error: {type(exc).__name__}", CLOSE_INTERNAL)
        finally:
            if session is not None:
                session.closed = True
                self.sessions.pop(session.spec.stream_id, None)
                logger.info("stream %s gone (code %s; %d windows, %.1f s of audio; %d streams left)",
                            session.spec.stream_id, websocket.close_code, session.windows,
                            session.frames_in / session.spec.sample_rate_hz, len(self.sessions))

    async def _refuse(self, websocket, text: str, code: int) -> None:
        """The error line, then the close; a client that does not read gets its connection dropped."""
        async def say():
            await websocket.send(msg.encode(msg.error(text, code=code)))
            await websocket.close(code, text.encode()[:120].decode(errors="ignore"))

        try:
            await asyncio.wait_for(say(), 2.0)
        except Exception as exc:  # the client may be gone already, or not reading
            logger.debug("refusal not delivered: %s", exc)
            websocket.transport.abort()

    async def _start(self, websocket) -> ListenSession:
        try:
            raw = await asyncio.wait_for(websocket.recv(), self.config.start_timeout_s)
        except asyncio.TimeoutError:  # not the builtin on Python 3.10
            raise ListenError(f"no start message within {self.config.start_timeout_s:g} s") from None
        if isinstance(raw, bytes):
            raise ListenError("audio before start: send the start message (text JSON) first")
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):  # also a 5000-digit integer, or nesting 1000 deep
            raise ListenError("start: malformed JSON") from None
        spec = parse_start(message, self.pipeline_defaults, self.config, self._free_id())
        if spec.stream_id in self.sessions:
            raise ListenError(f"start: stream_id {spec.stream_id!r} is already streaming")
        if len(self.sessions) >= self.config.max_streams:  # others started while this one was reading
            raise ListenError(f"too many streams ({self.config.max_streams}); try again later", CLOSE_TRY_LATER)
        try:
            session = ListenSession(self, websocket, spec)
        except ValueError as exc:
            raise ListenError(f"start: {exc}") from None
        if self.on_broadcast is not None and session.pipeline.labels != self.hello["labels"]:
            # the broadcast subscribers were told the daemon's labels: every score they get must hold exactly those
            raise ListenError("start: classes must be the daemon's while it broadcasts listeners' scores "
                              f"({', '.join(self.hello['labels'])})")
        self.sessions[spec.stream_id] = session
        self.accepted += 1
        hello = {**self.hello, "labels": session.pipeline.labels, "hop_s": round(session.pipeline.hop_s, 6),
                 "confidence_bands": bands_for(session.pipeline.labels, self.model.labels),
                 "smoothing": spec.pipeline.smoothing,
                 "source": f"listen {spec.sample_format} {spec.sample_rate_hz} Hz, {spec.channels} ch",
                 "input": {"sample_rate_hz": spec.sample_rate_hz, "format": spec.sample_format,
                           "channels": spec.channels},
                 "limits": {"max_message_bytes": self.config.max_message_bytes,
                            "max_realtime_factor": self.config.max_realtime_factor}}
        try:
            await websocket.send(msg.encode(msg.tagged(hello, spec.stream_id)))
        except BaseException:
            self.sessions.pop(spec.stream_id, None)
            raise
        return session

    async def _run(self, session: ListenSession) -> None:
        sender = asyncio.create_task(self._send(session))
        reader = asyncio.create_task(self._read(session))
        try:
            done, _ = await asyncio.wait([sender, reader, session.abort], return_when=asyncio.FIRST_COMPLETED)
            for task in (reader, session.abort, sender):
                if task in done and task.exception() is not None:
                    raise task.exception()
            if reader in done:  # the client went away without stop
                return
            await asyncio.wait([sender, session.abort], return_when=asyncio.FIRST_COMPLETED)
            if session.abort.done():
                raise session.abort.exception()
            sender.result()  # stop received: the sender ended after ``end``
        finally:
            for task in (sender, reader):
                task.cancel()
        if session.failure:
            raise ListenError(session.failure, CLOSE_INTERNAL)
        await session.websocket.close(CLOSE_NORMAL, "end of stream")

    async def _read(self, session: ListenSession) -> None:
        """Each message costs the shared event loop a little whatever it holds: tiny ones sent without pause (a
        million 2-byte messages in 8 s) delayed every other client's scores by ~0.35 s, so messages are counted."""
        pace = TokenBucket(self.config.max_messages_per_s, max(10, int(self.config.max_messages_per_s)))
        async for raw in session.websocket:
            if not pace.allow():
                raise ListenError(f"more than {self.config.max_messages_per_s:g} messages per second; send "
                                  "fewer, larger ones (20-100 ms of audio each)")
            if isinstance(raw, bytes):
                session.feed(raw)
                continue
            try:
                message = json.loads(raw)
            except (ValueError, RecursionError):
                raise ListenError("malformed JSON text message") from None
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "stop":
                session.finish()
                await asyncio.Future()  # read nothing more: the sender finishes the stream, then the close
            elif kind == "start":
                raise ListenError("start sent twice")
            else:
                raise ListenError(f"unknown message type {kind!r}; expected binary audio or 'stop'")
        session.closed = True  # the client went away without stop

    async def _send(self, session: ListenSession) -> None:
        while True:
            m = await session.outbox.get()
            if m is None:  # the job that flushed the stream (or failed) put this last
                return
            await session.websocket.send(msg.encode(m))

    async def shutdown(self) -> None:
        """Daemon stopping: every stream gets the error line and close 1001 (going away); queued analysis is dropped."""
        sessions = list(self.sessions.values())
        for session in sessions:
            session.closed = True
            if not session.abort.done():
                session.abort.set_exception(ListenError("daemon shutting down", CLOSE_GOING_AWAY))
        deadline = time.monotonic() + 3.0
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.executor.shutdown(wait=False, cancel_futures=True)


class NoSource:
    """``--listen-only``: no local audio; the daemon serves /listen (and broadcasts) until stopped."""

    def __init__(self, sample_rate_hz: int):
        self.sample_rate_hz, self.channels = sample_rate_hz, 1
        self.description = "none (listen only)"

    def run(self, ring, stop: threading.Event) -> None:
        stop.wait()
        ring.close()
