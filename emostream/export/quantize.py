"""Optional INT8: static QDQ quantisation with calibration windows, judged against fp32 in the same run.

Only Conv and MatMul/Gemm are quantised (onnxruntime's static QDQ has no LSTM kernel); the int8 file
is kept only when it is faster than fp32 at batch 1 on one thread and loses less than one point of
test accuracy.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantResult:
    fp32_ms: float
    int8_ms: float
    fp32_accuracy: float
    int8_accuracy: float
    method: str

    @property
    def worth_shipping(self) -> bool:
        return self.int8_ms < self.fp32_ms and self.fp32_accuracy - self.int8_accuracy < 0.01


def _reader(windows: np.ndarray, input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class Windows(CalibrationDataReader):
        def __init__(self):
            self.items = iter(windows)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {input_name: item[np.newaxis, ..., np.newaxis].astype(np.float32)}

    return Windows()


def quantize_static_qdq(fp32: Path, out: Path, calibration: np.ndarray, per_channel: bool = True) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), _reader(calibration, "log_mel"), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                        op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    import onnx

    source, quantised = onnx.load(str(fp32)), onnx.load(str(out))
    del quantised.metadata_props[:]
    quantised.metadata_props.extend(source.metadata_props)  # the contract travels with the int8 file too
    onnx.save(quantised, str(out))


def compare(fp32: Path, int8: Path, windows: np.ndarray, y_true: np.ndarray, runs: int = 300) -> tuple:
    """Batch-1 p50 latency (1 thread, no spinning) and test accuracy of both models, side by side."""
    from emostream.inference.model import EmotionModel, InferenceConfig

    out = []
    for path in (fp32, int8):
        model = EmotionModel(path, InferenceConfig(1, False))
        for i in range(20):
            model.predict(windows[i % len(windows)])
        times = []
        for i in range(runs):
            started = time.perf_counter()
            model.predict(windows[i % len(windows)])
            times.append(time.perf_counter() - started)
        p = np.concatenate([model.predict(windows[i : i + 64]) for i in range(0, len(windows), 64)])
        out.append((float(np.median(times) * 1e3), float(np.mean(p.argmax(axis=1) == y_true))))
    return out


def try_int8(fp32: Path, windows: np.ndarray, y_true: np.ndarray, calibration: np.ndarray) -> QuantResult:
    """Quantise ``fp32`` next to it as ``*.int8.onnx``; delete it again unless it is worth shipping."""
    int8 = fp32.with_name(fp32.stem + ".int8.onnx")
    quantize_static_qdq(fp32, int8, calibration)
    (fp32_ms, fp32_acc), (int8_ms, int8_acc) = compare(fp32, int8, windows, y_true)
    result = QuantResult(fp32_ms, int8_ms, fp32_acc, int8_acc, "static QDQ, per-channel s8 weights, u8 activations, "
                         f"Conv+MatMul, {len(calibration)} calibration windows")
    if not result.worth_shipping:
        int8.unlink()
    return result
