"""``emostream-bench``: where every millisecond of the streaming path goes, against the naive way, in one run.

Writes a terminal table, ``bench.json`` and ``bench.md`` (with ``latency.png``) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from emostream.bench.measure import (
    feature_update_times,
    fed,
    inference_times,
    model_feed,
    onnx_flops_per_window,
    percentiles_ms,
    process_cpu_seconds,
    sgemm_flops_per_s,
    windows_from,
)
from emostream.features import DEFAULT_CONFIG, load_audio
from emostream.inference.model import EmotionModel, InferenceConfig
from emostream.inference.pipeline import HOP_RANGE_S, EmotionPipeline, PipelineConfig
from emostream.options import DefaultsHelpFormatter, add_model_option, add_ranged, add_sample_option, ranged

logger = logging.getLogger(__name__)

TARGETS = {
    "inference_p50_vs_floor": 1.2,
    "feature_update_p99_ms": 0.3,
    "e2e_p99_ms_100": 5.0,
    "e2e_p99_ms_1000": 25.0,
    "idle_cpu_percent": 2.0,
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ort_profile(model_path: Path, windows: np.ndarray, threads: int, runs: int = 200) -> list[dict]:
    """Per-operator share of inference time from onnxruntime's profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(os.environ.get("TMPDIR", "/tmp")) / "emostream-ort-profile")
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    model = EmotionModel(model_path)
    feed = model_feed(model)  # every input, as the daemon feeds them
    for i in range(runs):
        arrays = feed(windows[i % len(windows)][np.newaxis])
        session.run(None, {name: a[..., np.newaxis] for name, a in zip(model.input_names, arrays, strict=True)})
    trace = Path(session.end_profiling())
    totals: dict[str, float] = {}
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            totals[op] = totals.get(op, 0.0) + event["dur"]
    trace.unlink(missing_ok=True)
    total = sum(totals.values()) or 1.0
    return [{"op": op, "us_per_window": us / runs, "share": us / total}
            for op, us in sorted(totals.items(), key=lambda kv: -kv[1])]


def keras_predict(keras_path: Path):
    """The Keras model called directly (``model(x, training=False)``), or None without TensorFlow."""
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
    except ImportError:
        return None
    if not keras_path.is_file():
        return None
    model = keras.models.load_model(keras_path, compile=False)
    from emostream.export.onnx_export import keras_inputs

    return lambda xs: np.asarray(model(keras_inputs(xs), training=False))



def realtime_factor(model: EmotionModel, signal: np.ndarray, hop_s: float, seconds: float) -> dict:
    """Audio seconds per CPU second through the whole pipeline on a ``--fast`` file run."""
    pipeline = EmotionPipeline(model, PipelineConfig(hop_s=hop_s, silence_dbfs=-120), DEFAULT_CONFIG.sample_rate_hz)
    audio = np.resize(signal, int(seconds * DEFAULT_CONFIG.sample_rate_hz))
    block = 2048
    cpu0, wall0 = process_cpu_seconds(), time.perf_counter()
    windows = 0
    for i in range(0, len(audio), block):
        windows += sum(m["type"] == "scores" for m in pipeline.process(audio[i : i + block]))
    cpu, wall = max(process_cpu_seconds() - cpu0, 1e-9), time.perf_counter() - wall0
    return {"audio_s": seconds, "cpu_s": cpu, "wall_s": wall, "windows": windows,
            "realtime_factor_cpu": seconds / cpu, "realtime_factor_wall": seconds / wall}


