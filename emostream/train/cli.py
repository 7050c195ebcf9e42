"""``emostream-train``: the reference recipe end to end, into one run folder.

RAVDESS root → file index → log-Mel windows (cached) → stratified 80/20 split → oversampled training
part → CRNN → model, history, plots, reports, metrics card.
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
from emostream.train import report
from emostream.train.data import DatasetError, class_distribution, index_ravdess
from emostream.train.featurize import extract_features
from emostream.train.prepare import split_and_oversample

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
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--split-seed", type=int, default=defaults.split_seed)
    p.add_argument("--max-clips-per-class", type=int, default=None, help="use only the first N clips of each emotion")
    p.add_argument("--cache-dir", type=Path, help="feature cache (default: $EMOSTREAM_CACHE or ~/.cache/emostream)")
    p.add_argument("--publish", type=Path, help="also copy the model and its reports into this folder (e.g. models/)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def select_slice(frame, max_per_class: int | None):
    if max_per_class is None:
        return frame
    return frame.groupby("emotion", sort=False).head(max_per_class).reset_index(drop=True)


def epoch_progress(total: int, history_path: Path):
    """A Keras callback: a tqdm bar over epochs, one log line per epoch, the history saved as it grows."""
    import keras
    from tqdm import tqdm

    class EpochProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=total, desc="epochs", unit="epoch", file=sys.stderr)
            self.history: dict[str, list[float]] = {}

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                self.history.setdefault(key, []).append(float(value))
            self.bar.update(1)
            self.bar.set_postfix(acc=f"{logs['accuracy']:.3f}", val_acc=f"{logs['val_accuracy']:.3f}")
            logger.info(
                "epoch %d/%d loss %.4f acc %.4f val_loss %.4f val_acc %.4f",
                epoch + 1, total, logs["loss"], logs["accuracy"], logs["val_loss"], logs["val_accuracy"],
            )
            report.write_json(history_path, self.history)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochProgress()


def save_inference_model(model, model_config, path: Path) -> None:
    """Save weights and architecture without optimizer state (Keras 3 has no include_optimizer)."""
    from emostream.train.model import build_crnn

    bare = build_crnn(model_config, DEFAULT_CONFIG, compile=False)
    bare.set_weights(model.get_weights())
    bare.save(path)


def run(config: TrainConfig, data_dir, out: Path, cache_dir: Path | None) -> dict:
    import keras

    from emostream.train.model import CrnnConfig, build_crnn

    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    index = index_ravdess(data_dir, seed=config.shuffle_seed)
    frame = select_slice(index.frame, config.max_clips_per_class)
    distribution = class_distribution(frame)
    logger.info("class distribution (%d clips, %d unparsable names):\n%s", len(frame), len(index.problems),
                distribution.to_string())
    distribution.to_csv(out / "class_distribution.csv")

    features = extract_features(index.root, list(frame["path"]), DEFAULT_CONFIG, cache_dir)
    frame = frame.set_index("path").loc[features.paths].reset_index()
    X = features.windows[..., np.newaxis]  # (N, n_mels, frames, 1)
    split = split_and_oversample(frame["emotion"], config.test_fraction, config.split_seed)
    n_classes = len(split.classes)
    Y = keras.utils.to_categorical(split.y, n_classes)
    frame.iloc[split.test].to_csv(out / "test_files.csv", index=False)
    report.write_json(out / "labels.json", split.classes)
    logger.info("train %d → %d oversampled, test %d", len(split.train), len(split.train_oversampled), len(split.test))

    keras.utils.set_random_seed(config.split_seed)
    model_config = CrnnConfig(n_classes=n_classes)
    model = build_crnn(model_config, DEFAULT_CONFIG)
    fit_started = time.time()
    progress = epoch_progress(config.epochs, out / "history.json")
    model.fit(
        X[split.train_oversampled], Y[split.train_oversampled],
        validation_data=(X[split.test], Y[split.test]),
        epochs=config.epochs, batch_size=config.batch_size, shuffle=True, verbose=0, callbacks=[progress],
    )
    train_seconds = time.time() - fit_started
    history = progress.history
    save_inference_model(model, model_config, out / "model.keras")

    probabilities = model.predict(X[split.test], batch_size=256, verbose=0)
    y_true, y_pred = split.y[split.test], probabilities.argmax(axis=1)
    text, class_report = report.classification_reports(y_true, y_pred, split.classes)
    (out / "classification_report.txt").write_text(text)
    report.write_json(out / "classification_report.json", class_report)
    report.plot_history(history, out / "curves.png")
    report.plot_confusion(y_true, y_pred, split.classes, out / "confusion_matrix.png",
                          f"Test split, final epoch ({class_report['accuracy']:.1%})")
    summary = {
        "run_id": out.name,
        "preset": config.preset,
        "config": dataclasses.asdict(config),
        "features": DEFAULT_CONFIG.to_dict(),
        "classes": split.classes,
        "n_clips": len(frame),
        "n_unparsable": len(index.problems),
        "n_undecodable": len(features.failures),
        "n_train": len(split.train),
        "n_train_oversampled": len(split.train_oversampled),
        "n_test": len(split.test),
        "split_seed": config.split_seed,
        "batch_size": config.batch_size,
        "n_params": int(model.count_params()),
        "final_val_accuracy": history["val_accuracy"][-1],
        "best_val_accuracy": max(history["val_accuracy"]),
        "best_epoch": int(np.argmax(history["val_accuracy"])) + 1,
        "test_accuracy": class_report["accuracy"],
        "test_macro_f1": class_report["macro avg"]["f1-score"],
        "test_uar": class_report["uar"],
        "train_seconds": train_seconds,
        "total_seconds": time.time() - started,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, keras {keras.__version__}",
        "history": history,
    }
    report.write_json(out / "summary.json", {k: v for k, v in summary.items() if k != "history"})
    (out / "metrics.md").write_text(report.metrics_card(summary, class_report, split.classes))
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
