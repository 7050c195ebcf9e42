"""``emostream-subscribe``: print the daemon's scores live, one line per window (or JSON lines).

Reconnects with exponential backoff when the daemon restarts or is not up yet. With ``--until-end`` it
exits when a finite source ends (the daemon's ``{"type": "end"}`` message) instead of waiting for more: 0, or 1 when
the input broke off (reason ``read error: …``).
What cannot succeed by retrying (a wrong token, an ``http://`` URL, a refused Host or Origin) ends with a
one-line error, exit 2. A failure that a wrong scheme explains (``ws://`` to a TLS daemon, ``wss://`` to a plain
one) is still retried, since a restarting daemon fails alike, but the scheme that would work is named once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from emostream.options import add_ranged, quiet_stdout
from emostream.stream.guard import TOKEN_ENV, resolve_token

logger = logging.getLogger(__name__)

BARS = "▁▂▃▄▅▆▇█"


def bar(p) -> str:
    """One probability as a bar character; a blank for one the message lacks or holds as null (non-finite)."""
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
        return " "
    return BARS[min(len(BARS) - 1, int(round(p * (len(BARS) - 1))))]


def format_line(message: dict, labels: list[str]) -> str:
    """``  12.35 s  angry     71%  ▁▁▇▁▁▂▁▁`` — one bar per label in the hello's order."""
    t = f"{message['end_s']:8.2f} s"
    if message.get("silence") or message.get("probabilities") is None:
        level = message.get("level_dbfs")
        level = f"{level:6.1f} dBFS" if isinstance(level, (int, float)) else ""
        what = "(silence)" if message.get("silence") else "(no speech)"
        return f"{t}  {what:<11} {level}".rstrip()
    p = message["probabilities"]
    bars = "".join(bar(p.get(name)) for name in labels)
    dropped = f"  dropped {message['dropped']}" if message.get("dropped") else ""
    return f"{t}  {message['top']:<10} {message['top_p']:4.0%}  {bars}{dropped}"


def header(labels: list[str]) -> str:
    return f"{'':>10}  {'top':<10} {'p':>4}  {''.join(name[0] for name in labels)}  ({', '.join(labels)})"


def utterance_line(message: dict) -> str:
    """``# utterance 0.51–3.32 s (11 windows): sad 64%`` — a speech segment's averaged scores."""
    short = ", shorter than one window" if message.get("short") else ""
    return (f"# utterance {message['start_s']:.2f}–{message['end_s']:.2f} s ({message['windows']} windows{short}): "
            f"{message['top']} {message['top_p']:.0%}")



class SubscribeError(RuntimeError):
    """A connection that retrying cannot fix; the message is one line."""


def explain(exc: Exception, url: str, token_sent: bool = False) -> str | None:
    """One line for a failure that retrying will not fix, or None for one worth retrying; ``token_sent``: a token
    went with the request (header or ``?token=``), so a 401 means it was refused, not missing."""
    import ssl

    from websockets.exceptions import InvalidStatus, InvalidURI

    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            return (f"{url}: the daemon's certificate does not name this host ({exc.verify_message}); connect by "
                    "a name or address it holds")
        return (f"{url}: the daemon's certificate is not trusted ({exc.verify_message}); for a self-signed one "
                "pass it as --cafile cert.pem")
    if isinstance(exc, InvalidURI):
        scheme, _, rest = url.partition("://")
        hint = {"http": "ws://", "https": "wss://"}.get(scheme.lower(), "ws://") + (rest or "HOST:PORT")
        return f"{url} is not a WebSocket URL: use {hint}"
    if isinstance(exc, InvalidStatus):
        code = exc.response.status_code
        if code == 401 and token_sent:
            return (f"{url}: the daemon refused the token (HTTP 401): check it against the daemon's --token or "
                    "--token-file")
        if code == 401:
            return (f"{url}: the daemon wants a token (HTTP 401): set ${TOKEN_ENV}, pass --token-file, "
                    "or add ?token=... to the URL")
        if code == 403:
            return f"{url}: refused (HTTP 403): this Origin is not allowed"
        if code == 421:
            return f"{url}: refused (HTTP 421): the daemon does not answer to this host name (see its --allowed-host)"
        if code in (500, 502, 503, 504):
            return None
        return f"{url}: the daemon answered HTTP {code} instead of a WebSocket handshake"
    return None  # e.g. the connection dropped mid-handshake while the daemon restarts: worth retrying