def run(args) -> dict:
    from emostream.bench import fanout

    results: dict = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__},
        "settings": {"windows": args.windows, "hop_s": args.hop, "duration_s": args.duration,
                     "subscribers": args.subscribers, "model": str(args.model)},
    }
    import onnxruntime

    results["machine"]["onnxruntime"] = onnxruntime.__version__
    signal = load_audio(args.audio)
    model = EmotionModel(args.model, InferenceConfig(intra_op_threads=1, allow_spinning=False))
    # Other models timed beside it on one thread (loaded now, so a bad path fails before the long measurements):
    # --also-model (e.g. one member of a shipped seed ensemble: what the ensemble costs) and an INT8 twin if present.
    beside = {f"onnxruntime fp32, 1 thread, {label}": EmotionModel(other, InferenceConfig(1, False))
              for label, other in zip(model_labels(args.also_model), args.also_model, strict=True)}
    int8 = args.model.with_name(args.model.stem + ".int8.onnx")
    if int8.is_file():
        beside["onnxruntime int8, 1 thread"] = EmotionModel(int8, InferenceConfig(1, False))
    hop_frames = PipelineConfig(hop_s=args.hop).hop_frames(DEFAULT_CONFIG.sample_rate_hz, DEFAULT_CONFIG.hop_samples)

    logger.info("feature update per hop (%d windows)", args.windows)
    ours, naive = feature_update_times(signal, hop_frames, args.windows, model.features.per_window())
    # The stream's per-window version; a version 4 model's baseline step is part of its inference (as in the daemon).
    results["features"] = {"hop_frames": hop_frames, "feature_version": model.features.per_window().feature_version,
                           "model_feature_version": model.features.feature_version,
                           "ours": percentiles_ms(ours),
                           "librosa_whole_window": percentiles_ms(naive)}
    results["features"]["naive_over_ours_p50"] = (results["features"]["librosa_whole_window"]["p50_ms"]
                                                  / results["features"]["ours"]["p50_ms"])

    from emostream.bench.vadcheck import vad_update_times
    from emostream.inference.vad import VadConfig

    logger.info("voice-activity gate per hop (%d hops)", args.windows)
    hop_samples = hop_frames * DEFAULT_CONFIG.hop_samples
    results["vad"] = {"silero (daemon default)": percentiles_ms(
        vad_update_times(signal, hop_samples, args.windows, VadConfig()))}
    try:
        results["vad"]["webrtc"] = percentiles_ms(
            vad_update_times(signal, hop_samples, args.windows, VadConfig(backend="webrtc")))
    except RuntimeError as exc:  # webrtcvad-wheels is in the bench extra only
        logger.info("webrtc gate not measured: %s", exc)

    windows = windows_from(signal, 256, c=model.features.per_window())
    variants = {
        "onnxruntime fp32, 1 thread (daemon default)": InferenceConfig(1, False),
        "onnxruntime fp32, 1 thread, spinning": InferenceConfig(1, True),
        "onnxruntime fp32, 2 threads": InferenceConfig(2, False),
        "onnxruntime fp32, 2 threads, spinning": InferenceConfig(2, True),
    }
    inference = {}
    for name, config in variants.items():
        logger.info("inference: %s", name)
        m = EmotionModel(args.model, config)
        inference[name] = percentiles_ms(inference_times(fed(m.predict, model_feed(m)), windows, args.windows))
    for name, m in beside.items():
        logger.info("inference: %s", name)
        inference[name] = percentiles_ms(inference_times(fed(m.predict, model_feed(m)), windows, args.windows))
    keras_fn = None if args.no_keras else keras_predict(args.keras)
    if keras_fn is not None:
        logger.info("inference: Keras called directly (%d windows)", args.keras_windows)
        inference["Keras model called directly"] = percentiles_ms(
            inference_times(fed(keras_fn, model_feed(model)), windows, args.keras_windows))
    base = inference["onnxruntime fp32, 1 thread (daemon default)"]["p50_ms"]
    for stats in inference.values():
        stats["p50_over_ours"] = stats["p50_ms"] / base
    results["inference"] = inference

    flops = onnx_flops_per_window(args.model)
    rate = sgemm_flops_per_s(threads=1)
    results["floor"] = {"model_mflop_per_window": None if flops is None else flops / 1e6,
                        "sgemm_gflop_per_s_1_thread": rate / 1e9,
                        "floor_ms": None if flops is None else flops / rate * 1e3}
    if flops is not None:
        results["floor"]["inference_p50_over_floor"] = base / results["floor"]["floor_ms"]
    results["profile"] = ort_profile(args.model, windows, threads=1)[:8]

    logger.info("real-time factor (%.0f s of audio, --fast)", args.rtf_seconds)
    results["realtime"] = realtime_factor(model, signal, args.hop, args.rtf_seconds)

    daemon_args = ["--model", str(args.model), "--threads", "1", "--hop", str(args.hop)]
    if not args.skip_fanout:
        fanout.raise_fd_limit()
        results["idle"] = fanout.idle_cpu_percent([*daemon_args, "--stdin"], seconds=args.idle_seconds)
        results["fanout"] = {}
        for n in args.subscribers:
            logger.info("fan-out: %d subscribers for %.0f s", n, args.duration)
            r = fanout.fanout_run([*daemon_args, "--file", str(args.audio), "--loop"], n, args.duration)
            results["fanout"][str(n)] = {
                "connected": r["connected"], "messages": r["messages"], "max_dropped": r["max_dropped"],
                "e2e": percentiles_ms(r["e2e"]) if len(r["e2e"]) else None,
                "broadcast": percentiles_ms(r["broadcast"]) if len(r["broadcast"]) else None,
                "daemon_cpu_percent": r["daemon_cpu_percent"], "daemon_rss_mb": r["daemon_rss_mb"],
                "daemon_publish_ms": r["daemon_publish_ms"],
            }
            results.setdefault("_raw", {})[f"e2e_{n}"] = r["e2e"]
    results.setdefault("_raw", {}).update({"features_ours": np.array(ours), "features_naive": np.array(naive)})
    results["targets"] = check_targets(results)
    return results


