"""``emostream-calibration``: how often an answer is right at the top probability the model gives it.

A user sees one number beside each answer, the top class's probability (the dashboard turns it into "sure", "fairly
sure" or "unsure": ``emostream.confidence``). Whether that number means the same on a voice, a language or a room the
model never heard is a measurement, not a property of softmax outputs. This reads an ``emostream-evaluate`` (or
``emostream-ensemble``) folder's per-clip probabilities — each clip scored as the daemon scores an utterance — and
reports, per part (validation actors, unseen test actors, the other corpus): accuracy against the top probability
in bins (a reliability diagram), the expected calibration error, how often each confidence word was right, and how
accuracy rises as answers below a threshold are withheld. Argmax over all the model's outputs, as every figure of
the project; clips of all folds pooled (the other corpus is scored once per fold, so each of its clips counts once
per fold's model). ``--scored`` reads ``emostream-score`` JSON lines instead (windows, utterances or files of
RAVDESS or EmoDB, the truth read from each file's name): the level the dashboard shows, for any ONNX model. Writes
``calibration.json``, ``calibration.md`` and ``calibration.png``. Nothing is chosen on it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

from emostream.confidence import CONFIDENCE_BANDS, confidence_word
from emostream.train.data import EMOTIONS as RAVDESS_CODES
from emostream.train.data import parse_ravdess_name
from emostream.train.emodb import EMOTIONS as EMODB_CODES
from emostream.train.emodb import parse_emodb_name
from emostream.train.evaluate import CLIP_WEIGHTS, RUN_PARTS

logger = logging.getLogger(__name__)

RAVDESS_EMOTIONS = tuple(RAVDESS_CODES.values())  # the classes file names can tell apart (EmoDB's map onto six)
#: Edges of the top-probability bins (the top probability of eight classes is at least 1/8).
BIN_EDGES = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: Thresholds of the withholding curve: answers whose top probability is below one are not given.
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 0.96, 0.05))
#: Short names for tables; ``PART_NOTES`` says what each holds.
PART_NAMES = {"val": "validation actors", "test": "unseen actors", "cross": "other corpus",
              "ravdess": "RAVDESS files", "emodb": "EmoDB files"}
PART_NOTES = {"val": "RAVDESS actors held out of training whose clips early stopping watched",
              "test": "RAVDESS actors the run never heard (the test actors of each fold)",
              "cross": "the corpus the recipe never trained on (EmoDB for the emobox and corpus protocols: German, "
                       "six of the eight classes, so an answer of calm or surprised is always wrong there)",
              "ravdess": "rows of RAVDESS files scored by emostream-score (the true emotion from each name)",
              "emodb": "rows of EmoDB files scored by emostream-score (the true emotion from each name; boredom, "
                       "which no class holds, left out; an answer of calm or surprised is always wrong)"}
#: Parts of another corpus, which lacks some of the model's classes (EmoDB: calm, surprised); their answers naming
#: one of its own classes get their own view.
OTHER_CORPUS_PARTS = ("cross", "emodb")
EMODB_EMOTIONS = tuple(e for e in EMODB_CODES.values() if e)  # boredom (None) is no class of the model


def top_and_correct(probabilities: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each answer's top probability and whether its argmax is the true class. Raises ``ValueError`` for rows that
    are not probability vectors (non-finite, negative, or not summing to 1 within 1e-3) or a length mismatch."""
    p, y = np.asarray(probabilities, dtype=np.float64), np.asarray(y_true)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probabilities of shape {p.shape} for {len(y)} labels: expected one row per label")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("probabilities: every row must be finite, non-negative and sum to 1")
    # A row summing to 1 + 1e-3 may top 1 by as much: clipped, so the last bin (closed at 1) holds it.
    return np.minimum(p.max(axis=1), 1.0), p.argmax(axis=1) == y


def reliability_bins(top_p: np.ndarray, correct: np.ndarray, edges=BIN_EDGES) -> list[dict]:
    """Per bin [low, high) (the last one closed): answers, their share, accuracy and mean top probability (None
    for an empty bin)."""
    out = []
    for i, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        inside = (top_p >= low) & ((top_p < high) if i < len(edges) - 2 else (top_p <= high))
        n = int(inside.sum())
        out.append({"low": low, "high": high, "n": n, "share": n / max(len(top_p), 1),
                    "accuracy": float(correct[inside].mean()) if n else None,
                    "mean_top_p": float(top_p[inside].mean()) if n else None})
    return out


def calibration_error(bins: list[dict]) -> float:
    """Expected calibration error: the share-weighted mean gap between accuracy and mean top probability."""
    return float(sum(b["share"] * abs(b["accuracy"] - b["mean_top_p"]) for b in bins if b["n"]))


