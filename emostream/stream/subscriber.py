"""``emostream-subscribe``: print the daemon's scores live, one line per window (or JSON lines).

Reconnects with exponential backoff when the daemon restarts or is not up yet. With ``--until-end`` it
exits 0 when a finite source ends (the daemon's ``{"type": "end"}`` message) instead of waiting for more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

logger = logging.getLogger(__name__)

BARS = "▁▂▃▄▅▆▇█"


def format_line(message: dict, labels: list[str]) -> str:
    """``  12.35 s  angry     71%  ▁▁▇▁▁▂▁▁`` — one bar per label in the hello's order."""
    t = f"{message['end_s']:8.2f} s"
    if message.get("silence"):
        return f"{t}  {'(silence)':<10} {message['level_dbfs']:6.1f} dBFS"
    p = message["probabilities"]
    bars = "".join(BARS[min(len(BARS) - 1, int(round(p[name] * (len(BARS) - 1))))] for name in labels)
    dropped = f"  dropped {message['dropped']}" if message.get("dropped") else ""
    return f"{t}  {message['top']:<10} {message['top_p']:4.0%}  {bars}{dropped}"


def header(labels: list[str]) -> str:
    return f"{'':>10}  {'top':<10} {'p':>4}  {''.join(name[0] for name in labels)}  ({', '.join(labels)})"


def utterance_line(message: dict) -> str:
    """``# utterance 0.51–3.32 s (11 windows): sad 64%`` — a speech segment's averaged scores."""
    short = ", shorter than one window" if message.get("short") else ""
    return (f"# utterance {message['start_s']:.2f}–{message['end_s']:.2f} s ({message['windows']} windows{short}): "
            f"{message['top']} {message['top_p']:.0%}")


async def subscribe(url: str, as_json: bool = False, count: int | None = None, out=sys.stdout,
                    until_end: bool = False) -> int:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    received = 0
    labels: list[str] = []
    async for websocket in connect(url, open_timeout=5, max_size=2**20):
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
                    return 0
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
    p.add_argument("url", nargs="?", default="ws://127.0.0.1:8765", help="daemon WebSocket URL")
    p.add_argument("--json", action="store_true", help="print each message as a JSON line")
    p.add_argument("--count", type=int, help="exit after this many score messages (≥ 1)")
    p.add_argument("--until-end", action="store_true",
                   help="exit 0 when the daemon's finite source ends (its 'end' message)")
    args = p.parse_args(argv)
    if args.count is not None and args.count < 1:
        p.error("--count must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return asyncio.run(subscribe(args.url, args.json, args.count, until_end=args.until_end))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
