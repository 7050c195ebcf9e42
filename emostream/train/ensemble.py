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
import itertools
import json
import logging
import sys
from pathlib import Path

import numpy as np

from emostream.export.onnx_export import ExportError
from emostream.features.logmel import STATEFUL_BASE, LogMelConfig
from emostream.options import add_ranged
from emostream.train import report
from emostream.train.evaluate import (
    CLIP_WEIGHTS,
    MEMBER_SETTINGS,
    Preset,
    check_same_recipe,
    full_scores,
    preparation_of,
    protocol_of_fold,
    rounded_probabilities,
    run_id,
    write_outputs,
    write_run_folder,
)

logger = logging.getLogger(__name__)


class EnsembleError(ValueError):
    """Runs that cannot be combined (different recipes, folds or clips; no per-clip probabilities)."""


def load_members(folders: list[Path], out: Path | None = None) -> tuple[dict, list[list[dict]]]:
    """The first member's ``evaluation.json`` header and every member's fold results (``folds.json``)."""
    if len(folders) < 2:
        raise EnsembleError("an ensemble needs at least two runs")
    resolved = [Path(f).resolve() for f in folders]
    if len(set(resolved)) < len(resolved):
        raise EnsembleError("the same run is named twice: an ensemble of one model")
    if out is not None and Path(out).resolve() in resolved:
        raise EnsembleError(f"--out {out} is one of the runs; it would be overwritten")
    headers, members = [], []
    for folder in folders:
        try:
            headers.append(json.loads((Path(folder) / "evaluation.json").read_text()))
            members.append(json.loads((Path(folder) / "folds.json").read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise EnsembleError(f"{folder}: not a finished emostream-evaluate run ({exc})") from None
    nested = [str(f) for f, h in zip(folders, headers, strict=True) if h.get("input_versions")]
    if nested:
        raise EnsembleError(f"{nested[0]} is itself a mixed ensemble: combine its members instead")
    presets = [Preset.from_record(h["preset"]) for h in headers]  # older records: the defaults filled in
    versions = [p.feature_version for p in presets]
    inputs = mixed_inputs(versions)
    first = headers[0]["preset"]
    # A mixed ensemble's members are one recipe but for the feature version (and so the preset's name) and the
    # member settings, which shape training or a member's own layers, not the ensemble's input or output (both show
    # in the ensemble's name, which joins its members' preset names).
    own = member_settings(presets[0])
    alike = [{**h, "preset": {**h["preset"], "name": first["name"], "feature_version": first["feature_version"],
                              **own}}
             for h in headers] if inputs else headers
    try:
        check_same_recipe(folders, alike, "form an ensemble")
    except ValueError as exc:
        raise EnsembleError(str(exc)) from None
    if not inputs:
        return headers[0], members
    names = list(dict.fromkeys(h["preset"]["name"] for h in headers))
    # Where members differ, each one's setting is recorded and the ensemble's preset holds the setting's default (the
    # first member's where it has none): the first member's could contradict the ensemble's feature version (a
    # version 3 member's spliced windows under version 4).
    differ, defaults = {}, {}
    for setting in MEMBER_SETTINGS:
        values = [getattr(p, setting) for p in presets]
        if len(set(values)) > 1:
            differ[f"member_{setting}"] = values
            # augment_share and spec_augment have no default: the first member's
            defaults[setting] = MEMBER_DEFAULTS.get(setting, values[0])
    return {**headers[0], "preset": {**first, **defaults, "name": "+".join(names), "feature_version": inputs[-1]},
            "input_versions": list(inputs), "member_versions": versions, **differ}, members


def member_settings(preset: Preset) -> dict:
    """The settings a mixed ensemble's members may differ in (``MEMBER_SETTINGS``), as this preset has them."""
    return {k: getattr(preset, k) for k in MEMBER_SETTINGS}


def mixed_inputs(versions: list[str]) -> tuple[str, ...]:
    """Members of one feature version: (). Members of a per-window version and the stateful version built on it
    (3 and 4): the ensemble model's inputs, per-window version first — one stream computes both. Any other mix
    cannot be served from one stream's windows: ``EnsembleError``."""
    found = set(versions)
    if len(found) == 1:
        return ()
    stateful = [v for v in found if v in STATEFUL_BASE]
    if len(found) != 2 or len(stateful) != 1 or STATEFUL_BASE[stateful[0]] not in found:
        pairs = ", ".join(f"{b} and {v}" for v, b in STATEFUL_BASE.items())
        raise EnsembleError(f"members of feature versions {sorted(found)}: an ensemble mixes only a version with the "
                            f"per-window version it builds on ({pairs})")
    return STATEFUL_BASE[stateful[0]], stateful[0]


def combine_fold(results: list[dict], classes: list[str], versions: list[str] | None = None) -> dict:
    """One fold's ensemble result from its members' results (the same fold, the same clips). ``versions``: each
    member's feature version, for a mixed ensemble (members of different versions may share a training seed)."""
    name = results[0]["fold"]
    per_clip = [r.get("clip_probabilities") for r in results]
    if not all(per_clip):
        raise EnsembleError(f"{name}: a member kept no per-clip probabilities (run before they were kept); "
                            "--models-only combines its saved models instead")
    seeds = [r.get("training_seed") for r in results]
    known = [(v, s) for v, s in zip(versions or [None] * len(seeds), seeds, strict=True) if s is not None]
    if len(set(known)) < len(known):
        raise EnsembleError(f"{name}: two members share a training seed ({seeds}); train with --seed-offset")
    y_true = per_clip[0]["y_true"]
    # Same data preparation (checked on the headers) and the same rows mean the same clips; runs from before rows
    # were kept are compared on their labels.
    if any(p["y_true"] != y_true or p.get("rows") != per_clip[0].get("rows") for p in per_clip[1:]):
        raise EnsembleError(f"{name}: the members scored different clips")
    combined = {"rows": per_clip[0].get("rows", {}), "y_true": y_true}
    for weights in CLIP_WEIGHTS:
        have = [weights in p for p in per_clip]
        if any(have) and not all(have):
            logger.warning("%s: not every member scored %s weights; the ensemble has none", name, weights)
        if not all(have):
            continue
        if any(set(p[weights]) != set(per_clip[0][weights]) for p in per_clip[1:]):
            raise EnsembleError(f"{name}: the members scored different parts with their {weights} weights")
        combined[weights] = {part: np.mean([np.asarray(p[weights][part]) for p in per_clip], axis=0)
                             for part in per_clip[0][weights]}
    if "checkpoint" not in combined:
        raise EnsembleError(f"{name}: no checkpoint probabilities shared by every member")
    scored = {weights: {part: full_scores(np.asarray(y_true[part]), p, classes) for part, p in parts.items()}
              for weights, parts in combined.items() if weights in CLIP_WEIGHTS}
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
        # "epochs" spans every member's (readers expect one span); "member_epochs" says what each averaged.
        out["tail_average"] = {"epochs": [min(s[0] for s in spans), max(s[1] for s in spans)],
                               "member_epochs": spans, **scored["tail_average"]}
    if "tail_average_cold" in scored:  # feature version 4: the same weights, each clip from the prior
        out["tail_average_cold"] = scored["tail_average_cold"]
    return out


def combine(members: list[list[dict]], classes: list[str], versions: list[str] | None = None) -> list[dict]:
    """Per fold the members share, the ensemble's result; a fold missing from a member is left out (logged)."""
    by_name = [{r["fold"]: r for r in results} for results in members]
    shared = [name for name in by_name[0] if all(name in m for m in by_name[1:])]
    left_out = sorted({name for m in by_name for name in m} - set(shared))
    if left_out:
        logger.warning("folds not in every member, left out: %s", ", ".join(left_out))
    if not shared:
        raise EnsembleError("the runs share no fold")
    return [combine_fold([m[name] for m in by_name], classes, versions) for name in shared]


def ensemble_model(members: list, versions: list[str] | None = None):
    """One Keras model: the members side by side on the same input, their softmax outputs averaged. ``versions``
    (each member's feature version) of a mixed ensemble: one input per version (``mixed_inputs``' order), each
    member on its own version's input."""
    import keras

    from emostream.features.contract import graph_input_name

    renamed = []
    for i, member in enumerate(members, start=1):
        config = member.get_config()
        config["name"] = f"member_{i}"
        clone = keras.Model.from_config(config)
        clone.set_weights(member.get_weights())
        renamed.append(clone)
    shape = members[0].input_shape[1:]
    order = mixed_inputs(versions) if versions else ()
    if not order:
        inputs = keras.Input(shape=shape, name=graph_input_name())
        averaged = keras.layers.Average(name="probabilities")([m(inputs) for m in renamed])
        return keras.Model(inputs, averaged, name=f"ensemble_of_{len(members)}")
    by_version = {v: keras.Input(shape=shape, name=graph_input_name(v)) for v in order}
    averaged = keras.layers.Average(name="probabilities")(
        [m(by_version[v]) for m, v in zip(renamed, versions, strict=True)])
    return keras.Model([by_version[v] for v in order], averaged, name=f"ensemble_of_{len(members)}")


def listed_scores(model, listed, classes: list[str], preset: Preset, data_dirs: dict, cache_dir, seed: int,
                  input_versions: tuple[str, ...] = ()) -> dict:
    """``full_scores`` of ``model`` on the listed clips, scored as evaluation scores them (the same clip bank and
    noise floors for the data seed ``seed``, the daemon's windows, the mean over classified windows). Feature version
    4 takes each clip's speaker baseline from the speaker's other *listed* clips: the evaluation's own baseline on
    every protocol, as the evaluation takes it from the speaker's other clips in the same part."""
    from emostream.export.cli import listed_corpora, listed_roots
    from emostream.train.clipbank import clip_bank
    from emostream.train.evaluate import clip_probabilities

    unknown = sorted(set(listed["emotion"]) - set(classes))
    if unknown:
        raise EnsembleError(f"listed clips have emotions the model lacks: {', '.join(unknown)}")
    roots = listed_roots(listed, data_dirs, "test_files.csv")
    paths = [str(roots[c] / p) for c, p in zip(listed_corpora(listed), listed["path"], strict=True)]
    bank = clip_bank(Path("/"), paths, "orig", seed, cache_dir)
    rows, heard = np.arange(len(paths)), None
    if preset.features.needs_baseline:  # version 4: each clip after the speaker's other listed clips, as evaluated
        from emostream.train.baselines import clip_profiles, speaker_keys

        profiles = clip_profiles({"orig": bank}, speaker_keys(listed_corpora(listed), listed["actor"]), preset.features)
        heard = profiles.for_fold(rows, [rows]).heard
    p = clip_probabilities(model, bank, rows, preset.multi_window_test, preset.features, heard, input_versions)
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
        summaries = [with_run_facts(json.loads((p / "summary.json").read_text()), p.parent) for p in paths]
        data_seeds = {s.get("data_seed") for s in summaries} - {None}
        if data_seeds - {seed}:
            raise EnsembleError(f"{saved}: the members were prepared with data seed {sorted(data_seeds)}, not {seed}; "
                                "pass --seed")
        members = [load_keras_model(p / "model.keras") for p in paths]
        weights = [m.get_weights() for m in members]
        for i, j in itertools.combinations(range(len(members)), 2):
            if all(np.array_equal(a, b) for a, b in zip(weights[i], weights[j], strict=True)):
                raise EnsembleError(f"{saved}: {paths[i]} and {paths[j]} hold the same weights")
        versions = [LogMelConfig(**s["features"]).feature_version if s.get("features") else preset.feature_version
                    for s in summaries]
        inputs = mixed_inputs(versions)
        model = ensemble_model(members, versions)
        listed = pd.read_csv(paths[0] / "test_files.csv")
        scored = listed_scores(model, listed, classes, preset, data_dirs, cache_dir, seed, inputs)
        first = summaries[0]
        # The member's fold name (older members: rebuilt from the run id without the preset's name).
        fold_name = first.get("fold") or first["run_id"].removeprefix(run_id(first["preset"]["name"], "")).replace(
            "-", " ").strip()
        result = {"n_train": first["n_train"], "n_val": first["n_val"], "n_test": first["n_test"],
                  "epoch": None if first.get("averaged_epochs") else "+".join(str(s.get("epoch")) for s in summaries),
                  "epochs_run": "+".join(str(s.get("epochs_run", "?")) for s in summaries),
                  "averaged_epochs": first.get("averaged_epochs"), "data_seed": seed,
                  "protocol": first.get("protocol"), "max_clips_per_class": first.get("max_clips_per_class"),
                  "weights_described": "a seed ensemble of " + " and ".join(map(described, summaries)),
                  ("test" if first.get("test_accuracy") is not None else "val"): scored}
        # The members that hear a speaker baseline (all of a version 4 ensemble, some of a mixed one) share its prior.
        priors = {json.dumps(s.get("baseline_prior")) for s, v in zip(summaries, versions, strict=True)
                  if v in STATEFUL_BASE}
        if len(priors) > 1:
            raise EnsembleError(f"{saved}: the members carry different baseline priors (trained on other speakers?)")
        prior = json.loads(priors.pop()) if priors else None
        if prior is not None:
            result["baseline_prior"] = prior
        if inputs:
            result["input_versions"] = list(inputs)
        folder = out / saved
        write_run_folder(model, preset, classes, listed, fold_name, result, folder)
        described_members = [{"folder": str(p.parent), "run_id": s.get("run_id"),
                              "training_seed": s.get("training_seed"), "listed_accuracy": s.get("listed_accuracy"),
                              **{k: s.get(k) for k in ("epoch", "averaged_epochs", "epochs_run")},
                              # a mixed ensemble's members differ in recipe: each keeps its own
                              # (under "training_only", the key files have used since before member settings
                              # took layers too; a record older than a setting holds that setting's default)
                              **({"preset_name": s["preset"]["name"], "features": s.get("features"),
                                  "training_only": member_settings(Preset.from_record(s["preset"]))}
                                 if inputs else {})}
                             for p, s in zip(paths, summaries, strict=True)]
        summary_path = folder / "summary.json"
        report.write_json(summary_path, {**json.loads(summary_path.read_text()), "members": described_members})
        with (folder / "metrics.md").open("a") as card:
            what = (f"A mixed ensemble: the mean of the probabilities of {len(paths)} models, of feature versions "
                    f"{' and '.join(inputs)} (each on its own version's input)" if inputs else
                    f"A seed ensemble: the mean of the probabilities of {len(paths)} models of this recipe")
            card.write(what + ", each trained on the same clips with its own seed (one graph when exported). "
                       "Members: " +
                       "; ".join(f"`{m['folder']}` (seed {m['training_seed'] or 'not recorded'}), listed accuracy "
                                 f"{m['listed_accuracy']:.2%}" for m in described_members) + ".\n")
        logger.info("%s: ensemble of %d, listed clips accuracy %.2f%% (members: %s)", saved, len(paths),
                    100 * scored["accuracy"], ", ".join(f"{s['listed_accuracy']:.2%}" for s in summaries))
        written.append(folder)
    return written


MEMBER_FIELDS = ("fold", "data_seed", "max_clips_per_class", "features", "scored_on", "n_train", "n_val", "n_test")


def member_summary(summary: dict, i: int) -> dict:
    """Member ``i`` (from 1) of an ensemble's ``summary.json``, as its own run's summary would read: the shared facts
    (fold, data preparation, clip counts), the member's own seed, weights and listed accuracy; the ensemble's
    scores left out (a member's own were not kept). Ensembles from before members kept ``epoch``,
    ``averaged_epochs`` and ``epochs_run`` give the ensemble's span and the i-th of its ``a+b`` runs."""
    members = summary["members"]
    member = members[i - 1]
    runs = str(summary.get("epochs_run") or "").split("+")
    name = summary["preset"]["name"].removesuffix(f"-ensemble-{len(members)}")
    return {**{k: summary.get(k) for k in MEMBER_FIELDS},
            "protocol": summary.get("protocol") or protocol_of_fold(str(summary.get("fold", ""))),
            "run_id": member.get("run_id"), "preset": {**summary["preset"], "name": name},
            **own_recipe(summary, member),
            "training_seed": member.get("training_seed"), "listed_accuracy": member.get("listed_accuracy"),
            "test_accuracy": None, "test_macro_f1": None, "test_uar": None, "test_first_window": None, "cross": None,
            "epoch": member.get("epoch"),
            "averaged_epochs": member.get("averaged_epochs", summary.get("averaged_epochs")),
            "epochs_run": member.get("epochs_run", int(runs[i - 1]) if len(runs) == len(members) and
                                     runs[i - 1].isdigit() else None)}


def own_recipe(summary: dict, member: dict) -> dict:
    """A member of a mixed ensemble: its own preset name, features and member settings (``MEMBER_SETTINGS``, kept
    under ``training_only``; and the prior, if it hears a baseline); a member of a one-recipe ensemble: the
    ensemble's prior, if any (its features are the ensemble's). Ensembles saved before members kept their own
    settings give the first member's; a member record older than one setting gives that setting's default."""
    features = member.get("features") or summary.get("features") or {}
    stateful = features.get("feature_version") in STATEFUL_BASE
    prior = {"baseline_prior": summary["baseline_prior"]} if stateful and "baseline_prior" in summary else {}
    if "preset_name" not in member:
        return prior
    own = member.get("training_only", {})
    if own:  # a setting missing here was added after the member was saved: it trained at its default
        own = {**MEMBER_DEFAULTS, **own}
    return {"preset": {**summary["preset"], "name": member["preset_name"],
                       "feature_version": features["feature_version"], **own},
            "features": features, **prior}


#: The member settings that have a default (a record saved before the setting existed trained at it).
MEMBER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Preset)
                   if f.name in MEMBER_SETTINGS and f.default is not dataclasses.MISSING}


