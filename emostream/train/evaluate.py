"""``emostream-evaluate``: honest accuracy — a random split without peak picking, and unseen speakers.

Protocols (speech + song):
- ``random``: the reference's stratified 80/20 split (seed 42); 10 % of the training side (stratified)
  is the validation part that early stopping and checkpoints look at. The test part is looked at once.
- ``actors``: 6 folds of 4 consecutive actors (2 male, 2 female each). For fold k the test actors are
  fold k, the validation actors fold k+1, and training uses the other 16 — no actor is shared.

Presets:
- ``reference``: the notebook's recipe (first 100 frames, oversampling, Adam 1e-4, fixed epochs,
  final epoch reported).
- ``improved``: random 100-frame crops over the whole clip from the original and four augmented
  copies (noise, speed, reverb, band-limit/EQ), SpecAugment masks, oversampling, Adam with cosine decay,
  early stopping on validation UAR; the test score averages the model over the windows the daemon
  would produce while the clip streams past.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emostream.features import DEFAULT_CONFIG, standardise_db
from emostream.train import report
from emostream.train.clipbank import ClipBank, clip_bank
from emostream.train.data import index_ravdess

logger = logging.getLogger(__name__)

FOLDS = [list(range(4 * k + 1, 4 * k + 5)) for k in range(6)]
VARIANTS = ("noise", "speed", "reverb", "eq")


@dataclass(frozen=True)
class Preset:
    name: str
    epochs: int
    learning_rate: float
    crops: bool  # random crops over the whole clip (else the first 100 frames)
    augment_share: float  # chance a training example comes from an augmented copy
    spec_augment: bool
    early_stopping_patience: int | None  # epochs without validation UAR gain; None = run all epochs
    multi_window_test: bool
    min_epochs: int = 0  # early stopping waits for this many epochs (the cosine rate is still high before)
    batch_size: int = 32
    conv_filters: tuple[int, int] = (32, 64)
    lstm_units: tuple[int, int] = (128, 64)
    dropout: float = 0.3
    mixup_alpha: float = 0.0  # Beta(α, α) mixing weight of two training windows and their labels; 0 = off
    label_smoothing: float = 0.0

    @classmethod
    def from_record(cls, record: dict) -> Preset:
        """A preset as a result file recorded it: JSON lists back to tuples, later-added settings at defaults."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})

    def crnn_config(self, n_classes: int):
        from emostream.train.model import CrnnConfig

        return CrnnConfig(conv_filters=self.conv_filters, lstm_units=self.lstm_units, dropout=self.dropout,
                          n_classes=n_classes)

    def with_overrides(self, assignments: list[str]) -> Preset:
        """``field=value`` strings (tuples as ``a,b``), typed after the preset's current values."""
        changes = {}
        for item in assignments:
            name, sep, text = item.partition("=")
            if not sep or name not in {f.name for f in dataclasses.fields(self)} or name == "name":
                raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of the preset's settings")
            current = getattr(self, name)
            if isinstance(current, bool):
                value = text.lower() in ("1", "true", "yes", "on")
            elif isinstance(current, tuple):
                value = tuple(int(v) for v in text.split(","))
            elif current is None or name == "early_stopping_patience":
                value = None if text.lower() == "none" else int(text)
            else:
                value = type(current)(text)
            changes[name] = value
        return dataclasses.replace(self, **changes)


PRESETS = {
    "reference": Preset("reference", epochs=100, learning_rate=1e-4, crops=False, augment_share=0.0,
                        spec_augment=False, early_stopping_patience=None, multi_window_test=False),
    "improved": Preset("improved", epochs=60, learning_rate=5e-4, crops=True, augment_share=0.5,
                       spec_augment=True, early_stopping_patience=12, multi_window_test=True, min_epochs=45),
}


