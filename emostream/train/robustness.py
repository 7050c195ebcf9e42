"""``emostream-robustness``: what a phone line, a laptop microphone or a noisy room costs the shipped model.

Clips (by default RAVDESS actors 21–24, the speakers the shipped model only validated on) go through one
channel condition each — band limits, telephone, lossy codecs at low bitrates, noise, reverb, a quiet
talker over a noise floor — and are scored as the daemon scores speech (``inference.scoring``) by the ONNX
model through onnxruntime, exactly as served. Writes ``robustness.json``, ``robustness.md`` and a chart.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emostream.features import DEFAULT_CONFIG, load_audio, windows_for_inputs
from emostream.options import DefaultsHelpFormatter, add_model_option, add_ranged
from emostream.train.augment import add_noise, add_reverb, loud_level_dbfs

logger = logging.getLogger(__name__)

SR = DEFAULT_CONFIG.sample_rate_hz


def _resample(y: np.ndarray, from_hz: float, to_hz: float) -> np.ndarray:
    import soxr

    return soxr.resample(y, from_hz, to_hz).astype(np.float32)


def band(rate_hz: int) -> Callable:
    """Down to ``rate_hz`` and back: everything above rate/2 is gone."""
    return lambda y, rng: _resample(_resample(y, SR, rate_hz), rate_hz, SR)[: y.size]


def telephone(y: np.ndarray, rng) -> np.ndarray:
    """300–3400 Hz band at 8 kHz, μ-law-like companding noise left out (the band is what costs)."""
    from scipy.signal import butter, sosfiltfilt

    narrow = _resample(y, SR, 8000)
    sos = butter(4, [300, 3400], btype="bandpass", fs=8000, output="sos")
    return _resample(sosfiltfilt(sos, narrow).astype(np.float32), 8000, SR)[: y.size]


def codec(fmt: str, subtype: str, rate_hz: int, level: float) -> Callable:
    """Encode with libsndfile's MP3 or Opus encoder at ``compression_level`` (towards 1: lower bitrates), decode."""
    import soundfile as sf

    def apply(y: np.ndarray, rng) -> np.ndarray:
        buffer = io.BytesIO()
        sf.write(buffer, _resample(y, SR, rate_hz), rate_hz, format=fmt, subtype=subtype, compression_level=level,
                 bitrate_mode="CONSTANT" if fmt == "MP3" else None)
        apply.kbps.append(buffer.tell() * 8 / 1000 / (y.size / SR))
        buffer.seek(0)
        decoded, rate = sf.read(buffer, dtype="float32")
        return _resample(decoded, rate, SR)[: y.size]

    apply.kbps = []
    return apply


def noise(snr_db: float) -> Callable:
    return lambda y, rng: add_noise(y, rng, (snr_db, snr_db))


def reverb(y: np.ndarray, rng) -> np.ndarray:
    return add_reverb(y, rng, (0.5, 0.7))


def quiet_talker(y: np.ndarray, rng) -> np.ndarray:
    """−30 dB gain over a −65 dBFS white noise floor (a distant talker, a laptop microphone)."""
    return (y * 10 ** (-30 / 20) + rng.standard_normal(y.size).astype(np.float32) * 10 ** (-65 / 20)).astype(np.float32)


def close_microphone(y: np.ndarray, rng) -> np.ndarray:
    """The take's loud frames raised (or lowered) to −25 dBFS, a talker close to a live microphone: RAVDESS records its
    quiet emotions quietly, so over the scoring's −60 dBFS floor its takes stand about 18–37 dB above the floor by
    emotion (median loud frames: calm −42 dBFS, angry −23)."""
    return (y * 10 ** ((-25.0 - loud_level_dbfs(y)) / 20)).astype(np.float32)


def conditions() -> dict[str, Callable]:
    return {
        "clean": lambda y, rng: y,
        "16 kHz band": band(16000),
        "telephone 300–3400 Hz, 8 kHz": telephone,
        "MP3, 16 kHz, low bitrate": codec("MP3", "MPEG_LAYER_III", 16000, 0.95),
        "Opus, 16 kHz, low bitrate": codec("OGG", "OPUS", 16000, 0.98),
        "white/pink/brown noise 20 dB SNR": noise(20),
        "noise 10 dB SNR": noise(10),
        "noise 5 dB SNR": noise(5),
        "room reverb RT60 0.5–0.7 s": reverb,
        "−30 dB gain over a −65 dBFS floor": quiet_talker,
        "close microphone: loud frames at −25 dBFS": close_microphone,
    }