def scheme_hint(exc: Exception, url: str) -> str | None:
    """A hint for a retried failure that a wrong scheme explains, or None.

    Not fatal: a restarting daemon can fail the same way once. A TLS daemon answers ``ws://`` by closing
    before any HTTP status line; a plain daemon resets a ``wss://`` connection on the TLS hello.
    """
    from websockets.exceptions import InvalidMessage

    scheme, _, rest = url.partition("://")
    if scheme.lower() == "ws" and isinstance(exc, InvalidMessage):
        return f"{url}: no HTTP answer; if the daemon serves TLS (--certfile), use wss://{rest}"
    if scheme.lower() == "wss" and isinstance(exc, ConnectionResetError):
        return f"{url}: reset during the TLS handshake; if the daemon serves plain WebSocket, use ws://{rest}"
    return None


def _fatal(url: str, token_sent: bool):
    hinted = False

    def process_exception(exc: Exception) -> Exception | None:
        from websockets.client import process_exception as default

        nonlocal hinted
        line = explain(exc, url, token_sent)
        if line is not None:
            return SubscribeError(line)
        hint = scheme_hint(exc, url)
        if hint is not None and not hinted:
            hinted = True
            logger.warning("%s (retrying)", hint)
        return default(exc)
    return process_exception


async def subscribe(url: str, as_json: bool = False, count: int | None = None, out=sys.stdout,
                    token: str | None = None, until_end: bool = False, cafile: str | None = None) -> int:
    """``cafile``: certificates to trust for a ``wss://`` daemon (its own, when self-signed)."""
    import ssl
    from urllib.parse import parse_qs, urlsplit

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidURI

    received = 0
    labels: list[str] = []
    headers = {"Authorization": f"Bearer {token}"} if token else None
    token_sent = bool(token) or bool(parse_qs(urlsplit(url).query).get("token"))  # parse_qs drops "?token="
    tls = {}
    if cafile is not None:
        if not url.lower().startswith("wss://"):
            raise SubscribeError(f"--cafile is for wss:// URLs, not {url}")
        try:
            tls = {"ssl": ssl.create_default_context(cafile=cafile)}
        except (OSError, ssl.SSLError) as exc:
            raise SubscribeError(f"--cafile {cafile}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        connecting = connect(url, open_timeout=5, max_size=2**20, additional_headers=headers,
                             process_exception=_fatal(url, token_sent), **tls)
    except InvalidURI as exc:  # raised before the first attempt
        raise SubscribeError(explain(exc, url)) from None
    async for websocket in connecting:
        logger.info("connected to %s", url)
        try:
            async for raw in websocket:
                message = json.loads(raw)
                if as_json:
                    out.write(raw + "\n")
                elif message.get("type") == "hello":
                    labels = message["labels"]
                    out.write(f"# {message['source']}; hop {message['hop_s']:.3f} s, window "
                              f"{message['window_s']:.2f} s\n{header(labels)}\n")
                elif message.get("type") == "scores":
                    out.write(format_line(message, labels) + "\n")
                elif message.get("type") == "utterance":
                    out.write(utterance_line(message) + "\n")
                elif message.get("type") == "end":
                    out.write(f"# end: {message['reason']} after {message['duration_s']:.2f} s, "
                              f"{message['windows']} windows, {message['utterances']} utterances\n")
                elif message.get("type") == "status":
                    out.write(f"# audio {message.get('audio')}: {message.get('error', message.get('source', ''))}\n")
                out.flush()
                if until_end and message.get("type") == "end":
                    await websocket.close()
                    return 0 if message.get("reason", "source ended") == "source ended" else 1
                if message.get("type") == "scores":
                    received += 1
                    if count is not None and received >= count:
                        await websocket.close()
                        return 0
        except ConnectionClosed as exc:
            logger.warning("connection closed (%s); reconnecting", exc.rcvd.code if exc.rcvd else "no close frame")
            continue
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emostream-subscribe", description=__doc__.splitlines()[0])
    p.add_argument("url", nargs="?", default="ws://127.0.0.1:8765",
                   help="daemon WebSocket URL (default: ws://127.0.0.1:8765)")
    p.add_argument("--json", action="store_true", help="print each message as a JSON line")
    add_ranged(p, "--count", int, None, 1, 10**9, help="exit after this many score messages")
    p.add_argument("--token-file", help=f"read the daemon's token from this file (default: ${TOKEN_ENV})")
    p.add_argument("--cafile", help="trust these certificates for a wss:// daemon (a self-signed one: its cert.pem)")
    p.add_argument("--until-end", action="store_true",
                   help="exit when the daemon's finite source ends (its 'end' message): 0, or 1 after a read error")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        token = resolve_token(None, args.token_file)
        return asyncio.run(subscribe(args.url, args.json, args.count, token=token, until_end=args.until_end,
                                     cafile=args.cafile))
    except (SubscribeError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    except BrokenPipeError:  # `emostream-subscribe | head -1`: the reader has all it wanted
        quiet_stdout()
        return 0
    except OSError as exc:  # e.g. stdout on a full disk
        quiet_stdout()
        logger.error("cannot write the output: %s", exc.strerror or exc)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