def actor_folds(actors: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Row indices per fold: test = fold k's actors, validation = fold k+1's, train = the rest."""
    folds = []
    for k in range(len(FOLDS)):
        test = np.isin(actors, FOLDS[k])
        val = np.isin(actors, FOLDS[(k + 1) % len(FOLDS)])
        folds.append({"name": f"actors {FOLDS[k][0]:02d}-{FOLDS[k][-1]:02d}", "number": k + 1,
                      "test": np.flatnonzero(test),
                      "val": np.flatnonzero(val), "train": np.flatnonzero(~test & ~val)})
    return folds


def random_split(labels: np.ndarray, seed: int = 42) -> list[dict[str, np.ndarray]]:
    """The reference's 80/20 test split; validation carved from the training side only."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    train, test = train_test_split(rows, test_size=0.2, stratify=labels, random_state=seed)
    train, val = train_test_split(train, test_size=0.1, stratify=labels[train], random_state=seed)
    return [{"name": f"random 80/20 seed {seed}", "number": 1, "train": train, "val": val, "test": test}]


def oversample(rows: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    from imblearn.over_sampling import RandomOverSampler

    resampled, _ = RandomOverSampler(random_state=seed).fit_resample(rows.reshape(-1, 1), y[rows])
    return resampled.ravel()


class TrainingWindows:
    """Builds one epoch of training windows from the clip banks."""

    def __init__(self, preset: Preset, banks: dict[str, ClipBank], seed: int):
        self.preset, self.banks = preset, banks
        self.rng = np.random.default_rng(seed)
        self.frames = DEFAULT_CONFIG.window_frames

    def window(self, row: int) -> np.ndarray:
        p = self.preset
        variant = "orig"
        if p.augment_share and self.rng.random() < p.augment_share:
            variant = VARIANTS[self.rng.integers(len(VARIANTS))]
        db = self.banks[variant].db[row].astype(np.float32)
        start = 0
        if p.crops and db.shape[1] > self.frames:
            start = int(self.rng.integers(0, db.shape[1] - self.frames + 1))
        x = standardise_db(db[:, start : start + self.frames])
        if p.spec_augment:
            for _ in range(2):
                width = int(self.rng.integers(0, 16))
                f0 = int(self.rng.integers(0, x.shape[0] - width + 1))
                x[f0 : f0 + width, :] = 0.0
                width = int(self.rng.integers(0, 11))
                t0 = int(self.rng.integers(0, x.shape[1] - width + 1))
                x[:, t0 : t0 + width] = 0.0
        return x

    def epoch(self, rows: np.ndarray) -> np.ndarray:
        return np.stack([self.window(r) for r in rows])[..., np.newaxis]


def mixup(x: np.ndarray, targets: np.ndarray, alpha: float, rng: np.random.Generator):
    """Each window blended with a random partner: λ·a + (1−λ)·b for inputs and one-hot targets alike.

    λ ~ Beta(α, α) folded to ≥ 0.5, so the first window stays the dominant one.
    """
    lam = rng.beta(alpha, alpha, size=len(x)).astype(np.float32)
    lam = np.maximum(lam, 1.0 - lam)
    partner = rng.permutation(len(x))
    mixed_x = lam[:, None, None, None] * x + (1.0 - lam[:, None, None, None]) * x[partner]
    mixed_t = lam[:, None] * targets + (1.0 - lam[:, None]) * targets[partner]
    return mixed_x.astype(np.float32), mixed_t.astype(np.float32)


def clip_probabilities(model, bank: ClipBank, rows: np.ndarray, multi_window: bool) -> np.ndarray:
    """Per clip: the mean of the model over its streaming windows, or the first window only."""
    chosen = [bank.windows[r] if multi_window else bank.windows[r][:1] for r in rows]
    counts = [len(w) for w in chosen]
    x = np.concatenate(chosen).astype(np.float32)[..., np.newaxis]
    p = model.predict(x, batch_size=256, verbose=0)
    return np.stack([chunk.mean(axis=0) for chunk in np.split(p, np.cumsum(counts)[:-1])])


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
            "uar": float(balanced_accuracy_score(y_true, y_pred))}


def build_model(preset: Preset, n_classes: int, steps_per_epoch: int):
    import keras

    from emostream.train.model import build_crnn

    model = build_crnn(preset.crnn_config(n_classes), compile=False)
    lr = preset.learning_rate
    if preset.early_stopping_patience is not None:
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=preset.epochs * steps_per_epoch, alpha=0.05)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=preset.label_smoothing)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss, metrics=["accuracy"])
    return model