def check_targets(r: dict) -> list[dict]:
    rows = []

    def add(name, value, target, unit=""):
        if value is not None:
            rows.append({"target": name, "value": value, "limit": target, "met": value <= target,
                         "by": value / target, "unit": unit})

    add("inference p50 ≤ 1.2× floor (1 thread)", r["floor"].get("inference_p50_over_floor"),
        TARGETS["inference_p50_vs_floor"], "× floor")
    add("feature update p99 ≤ 0.3 ms per hop", r["features"]["ours"]["p99_ms"], TARGETS["feature_update_p99_ms"], "ms")
    for n, key in (("100", "e2e_p99_ms_100"), ("1000", "e2e_p99_ms_1000")):
        stats = r.get("fanout", {}).get(n)
        if stats and stats["e2e"]:
            add(f"end-to-end p99 with {n} subscribers ≤ {TARGETS[key]:g} ms", stats["e2e"]["p99_ms"],
                TARGETS[key], "ms")
    if "idle" in r:
        add("idle daemon CPU < 2 % of a core", r["idle"]["cpu_percent"], TARGETS["idle_cpu_percent"], "%")
    return rows


def table(r: dict) -> str:
    lines = [f"machine: {r['machine']['cpu']}, {r['machine']['cores']} cores; onnxruntime "
             f"{r['machine']['onnxruntime']}", "",
             f"{'stage':<48} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'×ours':>7}"]

    def row(name, s, ratio=None):
        lines.append(f"{name:<48} {s['p50_ms']:8.3f} {s['p95_ms']:8.3f} {s['p99_ms']:8.3f} {s['max_ms']:8.2f} "
                     + (f"{ratio:7.2f}" if ratio is not None else f"{'':>7}"))

    f = r["features"]
    model_version = f.get("model_feature_version", f.get("feature_version", "1"))
    row(f"feature update per hop ({f['hop_frames']} frames, version {f.get('feature_version', '1')})", f["ours"], 1.0)
    if model_version != f.get("feature_version", "1"):
        lines.append(f"  (a version {model_version} model: its speaker-baseline step is timed in its inference)")
    row("  librosa, whole window every hop", f["librosa_whole_window"], f["naive_over_ours_p50"])
    for name, s in r.get("vad", {}).items():
        row(f"voice-activity gate per hop: {name}", s)
    for name, s in r["inference"].items():
        row(f"inference: {name}", s, s["p50_over_ours"])
    for n, s in r.get("fanout", {}).items():
        if s["broadcast"]:
            row(f"broadcast, {n} subscribers", s["broadcast"])
        if s["e2e"]:
            row(f"end to end, {n} subscribers", s["e2e"])
    fl = r["floor"]
    if fl["floor_ms"]:
        lines += ["", f"floor: {fl['model_mflop_per_window']:.1f} MFLOP/window ÷ sgemm "
                  f"{fl['sgemm_gflop_per_s_1_thread']:.1f} GFLOP/s (1 thread) = {fl['floor_ms']:.3f} ms; "
                  f"inference p50 = {fl['inference_p50_over_floor']:.2f}× floor"]
    rt = r["realtime"]
    lines.append(f"real-time factor: {rt['realtime_factor_cpu']:.0f}× (audio s per CPU s), "
                 f"{rt['realtime_factor_wall']:.0f}× wall, {rt['windows']} windows")
    if "idle" in r:
        lines.append(f"idle daemon: {r['idle']['cpu_percent']:.2f} % of a core, {r['idle']['rss_mb']:.0f} MB RSS")
    for n, s in r.get("fanout", {}).items():
        pub = s["daemon_publish_ms"]
        lines.append(f"fan-out {n:>4}: daemon {s['daemon_cpu_percent']:5.1f} % CPU, {s['daemon_rss_mb']:.0f} MB RSS, "
                     f"publish p50 {pub['p50']} / p99 {pub['p99']} ms on its event loop, "
                     f"{s['messages']} messages received, max dropped {s['max_dropped']}")
    lines.append("")
    for t in r["targets"]:
        lines.append(f"[{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['value']:.3f} {t['unit']}"
                     + ("" if t["met"] else f" ({t['by']:.1f}× the limit)"))
    return "\n".join(lines)