def word_table(top_p: np.ndarray, correct: np.ndarray, bands=CONFIDENCE_BANDS) -> list[dict]:
    """Per confidence word (highest band first): its share of answers and how often those were right. Each answer
    gets its word from ``confidence_word``, the rule the daemon's hello hands the dashboard."""
    words = np.array([confidence_word(float(t), bands) for t in top_p], dtype=object)
    out = []
    for lowest, word in bands:
        inside = words == word
        n = int(inside.sum())
        out.append({"word": word, "min_top_p": lowest, "n": n, "share": n / max(len(top_p), 1),
                    "accuracy": float(correct[inside].mean()) if n else None})
    return out


def withholding_curve(top_p: np.ndarray, correct: np.ndarray, thresholds=THRESHOLDS) -> list[dict]:
    """Per threshold: the share of answers given (top probability ≥ threshold) and their accuracy (None if none)."""
    out = []
    for t in thresholds:
        given = top_p >= t
        out.append({"threshold": float(t), "share_given": float(given.mean()),
                    "accuracy": float(correct[given].mean()) if given.any() else None})
    return out


def part_report(probabilities: np.ndarray, y_true: np.ndarray, classes: list[str],
                held: list[int] | None = None) -> dict:
    """Every view of one part's answers. ``held``: the model's classes (indices) the part's corpus has, for a
    corpus lacking some of them (EmoDB: calm, surprised); then ``answers_of_its_classes``: the same views over the
    answers naming a class it holds — how much of the miscalibration is answers it cannot get right."""
    top_p, correct = top_and_correct(probabilities, y_true)
    bins = reliability_bins(top_p, correct)
    out = {"n": int(len(top_p)), "accuracy": float(correct.mean()), "mean_top_p": float(top_p.mean()),
           "calibration_error": calibration_error(bins), "bins": bins, "words": word_table(top_p, correct),
           "withholding": withholding_curve(top_p, correct)}
    if held is None:
        return out
    answers = np.isin(np.asarray(probabilities).argmax(axis=1), held)
    if answers.any() and not answers.all():
        inner = reliability_bins(top_p[answers], correct[answers])
        out["answers_of_its_classes"] = {
            "classes": [classes[c] for c in held], "share_of_answers": float(answers.mean()),
            "n": int(answers.sum()), "accuracy": float(correct[answers].mean()),
            "mean_top_p": float(top_p[answers].mean()), "calibration_error": calibration_error(inner),
            "bins": inner, "words": word_table(top_p[answers], correct[answers])}
    return out