def should_stop(preset: Preset, epoch: int, best_epoch: int) -> bool:
    """Early stopping: ``patience`` epochs without a validation gain, but never before ``min_epochs``."""
    if preset.early_stopping_patience is None:
        return False
    return epoch - best_epoch >= preset.early_stopping_patience and epoch >= preset.min_epochs


def run_fold(preset: Preset, fold: dict, y: np.ndarray, n_classes: int, banks: dict[str, ClipBank],
             seed: int, log_prefix: str) -> tuple[dict, object]:
    import keras

    keras.utils.set_random_seed(seed)
    train_rows = oversample(fold["train"], y, seed)
    windows = TrainingWindows(preset, banks, seed)
    model = build_model(preset, n_classes, int(np.ceil(len(train_rows) / preset.batch_size)))
    orig = banks["orig"]
    history, best = [], {"uar": -1.0, "epoch": 0, "weights": None}
    started = time.time()
    for epoch in range(1, preset.epochs + 1):
        order = np.random.default_rng([seed, epoch]).permutation(train_rows)
        x, targets = windows.epoch(order), keras.utils.to_categorical(y[order], n_classes)
        if preset.mixup_alpha:
            x, targets = mixup(x, targets, preset.mixup_alpha, windows.rng)
        fit = model.fit(x, targets, batch_size=preset.batch_size, epochs=1, verbose=0, shuffle=False)
        val_p = clip_probabilities(model, orig, fold["val"], preset.multi_window_test)
        val = scores(y[fold["val"]], val_p.argmax(axis=1))
        history.append({"epoch": epoch, "loss": float(fit.history["loss"][0]),
                        "accuracy": float(fit.history["accuracy"][0]), **{f"val_{k}": v for k, v in val.items()}})
        logger.info("%s epoch %d loss %.3f acc %.3f | val acc %.3f uar %.3f (%.0f s)", log_prefix, epoch,
                    history[-1]["loss"], history[-1]["accuracy"], val["accuracy"], val["uar"], time.time() - started)
        if preset.early_stopping_patience is None:
            continue
        if val["uar"] > best["uar"]:
            best = {"uar": val["uar"], "epoch": epoch, "weights": model.get_weights()}
        elif should_stop(preset, epoch, best["epoch"]):
            break
    if best["weights"] is not None:
        model.set_weights(best["weights"])
    chosen_epoch = best["epoch"] if best["weights"] is not None else len(history)
    test_p = clip_probabilities(model, orig, fold["test"], preset.multi_window_test)
    y_pred = test_p.argmax(axis=1)
    result = {"fold": fold["name"], "epoch": chosen_epoch, "epochs_run": len(history),
              "n_train": len(fold["train"]), "n_val": len(fold["val"]), "n_test": len(fold["test"]),
              "test": scores(y[fold["test"]], y_pred), "seconds": time.time() - started, "history": history,
              "y_true": y[fold["test"]].tolist(), "y_pred": y_pred.tolist()}
    if preset.multi_window_test:
        first = clip_probabilities(model, orig, fold["test"], multi_window=False).argmax(axis=1)
        result["test_first_window"] = scores(y[fold["test"]], first)
    return result, model


def summarise(results: list[dict]) -> dict:
    out = {}
    for key in ("accuracy", "macro_f1", "uar"):
        values = np.array([r["test"][key] for r in results])
        out[key] = {"mean": float(values.mean()), "std": float(values.std()), "per_fold": values.tolist()}
    return out