def evaluate(model, clips: list[tuple[str, str]], limit: int | None = None) -> dict:
    """Accuracy, UAR and top-class share per condition for (path, label) clips."""
    from emostream.inference.baseline import StreamBaseline
    from emostream.inference.scoring import clip_seed, clip_windows
    from emostream.train.evaluate import scores

    labels = model.labels
    y_true = np.array([labels.index(label) for _, label in clips])
    audio = [load_audio(path) for path, _ in tqdm(clips, desc="decode", file=sys.stderr)]
    results, clean = {}, None
    for name, condition in conditions().items():  # "clean" first: the others' answers are counted against its
        predictions = []
        for (path, _), y in tqdm(list(zip(clips, audio, strict=True)), desc=name, file=sys.stderr):
            rng = np.random.default_rng(zlib.crc32(f"{name}:{Path(path).name}".encode()))
            degraded = np.clip(condition(y, rng), -1.0, 1.0)
            windows = clip_windows(degraded, seed=clip_seed(Path(path).name), config=model.features.per_window())
            if model.features.needs_baseline:  # version 4: each clip as a stream's first utterance (the API's way)
                windows = windows_for_inputs(model.input_versions, windows,
                                             StreamBaseline(model.contract.baseline_prior).relative(windows))
            predictions.append(model.predict(windows).mean(axis=0).argmax())
        predictions = np.array(predictions)
        clean = predictions if name == "clean" else clean
        share = np.bincount(predictions, minlength=len(labels)) / len(predictions)
        results[name] = {**scores(y_true, predictions), "max_share": float(share.max()),
                         "top_class": labels[int(share.argmax())], "changed": float(np.mean(predictions != clean))}
        if getattr(condition, "kbps", None):
            results[name]["kbps"] = float(np.mean(condition.kbps))
        logger.info("%s: accuracy %.3f, UAR %.3f", name, results[name]["accuracy"], results[name]["uar"])
    return results


def write_report(results: dict, out: Path, what: str, model_name: str = "the shipped model",
                 run_id: str = "") -> None:
    """``model_name``: what the heading calls the model scored (another file than the shipped one is named)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps({"clips": what, "model": model_name, "run_id": run_id,
                                                     "conditions": results}, indent=2) + "\n")
    clean = results["clean"]["accuracy"]
    lines = [f"# Robustness of {model_name}: {what}", "",
             "Each clip is degraded, then scored as the daemon scores speech (noise floor, sliding windows, gate, "
             "mean over classified windows) by the ONNX model through onnxruntime.", "",
             "| condition | accuracy | against clean | UAR | top class changed | most predicted class (share) |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        extra = f" (≈ {r['kbps']:.0f} kbit/s)" if "kbps" in r else ""
        gain = (r["accuracy"] - clean) * 100
        lines.append(f"| {name}{extra} | {r['accuracy']:.1%} | {gain:+.1f} pt | {r['uar']:.3f} | "
                     f"{r['changed']:.0%} | {r['top_class']} ({r['max_share']:.0%}) |")
    (out / "robustness.md").write_text("\n".join(lines) + "\n")
    from emostream.train.report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = list(results)
    ax.barh(names[::-1], [results[n]["accuracy"] for n in names[::-1]], color="tab:blue")
    ax.axvline(clean, color="grey", ls="--", lw=1)
    ax.set(xlabel="accuracy (clip mean)", xlim=(0, 1), title="Shipped model under channel conditions")
    fig.tight_layout()
    fig.savefig(out / "robustness.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emostream-robustness", description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter)
    add_model_option(p, help="ONNX model")
    p.add_argument("--data-dir", help="RAVDESS root (default: $RAVDESS_DIR or ../shared/data/ravdess)")
    p.add_argument("--actors", default="21,22,23,24", help="RAVDESS actors whose clips are scored")
    p.add_argument("--test-files", type=Path,
                   help="score the clips of this test-file list (a run's test_files.csv) instead of --actors")
    add_ranged(p, "--every", int, 1, 1, 10_000, help="take every N-th clip (quick but spread out)")
    p.add_argument("--channel", choices=["speech", "song", "both"], default="both")
    add_ranged(p, "--limit", int, None, 1, 1_000_000, help="score only the first N clips (quick checks)")
    p.add_argument("--out", type=Path, default=Path("models") / "evaluation" / "robustness")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from emostream.inference.model import EmotionModel, ModelError
    from emostream.train.data import DatasetError, index_ravdess

    try:
        actors = [int(a) for a in args.actors.split(",")]
        if not all(1 <= a <= 24 for a in actors):
            raise ValueError
    except ValueError:
        p.error(f"--actors {args.actors!r}: expected comma-separated actor numbers 1-24")
    try:
        model = EmotionModel(args.model)
        index = index_ravdess(args.data_dir)
    except (ModelError, DatasetError) as exc:
        p.error(str(exc))
    frame = index.frame[index.frame["actor"].isin(actors)]
    what = f"RAVDESS clips of actors {args.actors}"
    if args.test_files:
        import pandas as pd

        listed = set(pd.read_csv(args.test_files)["path"])
        frame = index.frame[index.frame["path"].isin(listed)]
        what = f"clips of {args.test_files} (never trained on)"
    if args.channel != "both":
        frame = frame[frame["channel"] == args.channel]
    frame = frame.sort_values("path").iloc[:: max(1, args.every)]
    clips = [(str(index.root / row.path), row.emotion) for row in frame.itertuples()][: args.limit]
    if not clips:
        p.error("no clips match --actors/--channel")
    what = f"{len(clips)} {what}" + ("" if args.channel == "both" else f", {args.channel} only")
    from emostream.paths import DEFAULT_MODEL_PATH

    shipped = args.model.resolve() == DEFAULT_MODEL_PATH.resolve()
    write_report(evaluate(model, clips), args.out, what, "the shipped model" if shipped else f"`{args.model.name}`",
                 model.contract.run_id)
    logger.info("wrote %s", args.out / "robustness.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
