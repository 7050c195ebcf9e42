"""``emostream-ensemble``: combine runs of one recipe trained with different seeds into a seed ensemble.

The members are ``emostream-evaluate`` runs of the same protocol, preset and folds (``--seed-offset`` gives each
its own training seed). Per fold, the ensemble's probability for a clip is the mean of its members' — for the
checkpoints and for the tail-averaged weights alike — and it is scored with the same functions as a single run,
so its ``evaluation.json``, card and confusion matrices read like any other run's.

Why the mean of clip probabilities: the daemon averages a model's window probabilities over an utterance, so an
ONNX graph whose output is the mean of its members' softmax outputs (``ensemble_model``, exported by
``emostream-export``) scores every clip exactly as this combination does.

When every member saved its fold models (``--save-model``), the ensemble's models are written too, one Keras
model per saved folder (the members side by side, their outputs averaged), with labels, summary, card and the
members' shared test list: ready for ``emostream-export``.
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
from emostream.train.evaluate import Preset, full_scores, rounded_probabilities, write_outputs, write_run_folder

logger = logging.getLogger(__name__)

WEIGHTS = ("checkpoint", "tail_average")
PARTS = ("val", "test", "cross")


class EnsembleError(ValueError):
    """Runs that cannot be combined (different recipes, folds or clips; no per-clip probabilities)."""


def load_members(folders: list[Path]) -> tuple[dict, list[list[dict]]]:
    """The first member's ``evaluation.json`` header and every member's fold results (``folds.json``)."""
    if len(folders) < 2:
        raise EnsembleError("an ensemble needs at least two runs")
    headers, members = [], []
    for folder in folders:
        try:
            headers.append(json.loads((Path(folder) / "evaluation.json").read_text()))
            members.append(json.loads((Path(folder) / "folds.json").read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise EnsembleError(f"{folder}: not a finished emostream-evaluate run ({exc})") from None
    first = headers[0]
    for folder, header in zip(folders[1:], headers[1:], strict=True):
        if (header["protocol"], Preset.from_record(header["preset"]), header["classes"]) != \
                (first["protocol"], Preset.from_record(first["preset"]), first["classes"]):
            raise EnsembleError(f"{folder}: protocol, preset or classes differ from {folders[0]}")
    return first, members


def combine_fold(results: list[dict], classes: list[str]) -> dict:
    """One fold's ensemble result from its members' results (the same fold, the same clips)."""
    name = results[0]["fold"]
    per_clip = [r.get("clip_probabilities") for r in results]
    if not all(per_clip):
        raise EnsembleError(f"{name}: a member kept no per-clip probabilities (run before they were kept)")
    seeds = [r.get("training_seed") for r in results]
    if None not in seeds and len(set(seeds)) < len(seeds):
        raise EnsembleError(f"{name}: two members share training seed {seeds}; use --seed-offset")
    y_true = per_clip[0]["y_true"]
    if any(p["y_true"] != y_true for p in per_clip[1:]):
        raise EnsembleError(f"{name}: the members scored different clips")
    combined = {"y_true": y_true}
    for weights in WEIGHTS:
        if all(weights in p for p in per_clip):
            combined[weights] = {part: np.mean([np.asarray(p[weights][part]) for p in per_clip], axis=0)
                                 for part in per_clip[0][weights]}
    scored = {weights: {part: full_scores(np.asarray(y_true[part]), p, classes) for part, p in parts.items()}
              for weights, parts in combined.items() if weights != "y_true"}
    checkpoint = scored["checkpoint"]
    out = {"fold": name, "members": len(results), "training_seeds": seeds,
           "epoch": "+".join(str(r["epoch"]) for r in results),
           "epochs_run": "+".join(str(r["epochs_run"]) for r in results),
           **{k: results[0][k] for k in ("n_train", "n_val", "n_test", "n_train_oversampled") if k in results[0]},
           "seconds": float(sum(r.get("seconds", 0.0) for r in results)), "history": [],
           "val": checkpoint.get("val", {}), "clip_probabilities": rounded_probabilities(combined)}
    if "test" in checkpoint:
        out.update({"test": checkpoint["test"], "y_true": y_true["test"],
                    "y_pred": combined["checkpoint"]["test"].argmax(axis=1).tolist()})
    if "cross" in checkpoint:
        out.update({"cross": checkpoint["cross"], "cross_y_true": y_true["cross"],
                    "cross_y_pred": combined["checkpoint"]["cross"].argmax(axis=1).tolist()})
    if "tail_average" in scored:
        spans = [r["tail_average"]["epochs"] for r in results]
        out["tail_average"] = {"epochs": [min(s[0] for s in spans), max(s[1] for s in spans)],
                               **scored["tail_average"]}
    return out


def combine(members: list[list[dict]], classes: list[str]) -> list[dict]:
    """Per fold the members share, the ensemble's result; a fold missing from a member is left out (logged)."""
    by_name = [{r["fold"]: r for r in results} for results in members]
    shared = [name for name in by_name[0] if all(name in m for m in by_name[1:])]
    left_out = sorted({name for m in by_name for name in m} - set(shared))
    if left_out:
        logger.warning("folds not in every member, left out: %s", ", ".join(left_out))
    if not shared:
        raise EnsembleError("the runs share no fold")
    return [combine_fold([m[name] for m in by_name], classes) for name in shared]


