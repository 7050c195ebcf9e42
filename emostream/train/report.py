"""What a training run leaves behind: curves, confusion matrix, classification report, metrics card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: The reference notebook's own figures (random 80/20 split, validation = test).
REFERENCE = {"peak_accuracy": 0.8126, "peak_epoch": 41, "final_accuracy": 0.80}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: dict, path: Path) -> None:
    """Accuracy and loss per epoch, training vs validation, side by side."""
    plt = _pyplot()
    epochs = np.arange(1, len(history["accuracy"]) + 1)
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("accuracy", "train"), ("val_accuracy", "validation")):
        ax_acc.plot(epochs, history[key], label=label)
    best = int(np.argmax(history["val_accuracy"]))
    ax_acc.axhline(REFERENCE["peak_accuracy"], color="grey", ls="--", lw=1, label="reference peak 81.26 %")
    ax_acc.scatter([best + 1], [history["val_accuracy"][best]], color="red", zorder=3, label="best epoch")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1))
    ax_acc.legend(loc="lower right")
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        if key in history:
            ax_loss.plot(epochs, history[key], label=label)
    ax_loss.set(xlabel="epoch", ylabel="categorical cross-entropy", title="Loss")
    ax_loss.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], path: Path, title: str) -> np.ndarray:
    """Row-normalised confusion matrix with counts in each cell; returns the count matrix."""
    from sklearn.metrics import confusion_matrix

    plt = _pyplot()
    counts = confusion_matrix(y_true, y_pred, labels=np.arange(len(classes)))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(image, ax=ax, label="fraction of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return counts


def classification_reports(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> tuple[str, dict]:
    """sklearn's per-class precision/recall/F1 as text and as a dict, plus UAR under ``uar``."""
    from sklearn.metrics import balanced_accuracy_score, classification_report

    labels = np.arange(len(classes))
    text = classification_report(y_true, y_pred, labels=labels, target_names=classes, digits=4, zero_division=0)
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=classes, output_dict=True, zero_division=0
    )
    report["uar"] = float(balanced_accuracy_score(y_true, y_pred))
    return text, report


def metrics_card(summary: dict, report: dict, classes: list[str]) -> str:
    """The short Markdown card committed next to the model."""
    h = summary["history"]
    final, best = h["val_accuracy"][-1], max(h["val_accuracy"])
    best_epoch = int(np.argmax(h["val_accuracy"])) + 1
    lines = [
        f"# Metrics card: {summary['run_id']}",
        "",
        f"Preset `{summary['preset']}`; {summary['n_clips']} clips ({summary['n_train']} train → "
        f"{summary['n_train_oversampled']} after oversampling, {summary.get('n_val', 0)} validation, "
        f"{summary['n_test']} test); "
        f"split seed {summary['split_seed']}; {len(h['accuracy'])} epochs, batch {summary['batch_size']}; "
        f"{summary['n_params']:,} parameters; {summary['train_seconds'] / 60:.1f} min on {summary['machine']}.",
        "",
        "Validation is carved from the training side (the reference notebook validated on its test split and",
        "picked a peak there); the *final-epoch* model is kept and the test split is scored once, at the end.",
        "",
        "| validation accuracy | final epoch | best epoch (not used) |",
        "|---|---|---|",
        f"| this run | **{final:.2%}** (epoch {len(h['accuracy'])}) | {best:.2%} (epoch {best_epoch}) |",
        f"| reference notebook (validated on its test split) | ~{REFERENCE['final_accuracy']:.0%} | "
        f"{REFERENCE['peak_accuracy']:.2%} "
        f"(epoch {REFERENCE['peak_epoch']}) |",
        "",
        f"Final-epoch model on the test split: accuracy {report['accuracy']:.2%}, macro-F1 "
        f"{report['macro avg']['f1-score']:.3f}, UAR {report['uar']:.3f}.",
        "",
        "| emotion | precision | recall | F1 | test clips |",
        "|---|---|---|---|---|",
    ]
    for name in classes:
        r = report[name]
        lines.append(
            f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} | {int(r['support'])} |"
        )
    lines += [
        "",
        "![accuracy and loss](curves.png)",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
    ]
    return "\n".join(lines)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float) + "\n")


def write_folds(path: Path, results: list[dict]) -> None:
    """``folds.json``: every fold's full result, one compact line per fold (per-clip probabilities: ~150 kB per
    EmoBox fold this way, four times that indented)."""
    path.write_text("[\n" + ",\n".join(json.dumps(r, default=float) for r in results) + "\n]\n")
