"""Keras CRNN → ONNX, with the feature contract in ``metadata_props`` and a parity check.

With Keras 3, ``tf2onnx.convert.from_keras`` fails (KeyError on a keras_tensor); converting a
``tf.function`` that calls the model with ``training=False`` works. LSTMs are rebuilt with
``use_cudnn=False`` first, so a GPU-trained model does not export as ``CudnnRNNV3``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emostream.features import DEFAULT_CONFIG, LogMelConfig
from emostream.features.contract import ModelContract

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logger = logging.getLogger(__name__)

OPSET = 18
OUTPUT_NAME = "probabilities"


class ExportError(RuntimeError):
    """A model that cannot be loaded, converted or does not match its ONNX twin."""


def load_keras_model(path: str | Path):
    """Load a ``.keras`` file for inference; one-line ``ExportError`` when missing or corrupt."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"Keras model {path} not found")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # zipfile, h5py, JSON and Keras errors alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"cannot load Keras model {path}: {first}") from None


def without_cudnn(model):
    """The same model with every LSTM forced off the cuDNN kernel, weights copied."""
    import keras

    config = model.get_config()
    if not _cudnn_off(config):
        return model
    clone = keras.Model.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def _cudnn_off(config: dict) -> bool:
    """Set ``use_cudnn=False`` on every LSTM/GRU of a model config, inside nested models too (the members of a seed
    ensemble); True when something changed."""
    changed = False
    for layer in config.get("layers", []):
        if layer["class_name"] in ("LSTM", "GRU") and layer["config"].get("use_cudnn") is not False:
            layer["config"]["use_cudnn"] = False
            changed = True
        elif "layers" in layer.get("config", {}):
            changed |= _cudnn_off(layer["config"])
    return changed


def convert(model, contract: ModelContract, features: LogMelConfig = DEFAULT_CONFIG):
    """An ``onnx.ModelProto`` of ``model`` with a dynamic batch, named input/output and the contract."""
    import tensorflow as tf
    import tf2onnx

    model = without_cudnn(model)
    names = contract.graph_inputs
    spec = tuple(tf.TensorSpec([None, features.n_mels, features.window_frames, 1], tf.float32, name=name)
                 for name in names)

    @tf.function(input_signature=spec, autograph=False)
    def forward(*xs):
        return model(xs[0] if len(xs) == 1 else list(xs), training=False)

    try:
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    except Exception as exc:
        raise ExportError(f"tf2onnx could not convert the model: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    rename_output(proto, OUTPUT_NAME)
    proto.producer_name = "emostream-export"
    del proto.metadata_props[:]
    for key, value in contract.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    import onnx

    onnx.checker.check_model(proto)
    return proto


def rename_output(proto, name: str) -> None:
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    proto.graph.output[0].name = name


def keras_inputs(arrays: list[np.ndarray]):
    """One (n, n_mels, frames) window array per input → what the Keras model takes: each with its channel axis, a
    list only for a model of several inputs."""
    x = [a[..., np.newaxis] for a in arrays]
    return x[0] if len(x) == 1 else x


@dataclass(frozen=True)
class Parity:
    """onnxruntime vs Keras on the same windows."""

    n_windows: int
    max_abs_diff: float
    top1_agreement: float
    keras_accuracy: float | None
    onnx_accuracy: float | None

    @property
    def holds(self) -> bool:
        same_accuracy = self.keras_accuracy == self.onnx_accuracy
        return self.max_abs_diff < 1e-5 and self.top1_agreement == 1.0 and same_accuracy

    def describe(self) -> str:
        acc = (f"; accuracy Keras {self.keras_accuracy:.4%} vs ONNX {self.onnx_accuracy:.4%}"
               if self.keras_accuracy is not None else "")
        return (f"parity on {self.n_windows} windows: max |Δp| {self.max_abs_diff:.2e}, "
                f"top-1 agreement {self.top1_agreement:.2%}{acc}")


def check_parity(keras_model, onnx_bytes: bytes, windows, y_true: np.ndarray | None = None) -> Parity:
    """Probabilities of both on ``windows`` (n, n_mels, frames) — or one such array per input, for a model of
    several — and accuracy too when labels are given."""
    from emostream.inference.model import EmotionModel

    onnx_model = EmotionModel(onnx_bytes)
    xs = [np.asarray(w) for w in windows] if isinstance(windows, (list, tuple)) else [np.asarray(windows)]
    p_keras = keras_model.predict(keras_inputs(xs), batch_size=128, verbose=0)
    p_onnx = np.concatenate([onnx_model.predict([x[i : i + 128] for x in xs]) for i in range(0, len(xs[0]), 128)])
    top_keras, top_onnx = p_keras.argmax(axis=1), p_onnx.argmax(axis=1)
    return Parity(
        n_windows=len(xs[0]),
        max_abs_diff=float(np.abs(p_keras - p_onnx).max()),
        top1_agreement=float(np.mean(top_keras == top_onnx)),
        keras_accuracy=None if y_true is None else float(np.mean(top_keras == y_true)),
        onnx_accuracy=None if y_true is None else float(np.mean(top_onnx == y_true)),
    )