def load_parts(folder: Path, source: str = "tail_average") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per part, the per-clip probabilities and true labels of every fold of a run, pooled. Raises ``ValueError``
    (one line) for a folder without per-clip probabilities or without ``source``."""
    folds_json = folder / "folds.json"
    if not folds_json.is_file():
        raise ValueError(f"{folder}: no folds.json (not an emostream-evaluate or emostream-ensemble folder)")
    try:
        folds = json.loads(folds_json.read_text())
    except ValueError as exc:
        raise ValueError(f"{folds_json}: not JSON ({exc})") from None
    pooled: dict[str, list] = {}
    for fold in folds:
        clips = fold.get("clip_probabilities")
        if not clips:
            raise ValueError(f"{folder}: fold {fold.get('fold')!r} has no per-clip probabilities")
        if source not in clips:
            raise ValueError(f"{folder}: fold {fold.get('fold')!r} has no {source!r} probabilities "
                             f"(it has {', '.join(k for k in clips if k not in ('rows', 'y_true'))})")
        for part, p in clips[source].items():
            if part in RUN_PARTS and len(p):
                if part not in clips.get("y_true", {}):
                    raise ValueError(f"{folder}: fold {fold.get('fold')!r} has no true labels for {part!r}")
                pooled.setdefault(part, [[], []])
                pooled[part][0].append(np.asarray(p, dtype=np.float64))
                pooled[part][1].append(np.asarray(clips["y_true"][part]))
    if not pooled:
        raise ValueError(f"{folder}: no clips in any part")
    return {part: (np.concatenate(ps), np.concatenate(ys)) for part, (ps, ys) in pooled.items()}


def true_emotion(file: str) -> tuple[str, str | None]:
    """The corpus and true emotion a file's name gives (RAVDESS or EmoDB naming; None for EmoDB's boredom, which
    no model class holds). Raises ``ValueError`` (one line) for a name of neither."""
    name = Path(file).name
    for corpus, parse in (("ravdess", parse_ravdess_name), ("emodb", parse_emodb_name)):
        try:
            return corpus, parse(name)["emotion"]
        except ValueError:
            continue
    raise ValueError(f"{file}: the true emotion is not in its name (RAVDESS or EmoDB naming expected)")


def load_scored(paths: list[Path]) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    """Per corpus, the probabilities, true labels and class names of ``emostream-score --format jsonl`` rows (per
    window, utterance or file; rows the gates left unclassified and clips of a class the model lacks left out), with
    the true emotion read from each file's name. Raises ``ValueError`` (one line) for rows of another shape
    or labels."""
    labels, pooled = None, {}
    for path in paths:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"--scored {path}: {exc.strerror or exc}") from None
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                file, probabilities = row["file"], row["probabilities"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"--scored {path}:{number}: not an emostream-score JSON line "
                                 "(--format jsonl)") from None
            if probabilities is None:
                continue
            if labels is None:
                labels = list(probabilities)
                if set(labels) != set(RAVDESS_EMOTIONS):
                    raise ValueError(f"--scored {path}:{number}: scores over {', '.join(labels)}, not the eight "
                                     "RAVDESS classes (--classes output is renormalised: score without it)")
            if list(probabilities) != labels:
                raise ValueError(f"--scored {path}:{number}: labels {list(probabilities)} differ from {labels}")
            if not all(type(v) in (int, float) and math.isfinite(v) for v in probabilities.values()):
                raise ValueError(f"--scored {path}:{number}: a probability is not a finite number")
            corpus, emotion = true_emotion(file)
            if emotion not in labels:
                continue
            part = pooled.setdefault(corpus, ([], []))
            part[0].append([probabilities[k] for k in labels])
            part[1].append(labels.index(emotion))
    if not pooled:
        raise ValueError("--scored: no classified row of a class the model has")
    return {corpus: (np.asarray(p, dtype=np.float64), np.asarray(y), labels) for corpus, (p, y) in pooled.items()}


def held_classes(part: str, classes: list[str]) -> list[int] | None:
    """The model's classes (indices) a part's corpus has: EmoDB's six for the other corpus, None (all) otherwise."""
    return [classes.index(e) for e in EMODB_EMOTIONS if e in classes] if part in OTHER_CORPUS_PARTS else None


