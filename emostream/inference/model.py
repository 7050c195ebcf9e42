"""``EmotionModel``: a stateless "windows in → probabilities out" wrapper around one onnxruntime session.

The session's thread count and spinning are set on purpose (an idle daemon must not burn a core),
and the feature contract is read from the model file and checked before the first window.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emostream.features import DEFAULT_CONFIG, LogMelConfig
from emostream.features.contract import ContractError, ModelContract
from emostream.options import check_range
from emostream.paths import DEFAULT_MODEL_PATH, why_not_a_file

logger = logging.getLogger(__name__)



class ModelError(RuntimeError):
    """A model file that is missing, corrupt, or carries a contract this code cannot honour."""


THREADS_RANGE = (1, 64)


@dataclass(frozen=True)
class InferenceConfig:
    intra_op_threads: int = 1
    allow_spinning: bool = False
    max_batch_windows: int = 4  # onnxruntime's arena keeps its peak: big batches would pin hundreds of MB

    def __post_init__(self):
        check_range("intra_op_threads", self.intra_op_threads, *THREADS_RANGE)
        check_range("max_batch_windows", self.max_batch_windows, 1, 1024)  # 0 once killed the analysis worker


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ModelError("onnxruntime is not installed: pip install onnxruntime") from None
    return onnxruntime


def onnxruntime_reason(exc: Exception) -> str:
    """onnxruntime's load error in words: ``[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from PATH
    failed:Protobuf parsing failed.`` → ``not an ONNX model (Protobuf parsing failed)``."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    first = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first)
    first = re.sub(r"^Load model from .* failed: ?", "", first).strip().rstrip(".")
    return f"not an ONNX model ({first})" if "Protobuf parsing failed" in first else first


class EmotionModel:
    """Load ``path`` once; ``predict`` maps (n, n_mels, frames) windows to (n, n_labels) probabilities."""

    def __init__(
        self,
        path: str | Path | bytes = DEFAULT_MODEL_PATH,
        inference: InferenceConfig = InferenceConfig(),
        features: LogMelConfig = DEFAULT_CONFIG,
    ):
        ort = _onnxruntime()
        source = path
        if not isinstance(path, bytes):
            self.path = Path(path)
            if reason := why_not_a_file(self.path, "model file"):
                raise ModelError(reason)
            source = str(self.path)
        else:
            self.path = None
        options = ort.SessionOptions()
        options.intra_op_num_threads = inference.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        spin = "1" if inference.allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(f"cannot load model {self.path or '<bytes>'}: {onnxruntime_reason(exc)}") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        try:
            self.contract = ModelContract.from_metadata(metadata)
            self.contract.check_honoured_by(features)
        except ContractError as exc:
            raise ModelError(f"{self.path or 'model'}: {exc}") from None
        self.features = self.contract.feature_config()  # the model's feature version, which this code computes
        self.inference = inference
        inputs = self.session.get_inputs()
        features = self.features
        self.input_versions = self.contract.inputs  # what each graph input takes, in order
        want = [features.n_mels, features.window_frames, 1]
        if len(inputs) != len(self.input_versions) or any(list(i.shape[1:]) != want for i in inputs):
            raise ModelError(f"{self.path or 'model'}: model inputs {[i.shape for i in inputs]} do not take "
                             f"(batch, {features.n_mels}, {features.window_frames}, 1) windows of feature versions "
                             f"{list(self.input_versions)}")
        self.input_names = [i.name for i in inputs]
        if len(inputs) > 1:  # inputs named by version (as exported) are matched by name, never by position alone
            named = self.contract.graph_inputs
            if set(self.input_names) != set(named):
                raise ModelError(f"{self.path or 'model'}: model inputs {self.input_names} are not named "
                                 f"{named} for its input_versions {list(self.input_versions)}")
            self.input_names = named
        self.labels = list(self.contract.labels)
        outputs = self.session.get_outputs()
        if outputs[0].shape[-1] != len(self.labels):
            raise ModelError(f"{self.path}: model gives {outputs[0].shape[-1]} scores for {len(self.labels)} labels")

    def predict(self, windows) -> np.ndarray:
        """(n, n_mels, frames) or (n_mels, frames) standardised windows → (n, n_labels) float32. A model of more
        than one input takes a sequence of such arrays, one per input (``features.windows_for_inputs``)."""
        per_input = isinstance(windows, (list, tuple)) and len(windows) == len(self.input_names) and \
            all(isinstance(a, np.ndarray) and (a.ndim == 3 or len(self.input_names) == 1) for a in windows)
        arrays = list(windows) if per_input else [windows]
        if len(arrays) != len(self.input_names):
            raise ValueError(f"this model takes {len(self.input_names)} window arrays (feature versions "
                             f"{list(self.input_versions)}), got {len(arrays)}")
        xs = [self._checked(a) for a in arrays]
        if len({len(x) for x in xs}) > 1:
            raise ValueError(f"the window arrays differ in length: {[len(x) for x in xs]}")
        step = self.inference.max_batch_windows
        return np.concatenate([self.session.run(None, {name: x[i : i + step, ..., np.newaxis]
                                                       for name, x in zip(self.input_names, xs, strict=True)})[0]
                               for i in range(0, len(xs[0]), step)]) if len(xs[0]) else \
            np.zeros((0, len(self.labels)), np.float32)

    def _checked(self, windows) -> np.ndarray:
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim == 2:
            x = x[np.newaxis]
        if x.shape[1:] != (self.features.n_mels, self.features.window_frames):
            raise ValueError(f"expected log-Mel windows of shape (n, {self.features.n_mels}, "
                             f"{self.features.window_frames}), got {x.shape}; for audio samples use "
                             "emostream.EmotionRecognizer().predict(samples, sample_rate_hz)")
        return x