def ensemble_model(members: list):
    """One Keras model: the members side by side on the same input, their softmax outputs averaged."""
    import keras

    renamed = []
    for i, member in enumerate(members, start=1):
        config = member.get_config()
        config["name"] = f"member_{i}"
        clone = keras.Model.from_config(config)
        clone.set_weights(member.get_weights())
        renamed.append(clone)
    inputs = keras.Input(shape=members[0].input_shape[1:], name="log_mel")
    averaged = keras.layers.Average(name="probabilities")([m(inputs) for m in renamed])
    return keras.Model(inputs, averaged, name=f"ensemble_of_{len(members)}")


def listed_scores(model, listed, classes: list[str], preset: Preset, data_dirs: dict, cache_dir, seed: int) -> dict:
    """``full_scores`` of ``model`` on the listed clips, scored as evaluation scores them (the same clip bank and
    noise floors for ``seed``, the daemon's windows, the mean over classified windows)."""
    from emostream.paths import data_dir
    from emostream.train.clipbank import clip_bank
    from emostream.train.evaluate import clip_probabilities

    corpora = listed["corpus"] if "corpus" in listed else ["ravdess"] * len(listed)
    paths = [str(data_dir(c, data_dirs.get(c)) / p) for c, p in zip(corpora, listed["path"], strict=True)]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise EnsembleError(f"{len(missing)} listed clips missing (first: {missing[0]}); pass --data-dir/--emodb-dir")
    bank = clip_bank(Path("/"), paths, "orig", seed, cache_dir)
    p = clip_probabilities(model, bank, np.arange(len(paths)), preset.multi_window_test, preset.features)
    return full_scores(np.array([classes.index(e) for e in listed["emotion"]]), p, classes)