def report(folder: Path, source: str = "tail_average") -> dict:
    """Every view of an evaluation run's parts. Raises ``ValueError`` (one line, naming the folder) for a folder
    that is not a run or holds rows that are not probabilities."""
    parts = load_parts(folder, source)
    try:
        summary = json.loads((folder / "evaluation.json").read_text())
        classes = summary["classes"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{folder}: no readable evaluation.json with its classes ({exc})") from None
    if summary.get("protocol") == "corpus" and "cross" not in parts:  # its test part is the other corpus (EmoDB)
        parts = {("cross" if part == "test" else part): rows for part, rows in parts.items()}
    out = {"kind": "run", "run": folder.name, "source": source, "protocol": summary.get("protocol"),
           "classes": classes, "parts": {}}
    for part, (p, y) in parts.items():
        try:
            out["parts"][part] = part_report(p, y, classes, held_classes(part, classes))
        except ValueError as exc:
            raise ValueError(f"{folder}: {part} ({source}): {exc}") from None
    return out


def report_scored(paths: list[Path]) -> dict:
    """Every view of ``emostream-score`` rows, per corpus (``load_scored``)."""
    parts = load_scored(paths)
    return {"kind": "scored", "run": ", ".join(f.name for f in paths), "source": ", ".join(map(str, paths)),
            "parts": {c: part_report(p, y, labels, held_classes(c, labels)) for c, (p, y, labels) in parts.items()}}


def _percent(v) -> str:
    return "—" if v is None else f"{100 * v:.0f} %"


def markdown(result: dict) -> str:
    parts = result["parts"]
    lines = [f"# How far to trust an answer: {result['run']}", "",
             (f"Per-clip probabilities ({result['source'].replace('_', ' ')}) of every fold, pooled; each clip scored "
              "as the daemon scores an utterance" if result["kind"] == "run" else
              f"Rows of {result['source']}, as the daemon gave them") +
             "; argmax over all the model's outputs. `emostream-calibration`.", ""]
    lines += [f"- **{PART_NAMES[p]}**: {PART_NOTES[p]}." for p in parts]
    lines += ["",
             "| part | answers | accuracy | mean top probability | calibration error |", "|---|---|---|---|---|"]
    for part, r in parts.items():
        lines.append(f"| {PART_NAMES[part]} | {r['n']} | {_percent(r['accuracy'])} | {_percent(r['mean_top_p'])} | "
                     f"{r['calibration_error']:.3f} |")
    lines += ["", "How often each word the dashboard shows was right (share of answers given that word, accuracy):", "",
              "| word (top probability) | " + " | ".join(PART_NAMES[p] for p in parts) + " |",
              "|---|" + "---|" * len(parts)]
    for i, (lowest, word) in enumerate(CONFIDENCE_BANDS):
        cells = [f"{_percent(w['share'])} of answers, right {_percent(w['accuracy'])}"
                 for w in (parts[p]["words"][i] for p in parts)]
        upper = CONFIDENCE_BANDS[i - 1][0] if i else None
        span = f"≥ {lowest:.1f}" if upper is None else f"< {upper:.1f}" if lowest == 0 else f"{lowest:.1f}–{upper:.1f}"
        lines.append(f"| {word} ({span}) | " + " | ".join(cells) + " |")
    held = {p: r["answers_of_its_classes"] for p, r in parts.items() if r.get("answers_of_its_classes")}
    for part, r in held.items():
        words = ", ".join(f"{w['word']} right {_percent(w['accuracy'])} ({_percent(w['share'])})" for w in r["words"])
        lines += ["", f"**{PART_NAMES[part]}** holds {len(r['classes'])} of the model's classes; "
                  f"{_percent(1 - r['share_of_answers'])} of its answers name another class (always wrong there). "
                  f"Among the other {r['n']}: accuracy {_percent(r['accuracy'])} at a mean top probability of "
                  f"{_percent(r['mean_top_p'])}; {words}."]
    lines += ["", "Accuracy by top probability (a reliability diagram in numbers; share of answers in brackets):", "",
              "| top probability | " + " | ".join(PART_NAMES[p] for p in parts) + " |", "|---|" + "---|" * len(parts)]
    for i, b in enumerate(next(iter(parts.values()))["bins"]):
        cells = [f"{_percent(parts[p]['bins'][i]['accuracy'])} ({_percent(parts[p]['bins'][i]['share'])})"
                 for p in parts]
        lines.append(f"| {b['low']:.1f}–{b['high']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Accuracy against top probability, and against the share of answers given: read at a glance where
    confidence stops meaning the same thing."""
    from emostream.train.report import _pyplot

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    left.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="calibrated")
    for part, r in result["parts"].items():
        full = [b for b in r["bins"] if b["n"] >= 20]
        left.plot([b["mean_top_p"] for b in full], [b["accuracy"] for b in full], marker="o", label=PART_NAMES[part])
        given = [w for w in r["withholding"] if w["accuracy"] is not None and w["share_given"] >= 0.02]
        right.plot([w["share_given"] for w in given], [w["accuracy"] for w in given], marker=".",
                   label=PART_NAMES[part])
    left.set(xlabel="top probability (bin mean; bins of ≥ 20 answers)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
             title="Reliability")
    right.set(xlabel="share of answers given (the least sure withheld)", ylabel="accuracy of the answers given",
              xlim=(1.02, 0), ylim=(0, 1), title="Withholding unsure answers")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"How far to trust an answer: {result['run']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emostream-calibration", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("run", type=Path, nargs="?", help="an emostream-evaluate or emostream-ensemble output folder")
    p.add_argument("--scored", type=Path, action="append", default=[], metavar="JSONL",
                   help="instead of a run: emostream-score --format jsonl output (any --per) of RAVDESS or EmoDB "
                        "files, the truth read from their names (repeatable); needs --out")
    p.add_argument("--source", choices=CLIP_WEIGHTS,
                   help="a run's probabilities of which weights: the tail average (default), the chosen checkpoint, "
                        "or a version 4 run's tail average heard cold (each clip from the prior baseline)")
    p.add_argument("--out", type=Path, help="output folder (default: the run's folder)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (args.run is None) == (not args.scored):
        p.error("give a run folder or --scored files, not both or neither")
    if args.scored and args.out is None:
        p.error("--scored: name the output folder (--out)")
    if args.scored and args.source:
        p.error("--source: for a run folder; --scored rows are what the daemon gave")
    try:
        result = report_scored(args.scored) if args.scored else report(args.run, args.source or "tail_average")
    except (ValueError, OSError) as exc:
        p.error(str(exc).splitlines()[0])
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(result, indent=1))
    (out / "calibration.md").write_text(markdown(result))
    plot(result, out / "calibration.png")
    for part, r in result["parts"].items():
        logger.info("%s: %d answers, accuracy %.3f, mean top probability %.3f, calibration error %.3f", part, r["n"],
                    r["accuracy"], r["mean_top_p"], r["calibration_error"])
    logger.info("wrote %s", out / "calibration.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
