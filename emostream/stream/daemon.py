"""``emostream-daemon``: audio source → ring buffer → log-Mel windows → onnxruntime → WebSocket broadcast.

The source runs on its own thread (or PortAudio's), analysis on another; results reach the event loop
through ``loop.call_soon_threadsafe`` and are fanned out by ``ScoreBroadcaster``. ``/healthz`` answers
plain HTTP on the same port. SIGINT/SIGTERM stop the audio, deliver what is queued, close subscribers
with code 1000 and exit 0. Clients may also send their own audio to ``/listen`` on the same port
(``emostream.stream.listen``); ``--certfile``/``--keyfile`` serve it all over TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, urlsplit

from emostream import __version__
from emostream import messages as msg
from emostream.confidence import bands_for
from emostream.inference.model import THREADS_RANGE, EmotionModel, InferenceConfig, ModelError
from emostream.inference.pipeline import (
    HOP_RANGE_S,
    INPUT_CHANNELS_RANGE,
    INPUT_RATE_RANGE_HZ,
    SILENCE_RANGE_DBFS,
    SMOOTHING_RANGE,
    EmotionPipeline,
    PipelineConfig,
    add_classes_argument,
)
from emostream.inference.vad import VadUnavailable, add_vad_arguments, vad_from_args
from emostream.options import DefaultsHelpFormatter, add_model_option, add_ranged, changed_flags, check_range
from emostream.paths import DASHBOARD, DEFAULT_SAMPLE
from emostream.stream.broadcast import ScoreBroadcaster
from emostream.stream.guard import TOKEN_ENV, HostGuard, TokenBucket, resolve_token
from emostream.stream.listen import MESSAGES_PER_S_RANGE, ListenConfig, ListenServer, NoSource
from emostream.stream.ring_buffer import RingBuffer
from emostream.stream.sinks import PublishContext, SinkOptions, check_stream_id, default_stream_id, make_sinks
from emostream.stream.sources import FileSource, MicrophoneSource, SourceError, StdinSource
from emostream.stream.worker import AnalysisWorker

logger = logging.getLogger(__name__)

VERSION = __version__


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    queue_messages: int = 64  # per subscriber; the oldest is dropped (and counted) beyond this
    max_client_message_bytes: int = 4096
    max_subscribers: int = 2000
    drain_on_exit_s: float = 2.0
    ring_seconds: float = 10.0  # audio the ring buffer holds before overrunning
    send_buffer_bytes: int = 65536  # kernel send buffer per subscriber (loopback autotunes to MBs otherwise)
    write_limit_bytes: int = 32768  # websockets' own buffer per subscriber before a send waits
    wait_for_subscribers: int = 0  # hold the source until this many have connected (tests, benchmarks)
    token: str | None = None  # required (query ?token= or "Authorization: Bearer") when set
    allowed_origins: tuple[str, ...] = ()  # browser origins allowed besides the daemon's own page
    allowed_hosts: tuple[str, ...] = ()  # Host names answered besides loopback, IP literals and the bound host
    requests_per_s: float = 10.0  # client messages (ping, status) per connection, on average
    request_burst: int = 40  # … and in one burst; beyond, the connection is closed with 1008

    certfile: str | None = None  # TLS (wss:// and https://) when set, with keyfile
    keyfile: str | None = None

    def __post_init__(self):
        # Every number has a range: --queue 0 once made every window raise on a stuck client's empty queue.
        check_range("port", self.port, 0, 65535)
        check_range("queue_messages", self.queue_messages, 1, 100_000)
        check_range("max_client_message_bytes", self.max_client_message_bytes, 64, 2**20)
        check_range("max_subscribers", self.max_subscribers, 1, 100_000)
        check_range("drain_on_exit_s", self.drain_on_exit_s, 0, 60)
        check_range("ring_seconds", self.ring_seconds, 0.5, 600)
        check_range("send_buffer_bytes", self.send_buffer_bytes, 0, 2**26)
        check_range("write_limit_bytes", self.write_limit_bytes, 1024, 2**26)
        check_range("wait_for_subscribers", self.wait_for_subscribers, 0, 100_000)
        check_range("requests_per_s", self.requests_per_s, 0, 10_000, low_open=True)
        check_range("request_burst", self.request_burst, 1, 100_000)
        if self.token is not None and not self.token:
            raise ValueError("the token is empty")
        if self.token is not None and not (self.token.isascii() and self.token.isprintable()):
            # it travels in URLs and HTTP headers, which websockets reads as Latin-1: beyond ASCII a client's
            # header and its query would not agree on the bytes (the value itself never appears in a message)
            raise ValueError("the token must be printable ASCII (it travels in URLs and HTTP headers)")

    def check(self) -> None:
        """Refuse to expose scores beyond this machine without a token; keep counts in range."""
        if not 0 <= self.wait_for_subscribers <= self.max_subscribers:
            raise ValueError(f"--wait-for-subscribers must be in [0, {self.max_subscribers}] (--max-subscribers)")
        if self.host not in ("127.0.0.1", "localhost", "::1") and not self.token:
            raise ValueError(f"binding {self.host} exposes the scores beyond this machine: give a token with "
                             "--token-file PATH or $EMOSTREAM_TOKEN (or --token SECRET); clients add ?token=SECRET "
                             "or an 'Authorization: Bearer SECRET' header")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("TLS needs both --certfile and --keyfile")

    def ssl_context(self):
        """The server's TLS context, or None for plain ws:// and http://."""
        if self.certfile is None:
            return None
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load TLS certificate {self.certfile} / key {self.keyfile}: {exc}") from None
        return context