def write_card(out: Path, protocol: str, preset: Preset, results: list[dict], summary: dict, classes: list[str]):
    lines = [f"# Evaluation: preset `{preset.name}`, protocol `{protocol}`", "",
             f"Settings: `{json.dumps(dataclasses.asdict(preset))}`", "",
             "| fold | test clips | epoch used / run | accuracy | macro-F1 | UAR |", "|---|---|---|---|---|---|"]
    for r in results:
        t = r["test"]
        lines.append(f"| {r['fold']} | {r['n_test']} | {r['epoch']} / {r['epochs_run']} | {t['accuracy']:.2%} | "
                     f"{t['macro_f1']:.3f} | {t['uar']:.3f} |")
    s = summary
    lines += [f"| **mean ± std** | | | **{s['accuracy']['mean']:.2%} ± {s['accuracy']['std']:.2%}** | "
              f"{s['macro_f1']['mean']:.3f} ± {s['macro_f1']['std']:.3f} | "
              f"{s['uar']['mean']:.3f} ± {s['uar']['std']:.3f} |", "",
              "![pooled confusion matrix](confusion.png)", ""]
    firsts = [r["test_first_window"] for r in results if r.get("test_first_window")]
    if firsts:
        mean = {k: np.mean([f[k] for f in firsts]) for k in ("accuracy", "macro_f1", "uar")}
        lines[-3:-3] = ["", f"Scores are the mean of the model over each test clip's streaming windows. With the first "
                        f"window only (the reference's input, one 2.3 s window per clip): accuracy "
                        f"{mean['accuracy']:.2%}, macro-F1 {mean['macro_f1']:.3f}, UAR {mean['uar']:.3f}."]
    (out / "evaluation.md").write_text("\n".join(lines))


def write_outputs(out: Path, protocol: str, preset: Preset, results: list[dict], classes: list[str]) -> dict:
    """evaluation.json, the card and the pooled confusion matrix from finished folds."""
    summary = summarise(results)
    y_true = np.concatenate([r["y_true"] for r in results])
    y_pred = np.concatenate([r["y_pred"] for r in results])
    report.plot_confusion(y_true, y_pred, classes, out / "confusion.png",
                          f"{preset.name}, {protocol}: pooled over {len(results)} fold(s)")
    report.write_json(out / "evaluation.json", {"protocol": protocol, "preset": dataclasses.asdict(preset),
                                                "classes": classes, "summary": summary,
                                                "folds": [{k: v for k, v in r.items() if k not in
                                                           ("y_true", "y_pred")} for r in results]})
    write_card(out, protocol, preset, results, summary, classes)
    logger.info("%s / %s: accuracy %.4f ± %.4f, macro-F1 %.4f, UAR %.4f", preset.name, protocol,
                summary["accuracy"]["mean"], summary["accuracy"]["std"], summary["macro_f1"]["mean"],
                summary["uar"]["mean"])
    return summary


def merge_runs(folders: list[Path], out: Path) -> dict:
    """One evaluation from runs of the same preset and protocol over different folds (e.g. run side by side)."""
    runs = [json.loads((Path(f) / "evaluation.json").read_text()) for f in folders]
    first = runs[0]
    for folder, run in zip(folders, runs, strict=True):
        if (run["protocol"], run["preset"], run["classes"]) != (first["protocol"], first["preset"], first["classes"]):
            raise ValueError(f"{folder}: protocol, preset or classes differ from {folders[0]}; cannot merge")
    results = [r for f in folders for r in json.loads((Path(f) / "folds.json").read_text())]
    names = [r["fold"] for r in results]
    if len(set(names)) != len(names):
        raise ValueError(f"the same fold appears twice among {', '.join(map(str, folders))}")
    results.sort(key=lambda r: r["fold"])
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "folds.json", results)
    return write_outputs(out, first["protocol"], Preset.from_record(first["preset"]), results, first["classes"])


