"""``emostream-compare``: one table (and chart) over several ``emostream-evaluate`` runs — the ablation.

Each run is a folder holding ``evaluation.json``. The table says what each run changed against the
baseline run, the validation UAR its checkpoint was chosen on (the only figure used to pick a
variant), and its test figures, which are reported but never used to choose.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np

from emostream.train import report
from emostream.train.evaluate import EXPORTED_SUFFIX, MEMBER_SETTINGS, Preset, member_differences, tail_span

logger = logging.getLogger(__name__)

def load_run(folder: Path) -> dict:
    """The figures the table needs from one evaluation folder (means over its folds)."""
    path = Path(folder) / "evaluation.json"
    try:
        data = json.loads(path.read_text())
        preset = dataclasses.asdict(Preset.from_record(data["preset"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable evaluation result ({exc})") from exc
    try:
        return table_row(folder, data, preset)
    except (KeyError, IndexError, TypeError) as exc:  # e.g. a ship run (no test part) or an --onnx run (no history)
        what = ("it scored an exported model (--onnx): no training history or validation figures"
                if str(data.get("preset", {}).get("name", "")).endswith(EXPORTED_SUFFIX)
                else "it lacks test or validation figures")
        raise ValueError(f"{path}: not a run this table compares: {what} ({type(exc).__name__}: {exc})") from None


def table_row(folder, data: dict, preset: dict) -> dict:
    folds = data["folds"]
    # The checkpoint's validation UAR; runs from before folds kept it read it from their history. An ensemble's
    # folds have no history: theirs is the ensemble's own validation score.
    val_uar = [f["val"]["uar"] if "uar" in f.get("val", {}) else f["history"][f["epoch"] - 1]["val_uar"]
               for f in folds]
    first = [f["test_first_window"]["accuracy"] for f in folds if f.get("test_first_window")]
    summary = data["summary"]
    return {"folder": str(folder), "name": preset["name"], "protocol": data["protocol"], "preset": preset,
            "n_folds": len(folds), "val_uar": float(np.mean(val_uar)),
            "accuracy": summary["accuracy"]["mean"], "accuracy_std": summary["accuracy"]["std"],
            "macro_f1": summary["macro_f1"]["mean"], "uar": summary["uar"]["mean"],
            "first_window_accuracy": float(np.mean(first)) if first else None,
            "cross_uar": summary.get("cross_uar", {}).get("mean"), "selection": summary.get("selection"),
            "epochs": [f"{f['epoch']}/{f['epochs_run']}" for f in folds],
            "fold_accuracy": {f["fold"]: f["test"]["accuracy"] for f in folds},
            "change": ensemble_change(data, folds[0].get("members"))}


def ensemble_change(data: dict, members: int | None) -> str | None:
    """An ensemble's note for the change column; a mixed one's settings hold a default where its members differ, so
    each member's value (``member_dropout``: one per member, …) is named here."""
    if not members:
        return None
    differ = member_differences({f"member_{k}": data[f"member_{k}"] for k in MEMBER_SETTINGS if f"member_{k}" in data})
    return (f"seed ensemble of {members} runs of these settings (probabilities averaged)"
            + (f"; members differ in {differ}" if differ else ""))


def load_runs(folder: Path) -> list[dict]:
    """The run's row, and a second row for its tail-averaged weights when every fold scored them."""
    run = load_run(folder)  # ValueError (one line) for a folder it cannot read
    try:
        return [run, *tail_average_row(run, json.loads((Path(folder) / "evaluation.json").read_text())["folds"])]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{folder}: unreadable tail-average figures ({exc})") from exc


def tail_average_row(run: dict, folds: list[dict]) -> list[dict]:
    """[the row of the run's tail-averaged weights], or [] when some fold did not score them."""
    tails = [f.get("tail_average") for f in folds]
    if not all(t and "test" in t for t in tails):
        return []
    epochs = ", ".join(sorted({tail_span(t) for t in tails}))
    tail = {**run, "name": f"{run['name']} (tail average)", "against": run,
            "change": (f"{run['change']}, each " if run.get("change") else "") +
                      f"weights averaged over epochs {epochs} (Δ against this run's checkpoints)",
            "val_uar": float(np.mean([t["val"]["uar"] for t in tails])),
            "accuracy": float(np.mean([t["test"]["accuracy"] for t in tails])),
            "accuracy_std": float(np.std([t["test"]["accuracy"] for t in tails])),
            "macro_f1": float(np.mean([t["test"]["macro_f1"] for t in tails])),
            "uar": float(np.mean([t["test"]["uar"] for t in tails])), "first_window_accuracy": None,
            "epochs": [f"{tail_span(t)}/{f['epochs_run']}" for f, t in zip(folds, tails, strict=True)],
            "fold_accuracy": {f["fold"]: t["test"]["accuracy"] for f, t in zip(folds, tails, strict=True)}}
    if all("cross" in t for t in tails):
        tail["cross_uar"] = float(np.mean([t["cross"]["uar"] for t in tails]))
        tail["selection"] = (tail["uar"] + tail["cross_uar"]) / 2
    else:
        tail["cross_uar"] = tail["selection"] = None
    return [tail]