def unpack_members(folder: Path, out: Path) -> list[Path]:
    """An ensemble's model folder (``model.keras`` built by ``ensemble_model``, ``summary.json`` naming its members)
    → one run folder per member, ``out/member-N/`` with its header (``evaluation.json``, no per-clip results) and
    ``model-foldK[-tail-average]/`` (model, labels, listed clips, the member's summary).

    Why: a new member (a run with its own ``--seed-offset``) can then join the shipped ones with ``--models-only``
    without their original runs, which are not kept beside the shipped model."""
    import shutil

    from emostream.export.onnx_export import load_keras_model

    folder, out = Path(folder), Path(out)
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EnsembleError(f"{folder}: no readable summary.json ({exc})") from None
    if len(summary.get("members") or []) < 2:
        raise EnsembleError(f"{folder}: summary.json names no ensemble members (not an emostream-ensemble model)")
    try:
        members = [member_summary(summary, i) for i in range(1, len(summary["members"]) + 1)]
    except ValueError as exc:
        raise EnsembleError(f"{folder}: {exc}") from None
    # The saved folder's name, as evaluate --save-model names it (the shipped models/ folder: the ship fold's).
    saved = folder.name if folder.name.startswith("model-fold") else \
        "model-fold1" + ("-tail-average" if summary.get("averaged_epochs") else "")
    model = load_keras_model(folder / "model.keras")
    classes = json.loads((folder / "labels.json").read_text())
    written = []
    for i, member in enumerate(members, start=1):
        try:
            layer = model.get_layer(f"member_{i}")
        except ValueError:
            raise EnsembleError(f"{folder}/model.keras has no layer member_{i}: not the ensemble its summary "
                                "describes") from None
        target = out / f"member-{i}" / saved
        target.mkdir(parents=True, exist_ok=True)
        layer.save(target / "model.keras")
        for name in ("labels.json", "test_files.csv"):
            shutil.copyfile(folder / name, target / name)
        # The run's header, so the member passes the same-recipe check beside a new run of the same recipe.
        report.write_json(target.parent / "evaluation.json", {
            "protocol": member["protocol"], "preset": member["preset"], "classes": classes,
            "data_seed": member["data_seed"] if member["data_seed"] is not None else 42,
            "max_clips_per_class": member["max_clips_per_class"], "unpacked_from": str(folder)})
        report.write_json(target.parent / "folds.json", [])  # no per-clip probabilities: --models-only only
        report.write_json(target / "summary.json", {**member, "unpacked_from": str(folder)})
        written.append(target.parent)
    return written