def histogram(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw = r["_raw"]
    panels = [("feature update per hop", {"ours": raw["features_ours"], "librosa whole window": raw["features_naive"]})]
    e2e = {k.removeprefix("e2e_") + " subscribers": v for k, v in raw.items() if k.startswith("e2e_") and len(v)}
    if e2e:
        panels.append(("end to end (audio ready → subscriber)", e2e))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4))
    for ax, (title, series) in zip(np.atleast_1d(axes), panels, strict=True):
        for label, values in series.items():
            ms = np.asarray(values) * 1e3
            ax.hist(ms, bins=np.logspace(np.log10(max(ms.min(), 1e-3)), np.log10(ms.max() + 1e-3), 60),
                    alpha=0.6, label=label)
        ax.set_xscale("log")
        ax.set(title=title, xlabel="ms (log scale)", ylabel="count")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(r: dict, table_text: str) -> str:
    profile = "\n".join(f"| {p['op']} | {p['us_per_window']:.0f} | {p['share']:.0%} |" for p in r["profile"])
    return (f"# emostream benchmark\n\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
            f"{r['machine']['cpu']} ({r['machine']['cores']} cores). Produced by `emostream-bench`; "
            "ratios are measured side by side in this one run.\n\n```\n" + table_text + "\n```\n\n"
            "![latency histograms](latency.png)\n\n## Where inference time goes (onnxruntime profiler, 1 thread)\n\n"
            "| operator | µs per window | share |\n|---|---|---|\n" + profile + "\n")


def model_labels(paths: list[Path]) -> list[str]:
    """Each model's row label: its file name, or the path as given where file names repeat (members exported from
    different runs are all ``emotion_crnn.onnx``; one label per model keeps each its own row)."""
    names = [path.name for path in paths]
    return [str(path) if names.count(path.name) > 1 else path.name for path in paths]


def subscriber_counts(text: str) -> list[int]:
    check = ranged(int, 1, 10_000)
    return [check(x) for x in text.split(",")]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="emostream-bench", description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter)
    add_model_option(p, help="ONNX model timed")
    p.add_argument("--keras", type=Path, default=Path("models") / "model.keras",
                   help="Keras twin for the side-by-side (used when TensorFlow is installed)")
    p.add_argument("--no-keras", action="store_true")
    p.add_argument("--also-model", type=Path, action="append", default=[], metavar="ONNX",
                   help="another model timed beside --model, same settings (repeatable), e.g. one member of an "
                        "ensemble")
    add_sample_option(p, help="audio the windows are cut from")
    add_ranged(p, "--windows", int, 1000, 10, 1_000_000, help="timed windows per stage")
    add_ranged(p, "--keras-windows", int, 100, 1, 100_000)
    add_ranged(p, "--hop", float, 0.25, *HOP_RANGE_S, unit="s", help="seconds between windows")
    # At least 4 s: the first window needs 2.3 s of audio, so shorter levels measured nothing and said so nowhere.
    add_ranged(p, "--duration", float, 20.0, 4.0, 3600.0, unit="s", help="seconds per fan-out level")
    p.add_argument("--subscribers", type=subscriber_counts, default=[1, 10, 100, 1000],
                   help="comma-separated fan-out levels (1–10000 each; default: 1,10,100,1000)")
    add_ranged(p, "--rtf-seconds", float, 60.0, 4.0, 3600.0, unit="s", help="seconds of audio for the real-time factor")
    add_ranged(p, "--idle-seconds", float, 5.0, 0.5, 600.0, unit="s")
    p.add_argument("--skip-fanout", action="store_true")
    p.add_argument("--out", type=Path, default=Path("bench") / "results")
    g = p.add_argument_group("many /listen streams (runs only this measurement)")
    g.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")],
                   help="concurrent real-time /listen clients per level, e.g. 1,10,100")
    add_ranged(g, "--streams-duration", float, 15.0, 5.0, 600.0, unit="s", help="seconds of audio per level")
    add_ranged(g, "--listen-workers", int, 0, 0, 256, help="the daemon's analysis threads (0 = one per core)")
    add_ranged(g, "--naive-max", int, 10, 0, 1000,
               help="largest level also run the naive way (one daemon process per stream)")
    args = p.parse_args(argv)
    if len(set(map(str, args.also_model))) < len(args.also_model):
        p.error("--also-model: the same model given twice")
    if args.streams is not None and not all(1 <= n <= 10000 for n in args.streams):
        p.error("--streams levels must be in 1..10000")
    return args


def streams_main(args) -> int:
    from emostream.bench.streams import markdown as streams_markdown
    from emostream.bench.streams import run_streams

    results = run_streams(args.streams, args.model, args.audio, args.streams_duration, args.hop,
                          args.listen_workers, args.naive_max)
    text = streams_markdown(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "streams.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "streams.md").write_text(text)
    logger.info("wrote %s", args.out / "streams.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from emostream.inference.model import ModelError

    if args.streams is not None:
        return streams_main(args)
    try:
        results = run(args)
    except ModelError as exc:
        logger.error("%s", exc)
        return 2
    text = table(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    histogram(results, args.out / "latency.png")
    raw = results.pop("_raw")
    results["raw_counts"] = {k: len(v) for k, v in raw.items()}
    (args.out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "bench.md").write_text(markdown(results, text))
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