def _request_token(request) -> str | None:
    """``?token=`` (percent-decoded only: a '+' in a base64 token is a plus, not a space) or a Bearer header."""
    for pair in urlsplit(request.path).query.split("&"):
        name, _, value = pair.partition("=")
        if unquote(name) == "token" and value:  # an empty one leaves the Authorization header to speak
            return unquote(value)
    auth = request.headers.get("Authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else None


def model_info(contract) -> dict:
    """What the hello message says about the model."""
    return {"run_id": contract.run_id, "test_accuracy": contract.test_accuracy,
            "feature_version": contract.feature_version, "input_versions": list(contract.inputs)}


class EmotionDaemon:
    """One source, one model, one WebSocket server. ``run`` returns the process exit code."""

    def __init__(self, model: EmotionModel, source, pipeline_config: PipelineConfig = PipelineConfig(),
                 server_config: ServerConfig = ServerConfig(), listen_config: ListenConfig | None = ListenConfig(),
                 sinks=(), stream_id: str | None = None):
        self.model, self.source = model, source
        self.sinks = list(sinks)  # emostream.stream.sinks: each message is offered to each, never awaited
        self.stream_id = check_stream_id(stream_id) if stream_id is not None else None
        self.server_config = server_config
        self.pipeline = EmotionPipeline(model, pipeline_config, source.sample_rate_hz, source.channels)
        self.ring = RingBuffer(int(server_config.ring_seconds * source.sample_rate_hz), source.channels)
        self.broadcaster = ScoreBroadcaster(server_config.queue_messages, server_config.write_limit_bytes)
        self.port: int | None = None
        self.started_at = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._source_stop = threading.Event()
        self._enough_subscribers: asyncio.Event | None = None
        self._dashboard_html: str | None = None
        c = model.contract
        self.host_guard = HostGuard(server_config.host, server_config.allowed_hosts)
        self.hello = {
            "type": "hello",
            "version": VERSION,
            "labels": self.pipeline.labels,  # what the scores hold: the model's classes, or those --classes kept
            "sample_rate_hz": c.sample_rate_hz,
            "hop_s": round(self.pipeline.hop_s, 6),
            "window_s": round(c.feature_config().window_s, 6),
            "window_frames": c.window_frames,
            "n_mels": c.n_mels,
            "silence_dbfs": pipeline_config.silence_dbfs,
            "smoothing": pipeline_config.smoothing,
            "vad": None if pipeline_config.vad is None else pipeline_config.vad.describe(),
            "source": source.description,
            "model": model_info(c),
            "confidence_bands": bands_for(self.pipeline.labels, model.labels),  # the dashboard's words
        }
        self.listener = None if listen_config is None else ListenServer(
            model, pipeline_config, listen_config, self.hello,
            on_broadcast=(lambda m: self.broadcaster.publish(m, False)) if listen_config.broadcast else None)

    # -- event-loop side -------------------------------------------------------------------------

    def health(self) -> dict:
        return {
            "status": "ok",
            "uptime_s": round(time.time() - self.started_at, 1),
            "source": self.source.description,
            "subscribers": len(self.broadcaster.subscribers),
            "windows": self.broadcaster.published,
            "overrun_frames": self.ring.overrun_frames,
            "input_overflows": getattr(self.source, "input_overflows", 0),  # the sound card's own (microphone)
            "nonfinite_samples": self.pipeline.nonfinite_samples,
            "clipped_samples": self.pipeline.clipped_samples,
            "dropped_to_subscribers": self.broadcaster.dropped_total,
            "publish_ms": self.broadcaster.publish_ms(),
            "dropped_to_publish": sum(sink.dropped for sink in self.sinks),
            "publish": [sink.stats() for sink in self.sinks],
            **({"listen": self.listener.health()} if self.listener is not None else {}),
        }

    def fan_out(self, message: dict, is_window: bool | None = None) -> None:
        """Event loop: the WebSocket subscribers, then each sink's queue (which only appends)."""
        self.broadcaster.publish(message, is_window)
        for sink in self.sinks:
            sink.offer(message)

    def respond_json(self, connection, status: HTTPStatus, body: dict):
        """Strict JSON (no NaN/Infinity) with its proper content type."""
        response = connection.respond(status, msg.encode(body) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        response.headers["Cache-Control"] = "no-store"
        return response

    def process_request(self, connection, request):
        method = request.method
        if method not in ("GET", "HEAD"):
            response = connection.respond(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed; GET or HEAD\n")
            response.headers["Allow"] = "GET, HEAD"
            return response
        response = self._route(connection, request)
        if response is not None and method == "HEAD":  # the GET's headers, Content-Length included; no body
            response.body = b""
        return response

    def _route(self, connection, request):
        path = request.path.split("?")[0]
        cfg = self.server_config
        if not self.host_guard.allows(request.headers.get("Host")):
            # DNS rebinding: a foreign name pointed at this address; its Origin would match its own Host.
            return connection.respond(HTTPStatus.MISDIRECTED_REQUEST, "unknown Host; see --allowed-host\n")
        # bytes: compare_digest refuses str beyond ASCII, which a stranger's query or header may hold
        sent = (_request_token(request) or "").encode("utf-8", "surrogateescape")
        authorised = not cfg.token or hmac.compare_digest(sent, cfg.token.encode())
        if path == "/healthz":  # bare liveness for anyone; the details (source, counters) only with the token
            return self.respond_json(connection, HTTPStatus.OK, self.health() if authorised else {"status": "ok"})
        if path == "/favicon.ico":  # browsers ask on every visit; 204 keeps their console clean
            return connection.respond(HTTPStatus.NO_CONTENT, "")
        if not authorised:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in cfg.allowed_origins and \
                urlsplit(origin).netloc != request.headers.get("Host", ""):
            # A web page elsewhere must not read what this microphone hears.
            return connection.respond(HTTPStatus.FORBIDDEN, f"origin {origin} not allowed\n")
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if not upgrade and (path.endswith("/") or path.endswith("/index.html")):
            return self.dashboard(connection)
        if self._stop is not None and self._stop.is_set():
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "daemon shutting down\n")
        if path.endswith("/listen"):
            if self.listener is None:
                return connection.respond(HTTPStatus.NOT_FOUND, "this daemon does not take audio (--no-listen)\n")
            self.listener.arm_frame_limit(connection)
            return None  # the stream count is checked after the handshake, with an error line
        if len(self.broadcaster.subscribers) >= self.server_config.max_subscribers:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many subscribers\n")
        return None

    def dashboard(self, connection):
        """The live page: one self-contained HTML file that opens a WebSocket back to where it came from."""
        if self._dashboard_html is None:
            self._dashboard_html = DASHBOARD.read_text()
        response = connection.respond(HTTPStatus.OK, self._dashboard_html)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        response.headers["Cache-Control"] = "no-cache"
        return response

    async def handle(self, websocket) -> None:
        if self.listener is not None and websocket.request.path.split("?")[0].endswith("/listen"):
            return await self.listener.serve(websocket)
        peer = websocket.remote_address
        sock = websocket.transport.get_extra_info("socket")
        if sock is not None and self.server_config.send_buffer_bytes:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.server_config.send_buffer_bytes)
        subscriber = self.broadcaster.add(websocket)
        if len(self.broadcaster.subscribers) >= self.server_config.wait_for_subscribers:
            self._enough_subscribers.set()
        logger.info("subscriber %s connected (%d now)", peer, len(self.broadcaster.subscribers))
        sender = None
        cfg = self.server_config
        bucket = TokenBucket(cfg.requests_per_s, cfg.request_burst)
        try:
            await websocket.send(msg.encode(self.hello))
            sender = asyncio.create_task(subscriber.pump())
            async for raw in websocket:
                if not bucket.allow():  # answering a flood would delay every subscriber's scores
                    logger.warning("subscriber %s sends more than %g requests/s: closing it", peer,
                                   cfg.requests_per_s)
                    # Stop reading first: thousands of frames already in flight are left to the kernel
                    # instead of being parsed on the event loop that fans out everyone's scores.
                    websocket.transport.pause_reading()
                    await websocket.close(1008, "too many requests")
                    break
                await websocket.send(msg.encode(self.reply_to(raw)))
        except Exception as exc:  # ConnectionClosed and transport errors end this subscriber only
            logger.debug("subscriber %s: %s", peer, exc)
        finally:
            if sender is not None:
                sender.cancel()
            self.broadcaster.remove(subscriber)
            logger.info("subscriber %s gone (code %s; %d sent, %d dropped; %d left)", peer,
                        websocket.close_code, subscriber.sent, subscriber.dropped, len(self.broadcaster.subscribers))

    def reply_to(self, raw) -> dict:
        """Clients may send {"type": "ping"} or {"type": "status"}; anything else gets a one-line error."""
        if isinstance(raw, bytes):
            return msg.error("binary messages are not accepted; send JSON text")
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):  # also a 5000-digit integer, or nesting 1000 deep
            return msg.error("malformed JSON")
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            return msg.pong()
        if kind == "status":
            return msg.health_status(self.health())
        return msg.error(f"unknown message type {kind!r:.40}; expected 'ping' or 'status'")

    def reload_model(self) -> bool:
        """SIGHUP: load the model file again; a file that fails or changes the contract keeps the old model."""
        path = self.model.path
        if path is None:
            logger.error("reload refused: the model was not loaded from a file")
            return False
        try:
            fresh = EmotionModel(path, self.model.inference, self.model.features)
        except ModelError as exc:
            logger.error("reload refused, still running the previous model: %s", exc)
            return False
        if fresh.contract.labels != self.model.contract.labels or \
                fresh.contract.feature_config() != self.model.contract.feature_config():
            logger.error("reload refused, still running the previous model: %s changes the labels or features", path)
            return False
        if self.pipeline.baseline is not None:  # version 4: this stream's baseline goes on; the next starts anew
            self.pipeline.baseline.replace_prior(fresh.contract.baseline_prior)
        self.model = self.pipeline.model = fresh  # one reference swap; the next window uses it
        if self.listener is not None:
            self.listener.model = fresh  # streams started from now on
        self.hello["model"] = model_info(fresh.contract)
        logger.info("reloaded model %s (run %s)", path, fresh.contract.run_id)
        return True

    def _reload_in_background(self) -> None:
        """SIGHUP: reload on a thread (loading must not stall the event loop); whatever fails is logged there."""
        def reload() -> None:
            try:
                self.reload_model()
            except Exception:
                logger.exception("reload failed, still running the previous model")

        asyncio.ensure_future(asyncio.to_thread(reload))

    def request_stop(self) -> None:
        """Thread-safe: begin a graceful shutdown."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop closed between the check and the call: already stopped
                pass

    async def run(self, on_listening=None) -> int:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._enough_subscribers = asyncio.Event()
        if self.server_config.wait_for_subscribers <= 0:
            self._enough_subscribers.set()
        await asyncio.to_thread(self.pipeline.warm_up)
        worker = AnalysisWorker(
            self.ring, self.pipeline,
            on_message=lambda m: self._loop.call_soon_threadsafe(self.fan_out, m),
            on_end=self.request_stop,
        )
        if hasattr(self.source, "on_event"):  # device lost / back: every subscriber hears of it
            self.source.on_event = lambda e: self._loop.call_soon_threadsafe(self.fan_out, e, False)
        source_thread = threading.Thread(target=self.source.run, args=(self.ring, self._source_stop),
                                         name="emostream-source", daemon=True)
        cfg = self.server_config
        async with serve(self.handle, cfg.host, cfg.port, process_request=self.process_request, ssl=cfg.ssl_context(),
                         max_size=cfg.max_client_message_bytes, max_queue=4,
                         write_limit=cfg.write_limit_bytes, close_timeout=2,
                         compression=None) as server:  # per-message deflate costs CPU and memory per subscriber
            self.port = server.sockets[0].getsockname()[1]
            for sig, action in ((signal.SIGINT, self._stop.set), (signal.SIGTERM, self._stop.set),
                                (signal.SIGHUP, self._reload_in_background)):
                try:
                    self._loop.add_signal_handler(sig, action)
                except (RuntimeError, ValueError):  # not the main thread (tests): call the methods instead
                    pass
            ws, http = ("wss", "https") if cfg.certfile else ("ws", "http")
            logger.info("listening on %s://%s:%d (healthz: %s://%s:%d/healthz%s); source: %s", ws,
                        cfg.host, self.port, http, cfg.host, self.port,
                        "; audio in at /listen" if self.listener else "", self.source.description)
            if self.sinks:
                self.stream_id = self.stream_id or default_stream_id(self.port)
                context = PublishContext(self.stream_id, self.source.description, dict(self.hello))
                await asyncio.gather(*(sink.start(context) for sink in self.sinks))
                logger.info("publishing as %r to %s", self.stream_id, ", ".join(s.url for s in self.sinks))
            if on_listening is not None:
                on_listening(self.port)
            worker.start()
            stop_wait = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait([stop_wait, asyncio.ensure_future(self._enough_subscribers.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
            if not self._stop.is_set():
                source_thread.start()
            await stop_wait
            source_ended = worker.source_ended  # read before stopping the source makes the ring look finished
            read_error = getattr(self.source, "error", None)  # the source stopped early: a broken file, say
            logger.info("shutting down")
            self._source_stop.set()
            worker.stop()
            await asyncio.to_thread(worker.join, 5.0)
            await asyncio.sleep(0)  # let messages handed over by the worker reach the queues
            if source_ended:  # a finite source is over: subscribers stop waiting for more
                self.fan_out(self.pipeline.end_message(f"read error: {read_error}" if read_error else "source ended"),
                             False)
            subscribers = list(self.broadcaster.subscribers)
            await asyncio.gather(*(s.drain(cfg.drain_on_exit_s) for s in subscribers))
            await asyncio.gather(*(s.websocket.close(1000, "daemon shutting down") for s in subscribers),
                                 return_exceptions=True)
            await asyncio.gather(*(sink.stop() for sink in self.sinks))
            if self.listener is not None:
                await self.listener.shutdown()
            server.close()
        if source_thread.is_alive():
            source_thread.join(1.0)
        if worker.error:
            logger.error("analysis stopped: %s", worker.error)
            return 1
        heard_s = self.pipeline.stream.samples_seen / self.pipeline.features.sample_rate_hz
        if source_ended and self.broadcaster.published == 0 and heard_s < self.pipeline.features.window_s and \
                not isinstance(self.source, NoSource):  # (a stop request is not the input ending)
            logger.warning("the input ended after %.2f s, shorter than one %.2f s window: %s", heard_s,
                           self.pipeline.features.window_s, "scored inside a noise floor (utterance flagged short)"
                           if self.pipeline.short else f"not scored, {self.pipeline.short_skipped or 'no audio'}")
        logger.info("stopped after %d windows, %.1f s of audio (%d overrun frames)", self.broadcaster.published,
                    heard_s, self.ring.overrun_frames)
        if read_error:
            logger.error("the input ended early: %s", read_error)
            return 1
        return 0


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: scripts/run.sh decides whether a source was named by the flags' full spellings.
    p = argparse.ArgumentParser(prog="emostream-daemon", description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter, allow_abbrev=False)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--file", type=Path, help=f"audio file to stream (default: the bundled {DEFAULT_SAMPLE.name})")
    src.add_argument("--mic", action="store_true", help="capture from a microphone (see emostream-devices)")
    src.add_argument("--stdin", action="store_true", help="raw PCM on stdin (see --rate, --channels, --format)")
    src.add_argument("--listen-only", action="store_true", help="no local source: score /listen streams until stopped")
    p.add_argument("--device", help="microphone: a name (or part of one) or the index emostream-devices lists")
    p.add_argument("--fast", action="store_true", help="file: run as fast as possible, not in real time")
    p.add_argument("--loop", action="store_true", help="file: start again at the end")
    add_ranged(p, "--rate", int, 22050, *INPUT_RATE_RANGE_HZ, unit="Hz", help="stdin: sample rate")
    add_ranged(p, "--channels", int, 1, *INPUT_CHANNELS_RANGE, help="stdin: channels")
    p.add_argument("--format", default="s16le", choices=sorted(StdinSource.FORMATS), help="stdin: sample format")
    add_model_option(p)
    add_ranged(p, "--threads", int, InferenceConfig.intra_op_threads, *THREADS_RANGE,
               help="onnxruntime intra-op threads")
    add_classes_argument(p)
    d = PipelineConfig()
    add_ranged(p, "--hop", float, d.hop_s, *HOP_RANGE_S, unit="s",
               help="seconds between windows (rounded to 512 samples; 0: every one)")
    add_ranged(p, "--smoothing", float, d.smoothing, *SMOOTHING_RANGE, high_open=True,
               help="EMA share of the previous scores")
    add_ranged(p, "--silence-dbfs", float, d.silence_dbfs, *SILENCE_RANGE_DBFS, unit="dBFS",
               help="gate: quieter windows are silence")
    add_vad_arguments(p)
    s = ServerConfig()
    p.add_argument("--host", default=s.host, help="address to listen on (beyond loopback needs a token)")
    add_ranged(p, "--port", int, s.port, 0, 65535, help="TCP port (0: any free port)")
    add_ranged(p, "--queue", int, s.queue_messages, 1, 100_000, help="messages queued per subscriber")
    p.add_argument("--token", help="secret clients must present; required to bind beyond loopback. Visible in `ps`: "
                   f"prefer --token-file or ${TOKEN_ENV}")
    p.add_argument("--token-file", type=Path, help="read the token from this file (first line)")
    p.add_argument("--allow-origin", action="append", default=[], help="browser origin allowed to connect (repeat)")
    p.add_argument("--allowed-host", action="append", default=[],
                   help="Host name clients may use besides loopback names, IP addresses and --host (repeat)")
    add_ranged(p, "--max-subscribers", int, s.max_subscribers, 1, 100_000)
    add_ranged(p, "--requests-per-s", float, s.requests_per_s, 0.1, 10_000.0,
               help="client messages per connection per second (bursts of --request-burst); beyond: closed, 1008")
    add_ranged(p, "--request-burst", int, s.request_burst, 1, 100_000)
    add_ranged(p, "--wait-for-subscribers", int, s.wait_for_subscribers, 0, 100_000,
               help="hold the source until N subscribers have connected (≤ --max-subscribers); "
                    "with a file and --fast, nobody misses the start")
    p.add_argument("--publish", action="append", default=[], metavar="URL",
                   help="also publish to redis://HOST:PORT/DB?stream=NAME&maxlen=N or mqtt://HOST:PORT/PREFIX "
                        "(rediss://, mqtts:// for TLS; repeat for several; needs emostream[publish])")
    p.add_argument("--stream-id", help="this daemon's name on the brokers (default: HOSTNAME-PORT)")
    p.add_argument("--mqtt-discovery", action="store_true", help="MQTT: Home Assistant discovery configs")
    add_ranged(p, "--publish-queue", int, SinkOptions.queue_messages, 1, 1_000_000,
               help="messages queued per broker while it is slow or away; the oldest are dropped beyond")
    p.add_argument("--certfile", help="TLS certificate (PEM): serve wss:// and https:// (browsers need it for the "
                                      "microphone beyond localhost)")
    p.add_argument("--keyfile", help="TLS private key (PEM) for --certfile")
    ls = ListenConfig()
    g = p.add_argument_group("audio in over WebSocket (/listen)")
    g.add_argument("--no-listen", action="store_true", help="refuse /listen: only the local source is scored")
    add_ranged(g, "--max-streams", int, ls.max_streams, 1, 10_000, help="concurrent /listen streams")
    add_ranged(g, "--max-realtime-factor", float, ls.max_realtime_factor, 1.0, 1000.0,
               help="audio seconds a stream may send per second")
    add_ranged(g, "--max-listen-message-bytes", int, ls.max_message_bytes, 1024, 16 * 2**20,
               help="largest binary audio message; larger closes with 1009")
    add_ranged(g, "--max-listen-messages-per-s", float, ls.max_messages_per_s, *MESSAGES_PER_S_RANGE,
               help="messages a stream may send per second on average (bursts of one second's); more closes with 1008")
    add_ranged(g, "--listen-workers", int, ls.workers, 0, 256,
               help="analysis threads shared by all streams (0 = one per core)")
    g.add_argument("--broadcast-listeners", action="store_true",
                   help="also send every stream's scores, tagged with stream_id, to the broadcast subscribers "
                        "(streams then keep the daemon's --classes)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def limit_blas_threads() -> None:
    """One BLAS thread: the per-hop mel matmul is tiny, and idle OpenBLAS workers spin, burning a core."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with librosa's scikit-learn; without it, OPENBLAS_NUM_THREADS=1 does the same
        logger.debug("threadpoolctl missing: BLAS thread count left as is")
        return
    threadpool_limits(1)


