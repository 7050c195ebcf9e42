"""MQTT sink (3.1.1 or 5): scores, utterances and availability on topics under ``PREFIX/<stream>/``.

Topics (``<stream>`` is the daemon's ``--stream-id``)::

    PREFIX/<stream>/state      every scores message (retained: a new subscriber gets the latest at once)
    PREFIX/<stream>/utterance  utterance results, one per speech segment
    PREFIX/<stream>/status     the daemon's online/offline records and the source's audio events (retained)
    PREFIX/<stream>/event      anything else (the end of a finite stream)
    PREFIX/<stream>/available  "online" / "offline" (retained; "offline" is also the last will)

Payloads are the message JSON (``emostream.messages.encode``) plus ``source``, ``stream_id`` and
``dropped``. With ``--mqtt-discovery`` the sink also publishes Home Assistant MQTT discovery configs
(retained, on every connect) under ``homeassistant/sensor/<node>/<object>/config``, so the emotion,
its confidence, the level and the last utterance appear as sensors of one device without configuration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

import aiomqtt

from emostream import __version__
from emostream.messages import encode
from emostream.stream.sinks import PublishError, Sink, SinkOptions, check_tls_file, redact

logger = logging.getLogger(__name__)

PROTOCOLS = {"3.1.1": aiomqtt.ProtocolVersion.V311, "5": aiomqtt.ProtocolVersion.V5}
TOPIC_BY_TYPE = {"scores": "state", "utterance": "utterance", "status": "status"}
RETAINED = {"state", "status"}
#: Seconds between keepalive pings (``?keepalive=``). At QoS 0 the broker acknowledges nothing, so a broker that
#: stops answering without closing the connection is noticed only by its missing ping reply: after one to two
#: keepalives. Every message sent in that time is lost, though counted as published.
KEEPALIVE_RANGE_S = (1, 3600)
DEFAULT_KEEPALIVE_S = 10
#: paho's own log lines go under this name (the sink reports each failure in one line itself).
CLIENT_LOGGER = logging.getLogger(__name__ + ".client")


@dataclass(frozen=True)
class MqttTarget:
    url: str  # as given
    host: str
    port: int
    prefix: str = "emostream"
    tls: bool = False
    username: str | None = None
    password: str | None = None
    qos: int = 0
    protocol: str = "3.1.1"
    client_id: str | None = None  # default: emostream-<stream id>
    ca_file: str | None = None  # TLS: trust this CA instead of the system's
    discovery_prefix: str = "homeassistant"
    keepalive_s: int = DEFAULT_KEEPALIVE_S

    @classmethod
    def from_url(cls, url: str) -> MqttTarget:
        parts = urlsplit(url)
        shown = redact(url)
        tls = parts.scheme.lower() == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise PublishError(f"--publish {shown}: the port must be a number in 1..65535") from None
        if not parts.hostname:
            raise PublishError(f"--publish {shown}: no host (e.g. mqtt://127.0.0.1:1883/emostream)")
        prefix = parts.path.strip("/") or "emostream"
        if any(c in prefix for c in "+#\0") or "//" in prefix or len(prefix) > 200:
            raise PublishError(f"--publish {shown}: the topic prefix {prefix!r} must not contain '+', '#' "
                               "or empty levels")
        options: dict = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "qos":
                if value not in ("0", "1", "2"):
                    raise PublishError(f"--publish {shown}: qos is 0, 1 or 2")
                options["qos"] = int(value)
            elif name == "protocol":
                if value not in PROTOCOLS:
                    raise PublishError(f"--publish {shown}: protocol is 3.1.1 or 5")
                options["protocol"] = value
            elif name == "client_id":
                if not 1 <= len(value) <= 128:
                    raise PublishError(f"--publish {shown}: client_id has 1..128 characters")
                options["client_id"] = value
            elif name == "ca":
                if not tls:
                    raise PublishError(f"--publish {shown}: ca is for mqtts:// (TLS)")
                check_tls_file(shown, "ca", value)
                options["ca_file"] = value
            elif name == "keepalive":
                low, high = KEEPALIVE_RANGE_S
                if not (value.isascii() and value.isdigit() and low <= int(value) <= high):
                    raise PublishError(f"--publish {shown}: keepalive is whole seconds in {low}..{high}")
                options["keepalive_s"] = int(value)
            elif name == "discovery_prefix":
                if not re.fullmatch(r"[A-Za-z0-9_/-]{1,100}", value):
                    raise PublishError(f"--publish {shown}: discovery_prefix is a topic of letters, digits, _-/")
                options["discovery_prefix"] = value.strip("/")
            else:
                raise PublishError(f"--publish {shown}: unknown parameter {name!r}; "
                                   "known: qos, protocol, client_id, ca, discovery_prefix, keepalive")
        return cls(url, parts.hostname, port, prefix, tls, unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None, **options)


def node_id(stream_id: str) -> str:
    """Home Assistant's node id: letters, digits, '_' and '-' only."""
    return "emostream_" + re.sub(r"[^A-Za-z0-9_-]", "_", stream_id)


