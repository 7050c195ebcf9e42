"""Keep a decoder's own complaints out of the user's terminal.

libsndfile decodes MP3 through libmpg123, which prints to file descriptor 2 from C
(``[src/libmpg123/layer3.c:…] error: part2_3_length too large``, ``Note: Trying to resync...``) for
frames it then conceals or skips: the audio decodes, the terminal floods. Python cannot catch those
writes, so while an MP3 is being read ``quiet_decoder()`` points fd 2 at a pipe; a thread passes every
line through to the real stderr except the decoder's, which are counted and, at the end, logged once
(each line at DEBUG, so ``-v`` shows them).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections import deque
from contextlib import AbstractContextManager, contextmanager, nullcontext

logger = logging.getLogger(__name__)

DECODER_NOISE = re.compile(
    rb"^(\[src/libmpg123/|\[.*mpg123.*\]|Note: (Illegal Audio-MPEG-Header|Trying to resync|Skipped \d+ bytes"
    rb"|Hit end of \(available\) data)|Warning: .*(mpg123|MPEG|Encountered more data))"
)

_lock = threading.Lock()
_state: dict = {"depth": 0}


def _pump(read_fd: int, write_fd: int, kept: deque, counter: list) -> None:
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if DECODER_NOISE.match(line):
                    counter[0] += 1
                    kept.append(line.decode("utf-8", "replace"))
                else:
                    os.write(write_fd, line + b"\n")
        if pending:
            os.write(write_fd, pending)


def _start() -> bool:
    """fd 2 → a pipe read by a filtering thread; False where there is no fd 2 to protect."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
    except OSError as exc:
        logger.debug("decoder output left as is: %s", exc)
        return False
    kept, counter = deque(maxlen=100), [0]
    thread = threading.Thread(target=_pump, args=(read_fd, saved, kept, counter), name="emostream-stderr",
                              daemon=True)
    thread.start()
    _state.update(saved=saved, thread=thread, kept=kept, counter=counter)
    return True


def _stop() -> tuple[int, deque]:
    """fd 2 back; the pipe's only write end closes with it, so the thread reads to EOF and ends."""
    sys.stderr.flush()
    saved = _state.pop("saved")
    os.dup2(saved, 2)
    _state.pop("thread").join(2.0)
    os.close(saved)
    return _state.pop("counter")[0], _state.pop("kept")


@contextmanager
def quiet_decoder(what: str = "the input"):
    """``with quiet_decoder("song.mp3"):`` — decoder lines on fd 2 are filtered while inside. Nests; the
    outermost exit logs how many lines were held back (each at DEBUG)."""
    with _lock:
        started = _state["depth"] > 0 or _start()
        if started:
            _state["depth"] += 1
    try:
        yield
    finally:
        count, kept = 0, ()
        with _lock:
            if started:
                _state["depth"] -= 1
                if _state["depth"] == 0:
                    count, kept = _stop()
        if count:
            more = "" if logger.isEnabledFor(logging.DEBUG) else " (details with -v)"
            logger.info("the MP3 decoder reported %d problem(s) in %s and went on%s", count, what, more)
            for line in kept:
                logger.debug("decoder: %s", line)


def is_mpeg(format_name: str) -> bool:
    """libsndfile's format name for MP3 (and MPEG layer I/II)."""
    return format_name.upper() in ("MPEG", "MP3")


MPEG_SUFFIXES = (".mp3", ".mp2", ".mp1", ".mpga")


def quiet_decoder_for(path) -> AbstractContextManager:
    """``quiet_decoder`` for an MP3 path (by its name), a no-op context for anything else."""
    from pathlib import Path

    path = Path(path)
    return quiet_decoder(path.name) if path.suffix.lower() in MPEG_SUFFIXES else nullcontext()


@contextmanager
def open_quietly(path, mpeg: bool = False):
    """``soundfile.SoundFile`` of ``path`` (by its bytes: a name that is not UTF-8 opens too), an MP3's decoder
    chatter filtered while it is open: known from the start by its suffix (or ``mpeg``, when the caller knows
    already), else from the format once opened. Errors opening it propagate as soundfile raises them."""
    from contextlib import ExitStack
    from pathlib import Path

    import soundfile as sf

    path = Path(path)
    with ExitStack() as stack:
        known = mpeg or path.suffix.lower() in MPEG_SUFFIXES
        if known:
            stack.enter_context(quiet_decoder(path.name))
        f = stack.enter_context(sf.SoundFile(os.fsencode(path)))
        if not known and is_mpeg(f.format):
            stack.enter_context(quiet_decoder(path.name))
        yield f
