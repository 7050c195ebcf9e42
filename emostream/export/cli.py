"""``emostream-export``: turn a trained ``.keras`` CRNN into the ONNX model the daemon runs.

Every export proves parity on the real test-split windows (onnxruntime vs Keras: max |Δp| < 1e-5,
the same top class on every window, the same accuracy) and fails when it does not hold.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np

from emostream.export.onnx_export import ExportError, check_parity, convert, load_keras_model
from emostream.features import (
    DEFAULT_CONFIG,
    LogMelConfig,
    relative_to_baseline,
    usable_baseline_prior,
    windows_for_inputs,
)
from emostream.features.contract import ContractError, ModelContract
from emostream.options import add_ranged

logger = logging.getLogger(__name__)

MODELS_DIR = Path("models")  # a checkout's models/ folder, relative to the working directory
MIN_PARITY_WINDOWS = 200


def parse_args(argv):
    p = argparse.ArgumentParser(prog="emostream-export", description=__doc__.splitlines()[0])
    p.add_argument("--keras", type=Path, default=MODELS_DIR / "model.keras", help="trained model (.keras)")
    p.add_argument("--out", type=Path, default=Path("emostream") / "assets" / "emotion_crnn.onnx",
                   help="ONNX file to write (default: the package's shipped model, in a checkout)")
    p.add_argument("--data-dir", help="RAVDESS root for the parity windows (default: $RAVDESS_DIR or ../shared/...)")
    p.add_argument("--emodb-dir", help="EmoDB root, for a run whose list holds EmoDB clips (default: $EMODB_DIR or "
                                       "../shared/data/emodb)")
    p.add_argument("--cache-dir", type=Path, help="feature cache")
    p.add_argument("--int8", action="store_true", help="also try static INT8 (kept only if faster and < 1 pt worse)")
    add_ranged(p, "--min-windows", int, MIN_PARITY_WINDOWS, 1, 1_000_000, help="fail with fewer parity windows")
    return p.parse_args(argv)


def run_files(keras_path: Path) -> tuple[list[str], dict, Path]:
    """Labels, run summary and test-file list written by ``emostream-train`` beside the model."""
    folder = keras_path.parent
    try:
        labels = json.loads((folder / "labels.json").read_text())
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{folder}: needs labels.json and summary.json from emostream-train ({exc})") from None
    return labels, summary, folder / "test_files.csv"


def run_features(summary: dict) -> LogMelConfig:
    """The features the run trained on (its ``summary.json``), feature version included; older runs: v1."""
    try:
        return LogMelConfig(**summary.get("features", DEFAULT_CONFIG.to_dict()))
    except (TypeError, ValueError) as exc:
        raise ExportError(f"summary.json features: {exc}") from None


def run_baseline_prior(summary: dict, features: LogMelConfig) -> tuple[float, ...]:
    """Feature version 4: the run's ``baseline_prior`` (its training speakers' mean baseline); () otherwise."""
    if not features.needs_baseline:
        return ()
    prior = summary.get("baseline_prior")
    if not usable_baseline_prior(prior, features.n_mels):
        raise ExportError(f"summary.json: feature version {features.feature_version} needs baseline_prior "
                          f"({features.n_mels} finite numbers; saved by emostream-evaluate --save-model)")
    return tuple(float(v) for v in prior)


def listed_corpora(frame):
    """The corpus of each listed clip (column ``corpus``; RAVDESS for lists from before it existed)."""
    import pandas as pd

    return frame["corpus"] if "corpus" in frame else pd.Series("ravdess", index=frame.index)


def listed_roots(frame, explicit: dict, what: str) -> dict:
    """Each listed corpus's root (``explicit`` paths win, then the environment, then ``../shared/data``), checked:
    an unknown corpus or a missing clip is a one-line ``ExportError`` saying which flag to pass."""
    from emostream.paths import data_dir as corpus_dir

    roots = {}
    for corpus, part in frame.groupby(listed_corpora(frame), sort=True):
        if corpus not in explicit:
            raise ExportError(f"{what}: unknown corpus {corpus!r}")
        root = corpus_dir(corpus, explicit[corpus])
        missing = [p for p in part["path"] if not (root / p).is_file()]
        if missing:
            raise ExportError(f"{len(missing)} listed {corpus} clips missing under {root} (first: {missing[0]}); "
                              f"pass --{'data' if corpus == 'ravdess' else 'emodb'}-dir")
        roots[corpus] = root
    return roots


def parity_windows(test_files: Path, labels: list[str], data_dir, cache_dir, features: LogMelConfig = DEFAULT_CONFIG,
                   emodb_dir=None):
    """The listed clips' windows and label indices, computed by the shared feature code.

    The list's paths are relative to their corpus's root (column ``corpus``; RAVDESS when absent).
    """
    import pandas as pd

    from emostream.train.featurize import extract_features

    if not test_files.is_file():
        raise ExportError(f"{test_files} not found: parity needs the training run's test-file list")
    frame = pd.read_csv(test_files)
    roots = listed_roots(frame, {"ravdess": data_dir, "emodb": emodb_dir}, str(test_files))
    windows, y_true = [], []
    for corpus, part in frame.groupby(listed_corpora(frame), sort=True):
        found = extract_features(roots[corpus], list(part["path"]), features, cache_dir)
        by_path = dict(zip(part["path"], part["emotion"], strict=True))
        windows.append(found.windows)
        y_true += [labels.index(by_path[p]) for p in found.paths]
    return np.concatenate(windows), np.array(y_true)


def update_card(card: Path, text: str) -> None:
    """Replace (or add) the card's ``## ONNX export`` section."""
    if not card.is_file():
        return
    body = re.sub(r"\n## ONNX export\n.*?(?=\n## |\Z)", "", card.read_text(), flags=re.S).rstrip()
    card.write_text(body + "\n\n## ONNX export\n\n" + text.strip() + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        model = load_keras_model(args.keras)
        labels, summary, test_files = run_files(args.keras)
        features = run_features(summary)
        prior = run_baseline_prior(summary, features)
        contract = ModelContract.for_features(
            labels, features, run_id=summary.get("run_id", ""), test_accuracy=summary.get("test_accuracy"),
            baseline_prior=prior, input_versions=tuple(summary.get("input_versions") or ()),
        )
        try:
            contract.check_honoured_by()  # the daemon's signal settings: a run trained on others cannot ship
        except ContractError as exc:
            raise ExportError(f"summary.json: {exc}") from None
        if args.int8 and len(contract.inputs) > 1:
            raise ExportError("--int8: a model of several inputs is not quantised (calibration takes one input)")
        proto = convert(model, contract, features)
        onnx_bytes = proto.SerializeToString()
        windows, y_true = parity_windows(test_files, labels, args.data_dir, args.cache_dir, features.per_window(),
                                         args.emodb_dir)
        # Parity needs identical inputs on both sides: for version 4, each window heard from the prior.
        relative = relative_to_baseline(windows, np.asarray(prior)) if features.needs_baseline else None
        inputs = windows_for_inputs(contract.inputs, windows, relative)
        parity = check_parity(model, onnx_bytes, inputs, y_true)
    except ExportError as exc:
        logger.error("%s", exc)
        return 1
    print(parity.describe())
    if parity.n_windows < args.min_windows or not parity.holds:
        logger.error("parity does not hold (need ≥ %d windows (--min-windows), max |Δp| < 1e-5, identical top class "
                     "and accuracy)", args.min_windows)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(onnx_bytes)
    record = {"onnx": args.out.name, "bytes": len(onnx_bytes), "opset": proto.opset_import[0].version,
              **parity.__dict__, "contract": contract.to_metadata()}
    # The parity record is the run's evidence: it goes beside the run's card, never into the package's assets.
    (args.keras.parent / f"{args.out.stem}.parity.json").write_text(json.dumps(record, indent=2) + "\n")
    inputs_text = f"; inputs of versions {', '.join(contract.inputs)}" if len(contract.inputs) > 1 else ""
    update_card(args.keras.parent / "metrics.md", f"`{args.out.name}` ({len(onnx_bytes) / 1e6:.1f} MB, opset "
                f"{proto.opset_import[0].version}), feature contract in its metadata (feature version "
                f"{features.feature_version}{inputs_text}). onnxruntime vs Keras on the first window of each of the "
                f"{parity.n_windows} listed clips ({summary.get('scored_on', 'test')}): max |Δp| "
                f"{parity.max_abs_diff:.1e}, top-1 agreement "
                f"{parity.top1_agreement:.0%}, accuracy {parity.onnx_accuracy:.2%} (ONNX) vs "
                f"{parity.keras_accuracy:.2%} (Keras).")
    logger.info("wrote %s", args.out)
    if args.int8:
        int8_report(args, labels, test_files, inputs[0], y_true, features, prior)  # one input: refused otherwise
    return 0


def calibration_windows(test_files: Path, data_dir, cache_dir, n: int = 300,
                        features: LogMelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Windows of clips outside the test split: calibration never sees test audio."""
    import pandas as pd

    from emostream.train.data import index_ravdess
    from emostream.train.featurize import extract_features

    index = index_ravdess(data_dir)
    test = set(pd.read_csv(test_files)["path"])
    paths = sorted(p for p in index.frame["path"] if p not in test)
    chosen = list(np.random.default_rng(0).choice(paths, size=min(n, len(paths)), replace=False))
    return extract_features(index.root, chosen, features, cache_dir).windows


def int8_report(args, labels, test_files, windows, y_true, features: LogMelConfig = DEFAULT_CONFIG,
                prior: tuple[float, ...] = ()) -> None:
    from emostream.export.quantize import try_int8

    calibration = calibration_windows(test_files, args.data_dir, args.cache_dir, features=features.per_window())
    if features.needs_baseline:
        calibration = relative_to_baseline(calibration, np.asarray(prior))
    result = try_int8(args.out, windows, y_true, calibration)
    verdict = "shipped" if result.worth_shipping else "not shipped"
    text = (f"INT8 ({result.method}): {result.int8_ms:.2f} ms vs fp32 {result.fp32_ms:.2f} ms per window "
            f"(p50, batch 1, 1 thread), test accuracy {result.int8_accuracy:.2%} vs {result.fp32_accuracy:.2%}: "
            f"{verdict}.")
    print(text)
    record = {**result.__dict__, "shipped": result.worth_shipping}
    # Evidence, like the parity record: beside the run's card; only a kept *.int8.onnx goes beside the model it serves.
    (args.keras.parent / f"{args.out.stem}.int8.json").write_text(json.dumps(record, indent=2) + "\n")
    card = args.keras.parent / "metrics.md"
    if card.is_file():
        card.write_text(card.read_text().rstrip() + "\n\n" + text + "\n")


if __name__ == "__main__":
    sys.exit(main())