def write_models(folders: list[Path], preset: Preset, classes: list[str], out: Path, data_dirs: dict,
                 cache_dir=None, seed: int = 42) -> list[Path]:
    """For every model folder every member saved (``model-foldN``, ``model-foldN-tail-average``), the ensemble's,
    scored on the members' listed clips with the ensemble model itself."""
    import pandas as pd

    from emostream.export.onnx_export import load_keras_model

    written = []
    for saved in sorted(p.name for p in Path(folders[0]).glob("model-fold*") if (p / "model.keras").is_file()):
        paths = [Path(f) / saved for f in folders]
        if not all((p / "model.keras").is_file() for p in paths):
            logger.warning("%s: not saved by every member, no ensemble model", saved)
            continue
        listed_text = [(p / "test_files.csv").read_text() for p in paths]
        if any(text != listed_text[0] for text in listed_text[1:]):
            raise EnsembleError(f"{saved}: the members list different clips in test_files.csv")
        summaries = [json.loads((p / "summary.json").read_text()) for p in paths]
        model = ensemble_model([load_keras_model(p / "model.keras") for p in paths])
        listed = pd.read_csv(paths[0] / "test_files.csv")
        scored = listed_scores(model, listed, classes, preset, data_dirs, cache_dir, seed)
        first = summaries[0]
        tested = first.get("test_accuracy") is not None
        result = {"n_train": first["n_train"], "n_val": first["n_val"], "n_test": first["n_test"],
                  "epoch": None, "epochs_run": "+".join(str(s.get("epochs_run", "?")) for s in summaries),
                  "averaged_epochs": first.get("averaged_epochs"), ("test" if tested else "val"): scored}
        # The member's run id without its preset's name: what the fold is ("ship all corpora tail average").
        fold_name = first["run_id"].removeprefix(run_id_part(first["preset"]["name"])).strip("-").replace("-", " ")
        folder = out / saved
        write_run_folder(model, preset, classes, listed, fold_name, result, folder)
        members = [{"run_id": s.get("run_id"), "training_seed": s.get("training_seed"),
                    "listed_accuracy": s.get("listed_accuracy")} for s in summaries]
        summary_path = folder / "summary.json"
        report.write_json(summary_path, {**json.loads(summary_path.read_text()), "members": members})
        with (folder / "metrics.md").open("a") as card:
            card.write(f"A seed ensemble: the mean of the probabilities of {len(members)} models of this recipe, each "
                       "trained on the same clips with its own seed (one graph when exported): " +
                       "; ".join(f"`{m['run_id']}` seed {m['training_seed']}, listed accuracy "
                                 f"{m['listed_accuracy']:.2%}" if m["listed_accuracy"] is not None
                                 else f"`{m['run_id']}` seed {m['training_seed']}" for m in members) + ".\n")
        logger.info("%s: ensemble of %s, listed clips accuracy %.2f%% (members: %s)", saved,
                    len(paths), 100 * scored["accuracy"],
                    ", ".join(f"{s.get('listed_accuracy', float('nan')):.2%}" for s in summaries))
        written.append(folder)
    return written


def run_id_part(name: str) -> str:
    """``name`` as it appears in a run id (``write_run_folder``'s rule)."""
    import re

    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emostream-ensemble", description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                   help="emostream-evaluate output folders of one recipe, each trained with its own --seed-offset")
    p.add_argument("--out", type=Path, required=True, help="folder for the ensemble's evaluation and models")
    p.add_argument("--models-only", action="store_true",
                   help="only the ensemble's models (members that kept no per-clip probabilities, e.g. a ship run "
                        "from before they were kept); each is scored on its listed clips")
    p.add_argument("--data-dir", help="RAVDESS root, for scoring saved models (default: $RAVDESS_DIR or ../shared/...)")
    p.add_argument("--emodb-dir", help="EmoDB root, for scoring saved models (default: $EMODB_DIR or ../shared/...)")
    p.add_argument("--cache-dir", type=Path, help="feature cache")
    p.add_argument("--seed", type=int, default=42, help="the members' data-preparation seed (their noise floors)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        header, members = load_members(args.runs)
        classes = header["classes"]
        preset = Preset.from_record(header["preset"])
        preset = dataclasses.replace(preset, name=f"{preset.name}-ensemble-{len(args.runs)}")
        args.out.mkdir(parents=True, exist_ok=True)
        if not args.models_only:
            results = combine(members, classes)
            report.write_json(args.out / "folds.json", results)
            write_outputs(args.out, header["protocol"], preset, results, classes)
        data_dirs = {"ravdess": args.data_dir, "emodb": args.emodb_dir}
        written = write_models(args.runs, preset, classes, args.out, data_dirs, args.cache_dir, args.seed)
        for folder in written:
            logger.info("wrote %s (ready for emostream-export)", folder)
        if args.models_only and not written:
            raise EnsembleError("--models-only: no model folder saved by every member (evaluate --save-model)")
    except (EnsembleError, KeyError, OSError) as exc:
        p.error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
