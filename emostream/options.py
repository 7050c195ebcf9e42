"""Command-line options with ranges: every number a user can type is checked before anything starts.

``ranged(int, 1, 65535)`` is an argparse ``type=`` that refuses NaN, infinities, values out of range and
non-numbers with argparse's own one-line ``error: argument --port: …`` (exit 2), so ``--hop 1e9`` or
``--queue 0`` never reach the code that would allocate terabytes or pop from an empty queue. The daemon,
the subscriber, the benchmark and the stress tool take their numeric flags through it; frozen
dataclasses behind them check the same ranges again for callers that skip the command line
(``check_range``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path


def check_range(name: str, value, low=None, high=None, *, low_open: bool = False, high_open: bool = False) -> None:
    """Raise ``ValueError`` (one line naming ``name``) unless ``value`` is a finite number within the bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '≥'} {low}, got {value}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{name} must be {'<' if high_open else '≤'} {high}, got {value}")


def changed_flags(args, parser, flags) -> list[str]:
    """Those of ``flags`` (``--name``) that ``args`` holds away from the parser's defaults, in the order given."""
    dest = lambda flag: flag[2:].replace("-", "_")  # noqa: E731
    return [flag for flag in flags if getattr(args, dest(flag)) != parser.get_default(dest(flag))]


def ranged(kind: type, low=None, high=None, *, low_open: bool = False, high_open: bool = False) -> Callable:
    """An argparse ``type=`` converting to ``kind`` (int or float) and checking ``low``/``high`` (inclusive
    unless ``*_open``). The bounds appear in the error message and in ``--help`` via ``describe``."""

    def convert(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        try:
            check_range("value", value, low, high, low_open=low_open, high_open=high_open)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("value ", "", 1)) from None
        return value

    convert.__name__ = kind.__name__  # argparse names the type in some messages
    convert.bounds = (low, high)
    return convert


def describe(help_text: str, low=None, high=None, unit: str = "", *, low_open: bool = False,
             high_open: bool = False) -> str:
    """``help_text`` with its range appended, e.g. ``'seconds between windows (0.023–10 s)'``; an open bound shows
    as such (``'(0 ≤ x < 1)'``), so ``--help`` never offers a value the check refuses."""
    unit = f" {unit}" if unit else ""
    if low is not None and high is not None:
        if low_open or high_open:
            return f"{help_text} ({low} {'<' if low_open else '≤'} x {'<' if high_open else '≤'} {high}{unit})"
        return f"{help_text} ({low}–{high}{unit})"
    if low is not None:
        return f"{help_text} ({'>' if low_open else '≥'} {low}{unit})"
    if high is not None:
        return f"{help_text} ({'<' if high_open else '≤'} {high}{unit})"
    return help_text


def add_ranged(parser, flag: str, kind: type, default, low=None, high=None, *, help: str = "", unit: str = "",
               low_open: bool = False, high_open: bool = False, **kwargs):
    """``parser.add_argument`` for a number with a range; the range shows in ``--help``."""
    return parser.add_argument(flag, type=ranged(kind, low, high, low_open=low_open, high_open=high_open),
                               default=default, **kwargs,
                               help=describe(help, low, high, unit, low_open=low_open, high_open=high_open))


def add_model_option(parser, help: str = "ONNX model with its feature contract"):
    """``--model``, the shipped model unless named; ``--help`` says so rather than print where this install keeps it."""
    from emostream.paths import DEFAULT_MODEL_PATH

    return parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH, metavar="ONNX",
                               help=f"{help} (default: the shipped {DEFAULT_MODEL_PATH.name})")


def add_sample_option(parser, help: str = "audio file to play"):
    """``--audio``, the sample clip shipped in the package unless named."""
    from emostream.paths import DEFAULT_SAMPLE

    return parser.add_argument("--audio", type=Path, default=DEFAULT_SAMPLE,
                               help=f"{help} (default: the bundled {DEFAULT_SAMPLE.name})")


def quiet_stdout() -> None:
    """Point stdout at /dev/null after a reader went away (``… | head``): the interpreter's last flush at exit must
    not raise the same error again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` names each option's default where it has a value to name (not None, False or an empty list) and
    its help does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or "default" in text or action.default is None or action.default is False
                or action.default == [] or action.default is argparse.SUPPRESS):  # `is`: 0.0 == False
            return text
        return f"{text} (default: %(default)s)".lstrip()