def accuracy_gain(run: dict, baseline: dict) -> str:
    """Test accuracy against the baseline on the folds both ran (a partial run is not compared with all six)."""
    shared = sorted(set(run["fold_accuracy"]) & set(baseline["fold_accuracy"]))
    if run is baseline or not shared:
        return "—"
    gain = np.mean([run["fold_accuracy"][f] - baseline["fold_accuracy"][f] for f in shared])
    partial = len(shared) < max(len(run["fold_accuracy"]), len(baseline["fold_accuracy"]))
    return f"{gain * 100:+.1f} pt" + (f" (on the {len(shared)} shared folds)" if partial else "")


def changes(preset: dict, baseline: dict) -> str:
    """``field: baseline → this`` for every setting that differs (the name aside)."""
    diffs = [f"{k}: {_show(baseline.get(k))} → {_show(v)}" for k, v in preset.items()
             if k != "name" and baseline.get(k) != v]
    return "; ".join(diffs) or "(baseline)"


def _num(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def table(runs: list[dict], baselines: dict[str, dict]) -> list[str]:
    """One row per run, compared with the baseline of its own protocol."""
    lines = ["| run | protocol | change against the baseline | val UAR (chooses) | test accuracy | Δ accuracy | "
             "macro-F1 | UAR | EmoDB UAR (cross-corpus) | selection score | first window | epoch used / run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        baseline = baselines[r["protocol"]]
        spread = f" ± {r['accuracy_std']:.1%}" if r["n_folds"] > 1 else ""
        first = f"{r['first_window_accuracy']:.1%}" if r["first_window_accuracy"] is not None else "—"
        change = changes(r["preset"], baseline["preset"])
        if change == "(baseline)" and r is not baseline:
            change = r.get("change") or "(the baseline's settings; other folds or a merge)"
        elif r.get("change"):
            change += "; " + r["change"]
        lines.append(f"| `{r['name']}` ({Path(r['folder']).name}) | {r['protocol']} | {change} | "
                     f"{r['val_uar']:.3f} | {r['accuracy']:.2%}{spread} | "
                     f"{accuracy_gain(r, r.get('against', baseline))} | {r['macro_f1']:.3f} | "
                     f"{r['uar']:.3f} | {_num(r['cross_uar'])} | {_num(r['selection'])} | {first} | "
                     f"{', '.join(r['epochs'])} |")
    return lines


def plot(runs: list[dict], path: Path) -> None:
    """Validation UAR (what chooses) beside test accuracy (what is reported), one pair of bars per run; horizontal,
    so a table of a hundred runs still reads as a chart."""
    plt = report._pyplot()
    names = [Path(r["folder"]).name + (" · tail average" if is_tail_average(r) else "") for r in runs]
    y = np.arange(len(runs))
    fig, ax = plt.subplots(figsize=(12.0, 1.2 + 0.3 * len(runs)))
    ax.barh(y - 0.2, [r["val_uar"] for r in runs], 0.4, label="validation UAR (chooses)")
    ax.barh(y + 0.2, [r["accuracy"] for r in runs], 0.4, xerr=[r["accuracy_std"] for r in runs],
            label="test accuracy (reported)")
    for i, r in enumerate(runs):
        ax.text(r["accuracy"] + r["accuracy_std"] + 0.01, i + 0.2, f"{r['accuracy']:.1%}", va="center", fontsize=7)
    ax.set_yticks(y, names, fontsize=7)
    ax.set_ylim(len(runs) - 0.4, -0.6)  # the table's order, top to bottom
    ax.set(xlim=(0.0, 1.3), xlabel="score", title="Ablation: each run (its folder) against the baseline")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def is_tail_average(row: dict) -> bool:
    """Whether a row is a run's tail-averaged weights (``tail_average_row``), not its checkpoints."""
    return row["name"].endswith("(tail average)")


def transfer_points(runs: list[dict]) -> tuple[list[str], list[dict]]:
    """The runs the transfer chart can place side by side: those with a cross-corpus figure, on the set of test
    folds most of them share (figures on other folds are not comparable). → (those folds, those runs)."""
    crossed = [r for r in runs if r.get("cross_uar") is not None and r["fold_accuracy"]]
    if not crossed:
        return [], []
    sets = [tuple(sorted(r["fold_accuracy"])) for r in crossed]
    common = max(dict.fromkeys(sets), key=sets.count)  # ties: the first seen
    return list(common), [r for r, s in zip(crossed, sets, strict=True) if s == common]


def decision_points(runs: list[dict]) -> list[dict]:
    """The transfer chart's numbered points: seed ensembles' tail averages — the form in which the selection rule
    has judged candidates since two-seed ensembles became its unit (single seeds are views, grey dots)."""
    return [r for r in runs if "ensemble" in (r.get("change") or "") and is_tail_average(r)]


def plot_transfer(runs: list[dict], folds: list[str], path: Path) -> None:
    """Unseen-actor UAR (x) against cross-corpus UAR (y), one point per run: the selection figure is their mean, so
    its lines run diagonally. Seed ensembles' tail averages are numbered (``decision_points``; the key is a table
    below the chart); every other row (single seeds, checkpoints) is a grey dot."""
    plt = report._pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 7.0))
    numbered = decision_points(runs)
    others = [r for r in runs if not any(r is n for n in numbered)]
    x = np.array([r["uar"] for r in runs])
    y = np.array([r["cross_uar"] for r in runs])
    x_lim = (x.min() - 0.01, x.max() + 0.01)
    y_lim = (y.min() - 0.01, max(y.max(), 0.5) + 0.01)
    for level in np.arange(np.floor((x_lim[0] + y_lim[0]) * 20) / 40, (x_lim[1] + y_lim[1]) / 2, 0.025):
        ax.plot(x_lim, [2 * level - x_lim[0], 2 * level - x_lim[1]], color="0.85", lw=0.8, zorder=0)
        top, left = 2 * level - y_lim[1], 2 * level - x_lim[0]  # where the line meets the top or the left edge
        if x_lim[0] < top < x_lim[1]:
            ax.text(top + 0.002, y_lim[1] - 0.002, f"{level:.3f}", fontsize=7, color="0.5", va="top")
        elif y_lim[0] < left < y_lim[1]:
            ax.text(x_lim[0] + 0.002, left - 0.002, f"{level:.3f}", fontsize=7, color="0.5", va="top")
    ax.axhline(0.5, color="tab:red", lw=0.8, ls="--")
    ax.text(x_lim[1] - 0.002, 0.501, "cross-corpus target (UAR 0.50)", fontsize=7, color="tab:red", va="bottom",
            ha="right")
    ax.scatter([r["uar"] for r in others], [r["cross_uar"] for r in others], s=12, color="0.65",
               label="one seed, or an ensemble's checkpoints")
    if numbered:
        ax.scatter([r["uar"] for r in numbered], [r["cross_uar"] for r in numbered], s=28, color="tab:blue",
                   label="seed ensemble, tail average (numbered: the key below the chart)")
    for i, r in enumerate(numbered, start=1):
        ax.annotate(str(i), (r["uar"], r["cross_uar"]), fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax.set(xlim=x_lim, ylim=y_lim, xlabel="unseen actors: UAR (mean over folds)",
           ylabel="cross-corpus: UAR (mean over the same fold models)")
    ax.set_title(f"Transfer: {len(runs)} rows on {', '.join(folds)}\n(a run's checkpoints and its tail average are "
                 "two rows); grey diagonals: the selection figure (their mean)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def transfer_key(runs: list[dict]) -> list[str]:
    """The numbered points of the transfer chart as a Markdown table; no lines when nothing is numbered."""
    numbered = decision_points(runs)
    if not numbered:
        return []
    lines = ["| # | run | unseen-actor UAR | cross-corpus UAR | selection |", "|---|---|---|---|---|"]
    for i, r in enumerate(numbered, start=1):
        lines.append(f"| {i} | `{r['name']}` ({Path(r['folder']).name}) | {r['uar']:.3f} | {r['cross_uar']:.3f} | "
                     f"{r['selection']:.4f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emostream-compare", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="evaluation folders (each with evaluation.json)")
    p.add_argument("--baseline", type=Path, action="append", default=[],
                   help="a run the others of its protocol are compared with (repeatable; default: the first "
                        "run of each protocol)")
    p.add_argument("--out", type=Path, required=True, help="Markdown file to write; the chart goes beside it")
    p.add_argument("--title", default="Ablation")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        runs = [row for folder in dict.fromkeys([*args.baseline, *args.runs]) for row in load_runs(folder)]
    except ValueError as exc:
        p.error(str(exc))
    baselines: dict[str, dict] = {}
    for r in runs:  # named baselines come first, so they win their protocol
        baselines.setdefault(r["protocol"], r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    chart = args.out.with_suffix(".png")
    plot(runs, chart)
    transfer_folds, transfer_runs = transfer_points(runs)
    transfer_chart = args.out.with_name(f"{args.out.stem}-transfer.png")
    if transfer_runs:
        plot_transfer(transfer_runs, transfer_folds, transfer_chart)
    named = ", ".join(f"`{b['name']}` for {protocol} ({b['folder']})" for protocol, b in baselines.items())
    lines = [f"# {args.title}", "", f"Baselines: {named}. Validation UAR is the mean over folds of the checkpoint's "
             "validation UAR; test figures are means over folds, reported but never used to choose. A checkpoint's "
             "validation UAR is the best of the epochs it was chosen from (biased upward); a tail average's is one "
             "scoring, so the two are not comparable on that column.", "",
             *table(runs, baselines), "", f"![ablation chart]({chart.name})", "",
             *([f"Unseen-actor UAR against cross-corpus UAR, the {len(transfer_runs)} rows with both on "
                f"{', '.join(transfer_folds)}:", "", f"![transfer chart]({transfer_chart.name})", "",
                *transfer_key(transfer_runs), ""]
               if transfer_runs else [])]
    args.out.write_text("\n".join(lines))
    report.write_json(args.out.with_suffix(".json"), [{k: v for k, v in r.items() if k != "against"} for r in runs])
    logger.info("compared %d runs → %s", len(runs), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
