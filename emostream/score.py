"""``emostream-score``: score audio files (files, folders, globs) as the daemon would, into CSV or JSON lines.

Each file streams through the daemon's own path (``EmotionRecognizer.score_file``) with the daemon's gates
(level, and the voice gate unless ``--no-vad``), so its window scores equal what ``emostream-daemon --file F
--fast`` sends with the same ``--hop``, ``--silence-dbfs`` and voice-gate flags (and no ``--smoothing``: the
scores here are raw). ``--per window`` writes the timeline,
``--per utterance`` one row per speech segment (mean probabilities), ``--per file`` one summary row.
An unreadable file gets a one-line reason on stderr and a non-zero exit; the others are still scored.
"""

from __future__ import annotations

import argparse
import csv
import glob
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from emostream import messages as msg

logger = logging.getLogger(__name__)

#: Folder entries scored: every container soundfile (libsndfile) reads, as the daemon's file source does.
AUDIO_SUFFIXES = frozenset({
    ".aif", ".aifc", ".aiff", ".au", ".avr", ".caf", ".flac", ".htk", ".ircam", ".mat", ".mp3", ".nist",
    ".oga", ".ogg", ".opus", ".paf", ".pvf", ".rf64", ".sd2", ".sds", ".sf", ".snd", ".sph", ".svx", ".voc",
    ".w64", ".wav", ".wave", ".wve", ".xi",
})
MAX_JOBS = 64

# The columns of each table; probabilities follow as one column per label (``p_<label>``) in CSV.
COLUMNS = {
    "window": ("file", "seq", "start_s", "end_s", "silence", "speech", "level_dbfs", "top", "top_p"),
    "utterance": ("file", "start_s", "end_s", "windows", "short", "top", "top_p"),
    "file": ("file", "top", "top_p", "duration_s", "windows", "short"),
}


def audio_in(folder: Path) -> list[Path]:
    """Audio files under ``folder``, sorted: symlinked folders followed (each real folder once, so a loop ends),
    hidden names skipped (macOS's ``._talk.wav`` resource files are not audio)."""
    found, seen = [], set()
    for where, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(where)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        # real folders before links to them, whatever order the filesystem lists: the names shown do not vary
        dirs[:] = sorted((d for d in dirs if not d.startswith(".")), key=lambda d: (os.path.islink(Path(where, d)), d))
        found += [Path(where, n) for n in names
                  if not n.startswith(".") and Path(n).suffix.lower() in AUDIO_SUFFIXES and Path(where, n).is_file()]
    return sorted(found)