def discovery_configs(prefix: str, stream_id: str, discovery_prefix: str = "homeassistant",
                      hello: dict | None = None) -> dict[str, dict]:
    """Home Assistant MQTT discovery: config topic → payload, one sensor per aspect of one device."""
    base = f"{prefix}/{stream_id}"
    node = node_id(stream_id)
    model = (hello or {}).get("model") or {}
    device = {"identifiers": [node], "name": f"emostream {stream_id}", "manufacturer": "emostream",
              "model": f"speech emotion CRNN ({model.get('run_id') or 'unknown run'})", "sw_version": __version__}
    common = {"availability_topic": f"{base}/available", "payload_available": "online",
              "payload_not_available": "offline", "device": device,
              "origin": {"name": "emostream", "sw_version": __version__}}
    sensors = {
        "emotion": {"name": "Emotion", "state_topic": f"{base}/state", "icon": "mdi:emoticon-outline",
                    "value_template": "{{ value_json.top if value_json.top is not none else 'silence' }}",
                    "json_attributes_topic": f"{base}/state",
                    "json_attributes_template": "{{ (value_json.probabilities or {}) | tojson }}"},
        "confidence": {"name": "Emotion confidence", "state_topic": f"{base}/state", "unit_of_measurement": "%",
                       "state_class": "measurement", "icon": "mdi:percent",
                       "value_template": "{{ ((value_json.top_p or 0) * 100) | round(1) }}"},
        "level": {"name": "Audio level", "state_topic": f"{base}/state", "unit_of_measurement": "dB",
                  "state_class": "measurement", "icon": "mdi:microphone",
                  "value_template": "{{ value_json.level_dbfs }}"},
        "utterance": {"name": "Last utterance emotion", "state_topic": f"{base}/utterance",
                      "icon": "mdi:account-voice", "value_template": "{{ value_json.top }}",
                      "json_attributes_topic": f"{base}/utterance",
                      "json_attributes_template": "{{ value_json.probabilities | tojson }}"},
    }
    return {f"{discovery_prefix}/sensor/{node}/{name}/config": {**config, **common, "unique_id": f"{node}_{name}"}
            for name, config in sensors.items()}


class MqttSink(Sink):
    kind = "mqtt"
    transient = (OSError, asyncio.TimeoutError, aiomqtt.MqttError)  # asyncio's: not the builtin on 3.10

    def __init__(self, target: MqttTarget, options: SinkOptions = SinkOptions()):
        super().__init__(target.url, options)
        self.target = target
        self.client: aiomqtt.Client | None = None

    def topic(self, leaf: str) -> str:
        return f"{self.target.prefix}/{self.context.stream_id}/{leaf}"

    def make_client(self) -> aiomqtt.Client:
        t = self.target
        tls_context = None
        if t.tls:
            tls_context = ssl.create_default_context(cafile=t.ca_file)
        return aiomqtt.Client(
            t.host, t.port, username=t.username, password=t.password,
            identifier=t.client_id or f"emostream-{self.context.stream_id}", protocol=PROTOCOLS[t.protocol],
            will=aiomqtt.Will(self.topic("available"), "offline", qos=1, retain=True),
            timeout=self.options.connect_timeout_s, keepalive=t.keepalive_s, tls_context=tls_context,
            logger=CLIENT_LOGGER,
            # Small publishes one after another: without this, Nagle holds each behind the last one's ACK.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),))

    @property
    def connect_limit_s(self) -> float:  # aiomqtt times out itself; cancelling it midway leaves its state broken
        return self.options.connect_timeout_s + 2.0

    @property
    def send_limit_s(self) -> float:
        return self.options.send_timeout_s + 2.0

    async def connect(self) -> None:
        self.client = self.make_client()
        await self.client.__aenter__()
        await self.client.publish(self.topic("available"), "online", qos=1, retain=True,
                                  timeout=self.options.send_timeout_s)
        if self.options.mqtt_discovery:
            configs = discovery_configs(self.target.prefix, self.context.stream_id, self.target.discovery_prefix,
                                        self.context.hello)
            for topic, payload in configs.items():
                await self.client.publish(topic, json.dumps(payload), qos=1, retain=True,
                                          timeout=self.options.send_timeout_s)

    async def send(self, batch: list[dict]) -> None:
        for message in batch:
            leaf = TOPIC_BY_TYPE.get(message.get("type"), "event")
            await self.client.publish(self.topic(leaf), encode(self.record(message)), qos=self.target.qos,
                                      retain=leaf in RETAINED, timeout=self.options.send_timeout_s)

    async def disconnect(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if self.connected:  # a clean disconnect sends no will: say it ourselves, then say goodbye
                await client.publish(self.topic("available"), "offline", qos=1, retain=True,
                                     timeout=self.options.send_timeout_s)
                await client.__aexit__(None, None, None)
        finally:
            # A failed or lost connection may still hold a socket (e.g. a broker that stopped answering):
            # paho's own close also unregisters it from the event loop. Idempotent.
            close = getattr(client._client, "_sock_close", None)  # noqa: SLF001
            if close is not None:
                close()
