"""``emostream-train``: the reference recipe end to end, into one run folder.

The ``reference`` preset of ``emostream-evaluate`` on its ``random`` protocol (one training stack): RAVDESS
root → file index → feature banks (cached) → stratified 80/20 split, validation carved from the training
side → oversampled training part → CRNN → model, history, plots, reports, metrics card.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emostream.features import DEFAULT_CONFIG
from emostream.options import add_ranged
from emostream.train import report
from emostream.train.data import DatasetError, class_distribution

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """The reference recipe's training settings."""

    epochs: int = 100
    batch_size: int = 32
    test_fraction: float = 0.2
    split_seed: int = 42
    shuffle_seed: int = 42
    max_clips_per_class: int | None = None  # a small slice for quick runs and tests
    preset: str = "reference"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(prog="emostream-train", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="RAVDESS root (default: $RAVDESS_DIR or ../shared/data/ravdess)")
    p.add_argument("--out", type=Path, help="run folder (default: runs/<time>-<preset>)")
    add_ranged(p, "--epochs", int, defaults.epochs, 1, 10_000)
    add_ranged(p, "--batch-size", int, defaults.batch_size, 1, 4096)
    add_ranged(p, "--split-seed", int, defaults.split_seed, 0, 2**32 - 1)
    add_ranged(p, "--max-clips-per-class", int, None, 5, 100_000,
               help="use only the first N clips of each emotion (at least 5: the 20 %% test part holds every class)")
    p.add_argument("--cache-dir", type=Path, help="feature cache (default: $EMOSTREAM_CACHE or ~/.cache/emostream)")
    p.add_argument("--publish", type=Path, help="also copy the model and its reports into this folder (e.g. "
                   "models/reference/; not models/, whose files are the shipped model's)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def save_inference_model(model, path: Path) -> None:
    """Save weights and architecture without optimizer state (Keras 3 has no include_optimizer)."""
    import keras

    bare = keras.Model.from_config(model.get_config())  # same layers, never compiled (clone_model may compile)
    bare.set_weights(model.get_weights())
    bare.save(path)


def run(config: TrainConfig, data_dir, out: Path, cache_dir: Path | None) -> dict:
    """The ``reference`` preset of ``emostream-evaluate`` on its ``random`` protocol, written as one run folder.

    One training stack: the split, oversampling, feature banks and training loop are the evaluation code's.
    The validation part is carved from the training side; the final epoch's model is kept and the test part
    is scored once, at the end.
    """
    import keras

    from emostream.train.evaluate import PRESETS, prepare, run_fold, save_run_for_export

    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    preset = dataclasses.replace(PRESETS["reference"], epochs=config.epochs, batch_size=config.batch_size)
    data = prepare("random", preset, data_dir, seed=config.split_seed, cache_dir=cache_dir,
                   max_clips_per_class=config.max_clips_per_class)
    distribution = class_distribution(data.frame)
    logger.info("class distribution (%d clips):\n%s", len(data.frame), distribution.to_string())
    distribution.to_csv(out / "class_distribution.csv")
    (fold,) = data.folds
    result, model, _ = run_fold(preset, fold, data.y, data.classes, data.banks, config.split_seed, "[reference]")
    save_run_for_export(model, preset, data.classes, data.frame, fold, result, out)
    history = {key: [epoch[key] for epoch in result["history"]] for key in result["history"][0] if key != "epoch"}
    report.write_json(out / "history.json", history)
    y_true, y_pred = np.array(result["y_true"]), np.array(result["y_pred"])
    text, class_report = report.classification_reports(y_true, y_pred, data.classes)
    (out / "classification_report.txt").write_text(text)
    report.write_json(out / "classification_report.json", class_report)
    report.plot_history(history, out / "curves.png")
    report.plot_confusion(y_true, y_pred, data.classes, out / "confusion_matrix.png",
                          f"Test split, final epoch ({class_report['accuracy']:.1%})")
    summary = {
        "run_id": out.name, "preset": config.preset, "config": dataclasses.asdict(config),
        "features": DEFAULT_CONFIG.to_dict(), "classes": data.classes, "n_clips": len(data.frame),
        "n_train": len(fold["train"]), "n_val": len(fold["val"]), "n_test": len(fold["test"]),
        "n_train_oversampled": result["n_train_oversampled"],
        "split_seed": config.split_seed, "batch_size": config.batch_size, "n_params": int(model.count_params()),
        "final_val_accuracy": history["val_accuracy"][-1], "best_val_accuracy": max(history["val_accuracy"]),
        "best_epoch": int(np.argmax(history["val_accuracy"])) + 1,
        "test_accuracy": class_report["accuracy"], "test_macro_f1": class_report["macro avg"]["f1-score"],
        "test_uar": class_report["uar"], "train_seconds": result["seconds"], "total_seconds": time.time() - started,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, keras {keras.__version__}", "history": history,
    }
    report.write_json(out / "summary.json", {k: v for k, v in summary.items() if k != "history"})
    (out / "metrics.md").write_text(report.metrics_card(summary, class_report, data.classes))
    return summary


RUN_FILES = (
    "model.keras", "labels.json", "history.json", "summary.json", "curves.png", "confusion_matrix.png",
    "classification_report.txt", "classification_report.json", "test_files.csv", "metrics.md",
    "class_distribution.csv",
)


def publish(run_dir: Path, dest: Path) -> None:
    """Copy a finished run's small files (never the data) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        shutil.copy2(run_dir / name, dest / name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, split_seed=args.split_seed,
                         max_clips_per_class=args.max_clips_per_class)
    out = args.out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.preset}"
    try:
        summary = run(config, args.data_dir, out, args.cache_dir)
    except DatasetError as exc:
        logger.error("%s", exc)
        return 2
    if args.publish:
        publish(out, args.publish)
    logger.info("final val accuracy %.4f, best %.4f at epoch %d; outputs in %s",
                summary["final_val_accuracy"], summary["best_val_accuracy"], summary["best_epoch"], out)
    print(json.dumps({k: summary[k] for k in ("final_val_accuracy", "best_val_accuracy", "best_epoch")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
