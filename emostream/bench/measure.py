"""The measurements behind ``emostream-bench``: each a plain function returning numbers, no printing."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import numpy as np

from emostream.features import DEFAULT_CONFIG, LogMelConfig, compute_log_mel_spect
from emostream.inference.logmel_stream import LogMelStream


def percentiles_ms(seconds: list[float] | np.ndarray) -> dict:
    """p50/p95/p99/max in milliseconds, and the count."""
    a = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "n": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
        "mean_ms": float(a.mean()),
    }


def time_calls(fn: Callable[[int], object], n: int, warmup: int = 20) -> list[float]:
    """Wall time of ``fn(i)`` for i in range(n), after ``warmup`` untimed calls; GC off while timing."""
    for i in range(warmup):
        fn(i)
    gc.disable()
    try:
        times = []
        for i in range(n):
            started = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - started)
    finally:
        gc.enable()
    return times


def feature_update_times(signal: np.ndarray, hop_frames: int, n_windows: int,
                         c: LogMelConfig = DEFAULT_CONFIG) -> tuple[list[float], list[float]]:
    """Per hop: ours (``LogMelStream.push`` of one hop of samples) vs recomputing the window with librosa, both
    of the feature version in ``c`` (the daemon computes the model's own)."""
    hop = hop_frames * c.hop_samples
    needed = c.window_samples + (n_windows + 40) * hop
    signal = np.resize(signal, needed)  # repeat the clip as long as needed
    stream = LogMelStream(c, hop_frames)
    stream.push(signal[: c.window_samples - hop])
    position = [c.window_samples - hop]

    def push(_):
        windows = stream.push(signal[position[0] : position[0] + hop])
        position[0] += hop
        assert len(windows) == 1

    ours = time_calls(push, n_windows)

    def naive(i):
        start = i * hop
        compute_log_mel_spect(signal[start : start + c.window_samples], c)

    return ours, time_calls(naive, n_windows)


def windows_from(signal: np.ndarray, n: int, hop_frames: int = 11, c: LogMelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """``n`` real feature windows of ``c``'s version from a signal (repeated as needed)."""
    stream = LogMelStream(c, hop_frames)
    signal = np.resize(signal, c.window_samples + n * hop_frames * c.hop_samples)
    return np.stack([w.features for w in stream.push(signal)][:n])


def model_feed(model):
    """Per-window-version windows → the model's input arrays, as the daemon gives them: a model that hears the
    speaker baseline gets each window relative to a stream's running baseline (counted in its inference time, as
    the daemon's ``inference_ms`` counts it), one array per input."""
    from emostream.features import windows_for_inputs
    from emostream.inference.baseline import StreamBaseline

    if not model.features.needs_baseline:
        return lambda x: [x]
    baseline = StreamBaseline(model.contract.baseline_prior)
    return lambda x: windows_for_inputs(model.input_versions, x, baseline.relative(x))


def fed(predict, feed):
    """``predict`` of the arrays ``feed`` makes of a batch of windows."""
    return lambda x: predict(feed(x))


def inference_times(predict: Callable[[np.ndarray], np.ndarray], windows: np.ndarray, n: int) -> list[float]:
    """Batch-1 latency over ``n`` calls cycling through ``windows``."""
    return time_calls(lambda i: predict(windows[i % len(windows)][np.newaxis]), n, warmup=10)


def sgemm_flops_per_s(threads: int, size: int = 1024, repeats: int = 20) -> float:
    """A large fp32 matrix multiply's rate on ``threads`` BLAS threads: the CPU's practical fp32 peak."""
    from contextlib import nullcontext

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    with threadpool_limits(threads) if threadpool_limits else nullcontext():
        a @ b
        best = min(time_calls(lambda _: a @ b, repeats, warmup=2))
    return 2 * size**3 / best


def onnx_flops_per_window(onnx_path) -> float | None:
    """Multiply-adds ×2 of the Conv, LSTM and MatMul/Gemm nodes for one window (needs the ``onnx`` package)."""
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    model = onnx.load(str(onnx_path))
    for graph_input in model.graph.input:  # every input: a model of several runs a branch on each
        batch = graph_input.type.tensor_type.shape.dim[0]
        batch.Clear()
        batch.dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    flops = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out = shapes.get(node.output[0])
            w = weights.get(node.input[1])
            if out and w:
                flops += 2 * np.prod(out) * np.prod(w[1:])
        elif node.op_type == "LSTM":
            w, r = weights.get(node.input[1]), weights.get(node.input[2])
            x = shapes.get(node.input[0])
            if w and r and x:
                steps = x[0]
                flops += 2 * steps * (np.prod(w[1:]) + np.prod(r[1:])) * w[0]
        elif node.op_type in ("MatMul", "Gemm"):
            w = weights.get(node.input[1])
            if w:
                flops += 2 * np.prod(w)
    return float(flops)


def process_cpu_seconds() -> float:
    """CPU time of every thread of this process, at nanosecond resolution (os.times() ticks in 10 ms)."""
    return time.process_time()