def expand(targets: list[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (searched recursively for audio) and glob patterns → files in order, and what matched nothing."""
    files: list[Path] = []
    missing: list[str] = []
    for target in targets:
        matches = [target] if os.path.exists(target) or not glob.has_magic(target) else \
            sorted(glob.glob(target, recursive=True))
        found = []
        for m in map(Path, matches):
            if m.is_dir():
                found += audio_in(m)
            elif m.exists():
                found.append(m)
        if found:
            files += found
        else:
            missing.append(target)
    return list(dict.fromkeys(files)), missing  # a file named twice is scored once


def rows(scores, per: str) -> list[dict]:
    """``FileScores`` → the rows of one table (dicts holding a ``probabilities`` dict or None)."""
    name = scores.path
    if per == "window":
        return [{"file": name, "seq": w.seq, "start_s": w.start_s, "end_s": w.end_s, "silence": w.silence,
                 "speech": w.speech, "level_dbfs": w.level_dbfs, "top": w.top, "top_p": w.top_p,
                 "probabilities": w.probabilities}
                for w in scores.windows]
    if per == "utterance":
        return [{"file": name, "start_s": u.start_s, "end_s": u.end_s, "windows": u.windows, "short": u.short,
                 "top": u.top, "top_p": u.top_p, "probabilities": u.probabilities} for u in scores.utterances]
    s = scores.summary
    return [{"file": name, "top": s.top, "top_p": s.top_p, "probabilities": s.probabilities,
             "duration_s": s.duration_s, "windows": s.windows, "short": s.short}]


class Writer:
    """CSV (a header, one ``p_<label>`` column per label) or JSON lines (strict JSON, no NaN)."""

    def __init__(self, out, fmt: str, per: str, labels: list[str]):
        self.out, self.fmt, self.labels = out, fmt, labels
        self.columns = COLUMNS[per]
        if fmt == "csv":
            self.csv = csv.writer(out, lineterminator="\n")
            self.csv.writerow([*self.columns, *(f"p_{label}" for label in labels)])

    def write(self, row: dict) -> None:
        if self.fmt == "jsonl":
            self.out.write(msg.encode(row) + "\n")
            return
        p = row["probabilities"] or {}
        self.csv.writerow([("" if row[c] is None else row[c]) for c in self.columns] +
                          [p.get(label, "") for label in self.labels])


_recognizer = None


def configure_logging(verbose: bool) -> None:
    """The main process's logging, and each ``--jobs`` worker's (a worker starts with none)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="emostream-score: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("numba").setLevel(logging.WARNING)  # -v: hundreds of lines of its compiler's debugging


def _init(model: str, hop_s: float, silence_dbfs: float, vad, classes: tuple[str, ...] | None = None,
          verbose: bool | None = None) -> None:
    """``verbose``: None in the main process (logging is set already), the flag in a worker."""
    global _recognizer
    from emostream.api import EmotionRecognizer

    if verbose is not None:
        configure_logging(verbose)

    try:  # one BLAS thread per process: --jobs is the parallelism
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    _recognizer = EmotionRecognizer(model, hop_s=hop_s, silence_dbfs=silence_dbfs, vad=vad, classes=classes)


def _score(path: Path):
    """(path, FileScores or None, one-line error or None); a bad file never stops the others."""
    from emostream.features import AudioDecodeError

    try:
        return path, _recognizer.score_file(path), None
    except (AudioDecodeError, OSError, ValueError) as exc:
        return path, None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    from emostream.inference.pipeline import HOP_RANGE_S, SILENCE_RANGE_DBFS, PipelineConfig, add_classes_argument
    from emostream.inference.vad import add_vad_arguments
    from emostream.options import DefaultsHelpFormatter, add_model_option, add_ranged

    d = PipelineConfig()
    p = argparse.ArgumentParser(prog="emostream-score", description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files, folders (recursive) or quoted globs")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="table format")
    p.add_argument("--per", choices=("window", "utterance", "file"), default="file",
                   help="one row per window, per utterance (speech segment) or per file")
    p.add_argument("--out", type=Path, help="output file (default: stdout)")
    add_ranged(p, "--jobs", int, 1, 1, MAX_JOBS, help="files scored at once (processes)")
    add_model_option(p)
    add_classes_argument(p)
    add_ranged(p, "--hop", float, d.hop_s, *HOP_RANGE_S, unit="s",
               help="seconds between windows (rounded to 512 samples, as the daemon's)")
    add_ranged(p, "--silence-dbfs", float, d.silence_dbfs, *SILENCE_RANGE_DBFS, unit="dBFS",
               help="windows quieter than this are silence, not classified")
    add_vad_arguments(p)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: on for several files when stderr is a terminal)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    out = sys.stdout
    if hasattr(out, "reconfigure"):  # a file name that is not UTF-8 goes out as the bytes it is, not a crash
        out.reconfigure(errors="surrogateescape")
    if args.out is not None:  # opened before the model loads and any file is scored
        try:
            # surrogateescape: a file name that is not UTF-8 is written back as the bytes it is
            out = open(args.out, "w", newline="", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        except OSError as exc:
            p.error(f"--out {args.out}: {exc.strerror or exc}")
    configure_logging(args.verbose)

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from emostream.inference.model import ModelError
    from emostream.inference.vad import VadUnavailable, vad_from_args
    from emostream.options import quiet_stdout

    files, missing = expand(args.paths)
    for target in missing:
        logger.error("%s: no such file, or no audio files in it", target)
    try:
        vad = vad_from_args(args)
        _init(str(args.model), args.hop, args.silence_dbfs, vad, args.classes)
    except (ModelError, ValueError, VadUnavailable) as exc:
        logger.error("%s", exc)
        if out is not sys.stdout:
            out.close()
        return 2
    labels = _recognizer.labels
    failed, short_without_windows, pool = len(missing), 0, None
    try:
        writer = Writer(out, args.format, args.per, labels)
        show = args.progress if args.progress is not None else (len(files) > 1 and sys.stderr.isatty())
        # forkserver: workers never inherit this process's onnxruntime session or threads through fork()
        pool = ProcessPoolExecutor(min(args.jobs, len(files)), mp_context=multiprocessing.get_context("forkserver"),
                                   initializer=_init,
                                   initargs=(str(args.model), args.hop, args.silence_dbfs, vad, args.classes,
                                             args.verbose)) \
            if args.jobs > 1 and len(files) > 1 else None
        results = pool.map(_score, files, chunksize=1) if pool else map(_score, files)
        with logging_redirect_tqdm(), tqdm(total=len(files), unit="file", file=sys.stderr, disable=not show) as bar:
            for path, scores, error in results:  # in the order given, whatever finishes first
                if error is not None:
                    failed += 1
                    logger.error("%s", error if str(path) in error else f"{path}: {error}")
                else:
                    table = rows(scores, args.per)
                    if args.per == "window" and scores.summary.short:
                        short_without_windows += 1
                    for row in table:
                        writer.write(row)
                    out.flush()
                bar.update()
        if pool:
            pool.shutdown()
    except BrokenPipeError:  # `emostream-score talk.wav | head`: the reader has all it wanted
        quiet_stdout()
        if pool:
            pool.shutdown(cancel_futures=True)
        return 1 if failed else 0
    finally:
        if out is not sys.stdout:
            out.close()
    if short_without_windows:  # the daemon scores such a stream once, at its end: an utterance, no window
        logger.warning("%d file(s) shorter than one window have no window rows; each is one utterance flagged short "
                       "(--per utterance or --per file)", short_without_windows)
    if failed:
        logger.error("%d of %d inputs could not be scored", failed, len(files) + len(missing))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
