"""The one definition of every message emostream sends: WebSocket frames, JSON lines, published records.

Each builder returns a plain dict; ``encode`` turns any of them into strict JSON (no NaN/Infinity: a
non-finite number becomes ``null``), so a strict client can parse every frame. The README's message
schema is this module in words.
"""

from __future__ import annotations

import json
import math
import re
import time

#: type → the fields a message of that type always carries (README "WebSocket messages").
SCHEMA: dict[str, tuple[str, ...]] = {
    "hello": ("type", "version", "labels", "sample_rate_hz", "hop_s", "window_s", "window_frames", "n_mels",
              "silence_dbfs", "smoothing", "vad", "source", "model", "confidence_bands"),
    "scores": ("type", "seq", "start_s", "end_s", "ready_time", "wall_time", "silence", "speech", "level_dbfs",
               "probabilities", "top", "top_p", "features_ms", "inference_ms"),
    "utterance": ("type", "start_s", "end_s", "windows", "probabilities", "top", "top_p", "short"),
    "end": ("type", "windows", "utterances", "duration_s", "reason"),
    "error": ("type", "error"),
    "pong": ("type", "wall_time"),
    # Three kinds, told apart by a field: ``audio`` (the source: a microphone lost or back), ``daemon``
    # (publishers: online/offline), or the health fields (the reply to a client's {"type": "status"}).
    "status": ("type",),
}

#: A stream's name wherever one is given: a daemon's on the brokers (``--stream-id``), a /listen client's own.
STREAM_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # use fullmatch: "$" would let a trailing newline through
STREAM_ID_RULE = "1 to 64 letters, digits, '_', '-' or '.'"


def finite(value):
    """``value`` with every non-finite float (NaN, ±Inf) replaced by ``None``, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def encode(message: dict, compact: bool = True) -> str:
    """Strict JSON text of a message; raises nothing for NaN/Inf (they become null)."""
    separators = (",", ":") if compact else None
    try:
        return json.dumps(message, separators=separators, allow_nan=False)
    except ValueError:
        return json.dumps(finite(message), separators=separators, allow_nan=False)


def probabilities_dict(labels, p) -> dict[str, float]:
    return {label: float(v) for label, v in zip(labels, p, strict=True)}


def top_of(labels, p) -> tuple[str | None, float | None]:
    if p is None:
        return None, None
    best = max(range(len(labels)), key=lambda i: p[i])
    return labels[best], float(p[best])


def scores(*, seq: int, start_s: float, end_s: float, ready_time: float, level_dbfs: float, labels,
           p, features_ms: float, inference_ms: float, silence: bool | None = None) -> dict:
    """One window's scores; ``p`` None marks a window that was not classified (no label): quieter than the
    level gate (``silence``), or loud without speech (the voice-activity gate). ``speech`` is whether it
    was classified; ``silence`` defaults to "not classified" where no level is given apart."""
    top, top_p = top_of(labels, p)
    silence = p is None if silence is None else bool(silence)
    return {
        "type": "scores",
        "seq": seq,
        "start_s": round(start_s, 6),
        "end_s": round(end_s, 6),
        "ready_time": ready_time,
        "wall_time": time.time(),
        "silence": silence,
        "speech": p is not None,
        "level_dbfs": round(level_dbfs, 2) if math.isfinite(level_dbfs) else None,
        "probabilities": None if p is None else probabilities_dict(labels, p),
        "top": top,
        "top_p": top_p,
        "features_ms": round(features_ms, 4),
        "inference_ms": round(inference_ms if p is not None else 0.0, 4),
    }


def utterance(*, start_s: float, end_s: float, windows: int, labels, p, short: bool = False) -> dict:
    """A speech segment's result: the mean of its windows' probabilities."""
    top, top_p = top_of(labels, p)
    return {"type": "utterance", "start_s": round(start_s, 6), "end_s": round(end_s, 6), "windows": windows,
            "probabilities": probabilities_dict(labels, p), "top": top, "top_p": top_p, "short": short}


def end(*, windows: int, utterances: int, duration_s: float, reason: str = "source ended") -> dict:
    """A finite stream is over: nothing follows but the close."""
    return {"type": "end", "windows": windows, "utterances": utterances, "duration_s": round(duration_s, 6),
            "reason": reason}


def error(text: str, code: int | None = None) -> dict:
    """One line saying what went wrong; ``code`` is the WebSocket close code that follows, if any."""
    m = {"type": "error", "error": text.splitlines()[0] if text else "error"}
    if code is not None:
        m["code"] = code
    return m


def pong() -> dict:
    """The reply to a client's ping: the daemon's clock, for round trips and clock offsets."""
    return {"type": "pong", "wall_time": time.time()}


def health_status(health: dict) -> dict:
    """The reply to a client's {"type": "status"}: the daemon's /healthz fields."""
    return {"type": "status", **health}


def audio_status(audio: str, **details) -> dict:
    """The source's state changed: ``audio`` "lost" (with ``error``, ``retry_s``) or "ok" (with ``source``)."""
    return {"type": "status", "audio": audio, **details}


def tagged(message: dict, stream_id: str) -> dict:
    """``message`` marked as belonging to one ``/listen`` stream (scores, utterance, end, hello)."""
    return {**message, "stream_id": stream_id}


def daemon_status(*, state: str, hello: dict) -> dict:
    """A publisher's record that the daemon went ``online`` or ``offline`` (Redis stream, MQTT status topic).

    Same type as the source's audio status events, told apart by the ``daemon`` field; it repeats what a
    consumer that never saw the hello needs: labels, hop and model.
    """
    return {"type": "status", "daemon": state, "wall_time": time.time(), "version": hello.get("version"),
            "labels": hello.get("labels"), "hop_s": hello.get("hop_s"), "model": hello.get("model")}