def with_run_facts(summary: dict, run: Path) -> dict:
    """A member's summary, completed from its run's ``folds.json`` where it predates a field (``epochs_run``,
    ``training_seed``) and the run had a single fold (the ship protocol's), so the fold is not in doubt."""
    try:
        folds = json.loads((run / "folds.json").read_text())
    except (OSError, json.JSONDecodeError):
        return summary
    if len(folds) != 1:
        return summary
    return {**summary, **{k: folds[0][k] for k in ("epochs_run", "training_seed")
                          if summary.get(k) is None and k in folds[0]}}


def described(summary: dict) -> str:
    """How one member's weights were chosen, for the ensemble's card."""
    seed = summary.get("training_seed")
    span = summary.get("averaged_epochs")
    run = f" of {summary['epochs_run']} run" if summary.get("epochs_run") else ""
    which = f"weights averaged over epochs {span[0]}–{span[1]}{run}" if span else \
        f"the checkpoint of epoch {summary.get('epoch')}{run}"
    return f"{which} (seed {seed if seed is not None else 'not recorded'})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emostream-ensemble", description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="*", metavar="RUN",
                   help="emostream-evaluate output folders of one recipe, each trained with its own --seed-offset")
    p.add_argument("--unpack", type=Path, metavar="MODEL_FOLDER",
                   help="instead: write each member of this ensemble's model folder (e.g. models/) as a run folder "
                        "under --out, to combine with a new member (--models-only)")
    p.add_argument("--out", type=Path, required=True, help="folder for the ensemble's evaluation and models")
    p.add_argument("--models-only", action="store_true",
                   help="only the ensemble's models (members that kept no per-clip probabilities, e.g. a ship run "
                        "from before they were kept); each is scored on its listed clips")
    p.add_argument("--data-dir", help="RAVDESS root, for scoring saved models (default: $RAVDESS_DIR or ../shared/...)")
    p.add_argument("--emodb-dir", help="EmoDB root, for scoring saved models (default: $EMODB_DIR or ../shared/...)")
    p.add_argument("--cache-dir", type=Path, help="feature cache")
    add_ranged(p, "--seed", int, None, 0, 2**31 - 1,
               help="the members' data-preparation seed (their noise floors; default: the one their runs recorded, "
                    "else 42)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(args.unpack) == bool(args.runs):
        p.error("give either runs to combine or --unpack MODEL_FOLDER")
    try:
        if args.unpack:
            for folder in unpack_members(args.unpack, args.out):
                logger.info("wrote %s (a member run folder for --models-only)", folder)
            return 0
        header, members = load_members(args.runs, args.out)
        classes = header["classes"]
        preset = Preset.from_record(header["preset"])  # a mixed ensemble: its stateful version, both names
        preset = dataclasses.replace(preset, name=f"{preset.name}-ensemble-{len(args.runs)}")
        preparation = preparation_of(header)
        args.out.mkdir(parents=True, exist_ok=True)
        if not args.models_only:
            results = combine(members, classes, header.get("member_versions"))
            report.write_folds(args.out / "folds.json", results)
            mixed = {k: header[k] for k in ("input_versions", *(f"member_{t}" for t in MEMBER_SETTINGS))
                     if header.get(k)}
            write_outputs(args.out, header["protocol"], preset, results, classes,
                          {**preparation, "members": [str(f) for f in args.runs], **mixed})
        data_dirs = {"ravdess": args.data_dir, "emodb": args.emodb_dir}
        seed = preparation["data_seed"] if args.seed is None else args.seed
        written = write_models(args.runs, preset, classes, args.out, data_dirs, args.cache_dir, seed)
        for folder in written:
            logger.info("wrote %s (ready for emostream-export)", folder)
        if args.models_only and not written:
            raise EnsembleError("--models-only: no model folder saved by every member (evaluate --save-model)")
    except KeyError as exc:
        p.error(f"a run lacks the field {exc} (not an emostream-evaluate output?)")
    except (EnsembleError, ExportError, OSError, ValueError) as exc:
        p.error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