def make_source(args):
    if args.mic:
        return MicrophoneSource(args.device)
    if args.stdin:
        return StdinSource(args.rate, args.channels, args.format)
    if args.listen_only:
        return NoSource(22050)
    return FileSource(args.file or DEFAULT_SAMPLE, realtime=not args.fast, loop=args.loop)


def unused_source_flags(args, parser) -> list[str]:
    """Flags set away from their defaults that the chosen source never reads (``--rate 16000`` without ``--stdin``
    would be ignored in silence, the audio read at the wrong rate)."""
    reads = {"--rate": args.stdin, "--channels": args.stdin, "--format": args.stdin, "--device": args.mic,
             "--fast": not (args.mic or args.stdin or args.listen_only),
             "--loop": not (args.mic or args.stdin or args.listen_only)}
    return changed_flags(args, parser, [flag for flag, read in reads.items() if not read])


LISTEN_FLAGS = ("--max-streams", "--max-realtime-factor", "--max-listen-message-bytes", "--max-listen-messages-per-s",
                "--listen-workers", "--broadcast-listeners")


def unused_listen_flags(args, parser) -> list[str]:
    """/listen's flags set away from their defaults (meaningless with ``--no-listen``)."""
    return changed_flags(args, parser, LISTEN_FLAGS)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if unused := unused_source_flags(args, parser):
        source = "--mic" if args.mic else "--stdin" if args.stdin else "--listen-only" if args.listen_only else "a file"
        parser.error(f"{', '.join(unused)}: not read with {source} (--rate/--channels/--format are for --stdin, "
                     "--device for --mic, --fast/--loop for a file)")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limit_blas_threads()
    # Our own connect/disconnect lines say more; websockets' debug lines would print request lines and
    # headers, the token among them, so they stay off even with -v.
    logging.getLogger("websockets").setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("websockets.server").setLevel(logging.WARNING)
    logging.getLogger("numba").setLevel(logging.WARNING)  # librosa's JIT: pages of IR at DEBUG
    in_main = threading.current_thread() is threading.main_thread()
    # Until run() installs its own: SIGTERM while the model loads is a clean stop, as Ctrl-C is.
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        return _run_from_args(args, parser)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM before the server's own handlers were in place
        logger.info("stopped before serving")
        return 0
    finally:
        if in_main:  # None: a handler not set from Python; the default is the nearest
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _run_from_args(args, parser) -> int:
    try:
        token = resolve_token(args.token, args.token_file)
        server_config = ServerConfig(host=args.host, port=args.port, queue_messages=args.queue, token=token,
                                     allowed_origins=tuple(args.allow_origin), max_subscribers=args.max_subscribers,
                                     allowed_hosts=tuple(args.allowed_host), requests_per_s=args.requests_per_s,
                                     request_burst=args.request_burst, wait_for_subscribers=args.wait_for_subscribers,
                                     certfile=args.certfile, keyfile=args.keyfile)
        server_config.check()
        if args.no_listen and args.listen_only:
            raise ValueError("--no-listen and --listen-only contradict each other")
        if args.no_listen and (unread := unused_listen_flags(args, parser)):
            raise ValueError(f"{', '.join(unread)}: not read with --no-listen (/listen is off)")
        listen_config = None if args.no_listen else ListenConfig(
            max_streams=args.max_streams, max_realtime_factor=args.max_realtime_factor,
            max_message_bytes=args.max_listen_message_bytes, max_messages_per_s=args.max_listen_messages_per_s,
            workers=args.listen_workers,
            broadcast=args.broadcast_listeners)
        if listen_config is not None:
            listen_config.check()
        vad = vad_from_args(args)
        pipeline_config = PipelineConfig(hop_s=args.hop, smoothing=args.smoothing, silence_dbfs=args.silence_dbfs,
                                         vad=vad, classes=args.classes)
        sinks = make_sinks(args.publish, SinkOptions(queue_messages=args.publish_queue,
                                                     mqtt_discovery=args.mqtt_discovery))
        stream_id = check_stream_id(args.stream_id) if args.stream_id is not None else None
        if args.mqtt_discovery and not any(s.kind == "mqtt" for s in sinks):
            raise ValueError("--mqtt-discovery needs an mqtt:// or mqtts:// --publish URL")
        model = EmotionModel(args.model, InferenceConfig(intra_op_threads=args.threads))
        source = make_source(args)
        daemon = EmotionDaemon(model, source, pipeline_config, server_config, listen_config, sinks, stream_id)
        return asyncio.run(daemon.run())
    except (ModelError, SourceError, ValueError, VadUnavailable) as exc:
        logger.error("%s", exc)
        return 2
    except OSError as exc:  # e.g. the port is taken
        logger.error("cannot start server on %s:%s: %s", args.host, args.port, exc.strerror or exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