def save_run_for_export(model, preset: Preset, classes: list[str], frame, fold: dict, result: dict,
                        folder: Path) -> None:
    """The model plus what ``emostream-export`` reads beside it: labels, summary and the test files."""
    from emostream.train.cli import save_inference_model

    folder.mkdir(parents=True, exist_ok=True)
    save_inference_model(model, preset.crnn_config(len(classes)), folder / "model.keras")
    report.write_json(folder / "labels.json", classes)
    frame.iloc[fold["test"]].to_csv(folder / "test_files.csv", index=False)
    t, first = result["test"], result.get("test_first_window")
    lines = [f"# Metrics card: {preset.name}, {fold['name']}", "",
             f"Trained on {result['n_train']} clips (oversampled), checkpoint chosen on {result['n_val']} validation "
             f"clips (epoch {result['epoch']} of {result['epochs_run']} run), tested once on {result['n_test']} clips.",
             "", "| test metric | accuracy | macro-F1 | UAR |", "|---|---|---|---|",
             f"| averaged over the clip's streaming windows | **{t['accuracy']:.2%}** | {t['macro_f1']:.3f} | "
             f"{t['uar']:.3f} |"]
    if first:
        lines.append(f"| first window only (the reference's input) | {first['accuracy']:.2%} | "
                     f"{first['macro_f1']:.3f} | {first['uar']:.3f} |")
    lines += ["", f"Preset: `{json.dumps(dataclasses.asdict(preset))}`", ""]
    (folder / "metrics.md").write_text("\n".join(lines))
    report.write_json(folder / "summary.json", {
        "run_id": f"{preset.name}-{fold['name'].replace(' ', '-')}", "preset": dataclasses.asdict(preset),
        "test_accuracy": result["test"]["accuracy"], "test_macro_f1": result["test"]["macro_f1"],
        "test_uar": result["test"]["uar"], "test_first_window": result.get("test_first_window"),
        "epoch": result["epoch"], "n_train": result["n_train"], "n_val": result["n_val"], "n_test": result["n_test"],
    })


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emostream-evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--protocol", choices=["random", "actors"], default="actors")
    p.add_argument("--preset", choices=sorted(PRESETS), default="improved")
    p.add_argument("--folds", help="comma-separated fold numbers 1-6 to run (actors protocol; default all)")
    p.add_argument("--epochs", type=int, help="override the preset's epoch count")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one preset setting, e.g. --set mixup_alpha=0.2 --set lstm_units=192,96 "
                        "(repeatable; the card records the settings used)")
    p.add_argument("--label", help="name recorded for this variant (default: the preset's name)")
    p.add_argument("--threads", type=int, help="TensorFlow intra-op threads (default: all cores)")
    p.add_argument("--max-clips-per-class", type=int, help="a small slice, for quick checks")
    p.add_argument("--data-dir")
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--merge", type=Path, nargs="+", metavar="DIR",
                   help="no training: merge finished runs over different folds into one evaluation in --out")
    p.add_argument("--save-model", action="store_true",
                   help="save each fold's model with labels, summary and test files (ready for emostream-export)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.merge:
        try:
            merge_runs(args.merge, args.out)
        except (OSError, ValueError, KeyError) as exc:
            p.error(f"--merge: {exc}")
        return 0
    preset = PRESETS[args.preset]
    if args.epochs:
        preset = dataclasses.replace(preset, epochs=args.epochs)
    try:
        preset = preset.with_overrides(args.overrides)
    except (ValueError, TypeError) as exc:
        p.error(str(exc))
    if args.label:
        preset = dataclasses.replace(preset, name=args.label)
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    index = index_ravdess(args.data_dir, seed=args.seed)
    frame = index.frame
    if args.max_clips_per_class:
        frame = frame.groupby("emotion", sort=False).head(args.max_clips_per_class).reset_index(drop=True)
    from emostream.train.prepare import encode_labels

    y, classes = encode_labels(frame["emotion"])
    paths = list(frame["path"])
    banks = {"orig": clip_bank(index.root, paths, "orig", args.seed, args.cache_dir)}
    if preset.augment_share:
        for variant in VARIANTS:
            banks[variant] = clip_bank(index.root, paths, variant, args.seed, args.cache_dir)
    if args.protocol == "random":
        folds = random_split(y, args.seed)
    else:
        folds = actor_folds(frame["actor"].to_numpy())
        if args.folds:
            folds = [folds[int(k) - 1] for k in args.folds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for fold in folds:  # the seed follows the fold's number, so a --folds run repeats that fold of a full run
        result, model = run_fold(preset, fold, y, len(classes), banks, args.seed + fold["number"] - 1,
                                 f"[{fold['name']}]")
        logger.info("[%s] test %s", fold["name"], result["test"])
        results.append(result)
        if args.save_model:
            save_run_for_export(model, preset, classes, frame, fold, result, args.out / f"model-fold{fold['number']}")
        report.write_json(args.out / "folds.json", results)  # partial results survive an interruption
    write_outputs(args.out, args.protocol, preset, results, classes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
