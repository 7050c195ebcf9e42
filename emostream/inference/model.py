"""``EmotionModel``: a stateless "windows in → probabilities out" wrapper around one onnxruntime session.

The session's thread count and spinning are set on purpose (an idle daemon must not burn a core),
and the feature contract is read from the model file and checked before the first window.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emostream.features import DEFAULT_CONFIG, LogMelConfig
from emostream.features.contract import ContractError, ModelContract
from emostream.options import check_range
from emostream.paths import DEFAULT_MODEL_PATH

logger = logging.getLogger(__name__)



class ModelError(RuntimeError):
    """A model file that is missing, corrupt, or carries a contract this code cannot honour."""


THREADS_RANGE = (1, 64)


@dataclass(frozen=True)
class InferenceConfig:
    """How the session runs, and which of the model's classes it reports.

    ``classes``: report only these (at least two of the model's labels), their probabilities renormalised to sum to
    1 (``EmotionModel.report``) — the argmax over them, as evaluation's 4-class and shared-class views score. For a
    use that has no "calm" or "surprised" this is the honest output: on EmoDB (no calm, no surprised) it lifts the
    cross-corpus UAR of the shipped construction from 0.41 to 0.52 (``models/evaluation``). None: every label.
    """

    intra_op_threads: int = 1
    allow_spinning: bool = False
    max_batch_windows: int = 4  # onnxruntime's arena keeps its peak: big batches would pin hundreds of MB
    classes: tuple[str, ...] | None = None

    def __post_init__(self):
        check_range("intra_op_threads", self.intra_op_threads, *THREADS_RANGE)
        check_range("max_batch_windows", self.max_batch_windows, 1, 1024)  # 0 once killed the analysis worker
        if self.classes is not None:
            if isinstance(self.classes, (str, bytes)):
                raise ValueError(f"classes must be a sequence of class names, got the string {self.classes!r}")
            object.__setattr__(self, "classes", tuple(self.classes))  # any iterable in; a hashable tuple kept
            if not all(isinstance(c, str) and c for c in self.classes):
                raise ValueError(f"classes must be class names, got {list(self.classes)!r}")
            if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
                raise ValueError(f"classes must name at least two distinct classes, got {list(self.classes)}")


def parse_classes(text: str) -> tuple[str, ...]:
    """``--classes angry,happy,neutral,sad`` → a tuple of names (an argparse ``type=``; the model checks them)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if len(names) < 2 or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected two or more distinct class names separated by commas, "
                                         f"got {text!r}")
    return names


def add_classes_argument(parser) -> None:
    """The one ``--classes`` flag of the daemon and ``emostream-score``."""
    parser.add_argument("--classes", type=parse_classes, metavar="A,B,...",
                        help="report only these classes, renormalised (e.g. angry,happy,neutral,sad); "
                             "default: every class of the model")


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ModelError("onnxruntime is not installed: pip install onnxruntime") from None
    return onnxruntime


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
            if not self.path.is_file():
                raise ModelError(f"model file {self.path} not found")
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
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot load model {self.path or '<bytes>'}: {first}") from None
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
        self.model_labels = list(self.contract.labels)  # what the graph scores
        outputs = self.session.get_outputs()
        if outputs[0].shape[-1] != len(self.model_labels):
            raise ModelError(f"{self.path}: model gives {outputs[0].shape[-1]} scores for "
                             f"{len(self.model_labels)} labels")
        self._columns = None  # every output
        if inference.classes is not None:
            unknown = [c for c in inference.classes if c not in self.model_labels]
            if unknown:
                raise ModelError(f"classes {unknown} are not classes of this model ({', '.join(self.model_labels)})")
            self._columns = np.array(sorted(self.model_labels.index(c) for c in inference.classes))
        #: what ``report`` gives, in the model's order: every label, or the ``classes`` asked for
        self.labels = self.model_labels if self._columns is None else [self.model_labels[i] for i in self._columns]

    def report(self, p: np.ndarray) -> np.ndarray:
        """Probabilities over ``model_labels`` ((n, k) or (k,)) → over ``labels``: the ``classes`` kept, renormalised.

        Applied last, after any mean over windows, so an utterance's or a clip's answer is the argmax over the kept
        classes of the mean over all of them — what evaluation's shared-class and 4-class views score."""
        if self._columns is None:
            return p
        p = np.asarray(p)
        return restrict(p[np.newaxis], self._columns)[0] if p.ndim == 1 else restrict(p, self._columns)

    def predict(self, windows) -> np.ndarray:
        """(n, n_mels, frames) or (n_mels, frames) standardised windows → (n, len(model_labels)) float32 (every
        class: ``report`` keeps the ``classes`` asked for). A model of more than one input takes a sequence of such
        arrays, one per input (``features.windows_for_inputs``)."""
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
        if not len(xs[0]):
            return np.zeros((0, len(self.model_labels)), np.float32)
        p = np.concatenate([self.session.run(None, {name: x[i : i + step, ..., np.newaxis]
                                                    for name, x in zip(self.input_names, xs, strict=True)})[0]
                            for i in range(0, len(xs[0]), step)])
        return p

    def _checked(self, windows) -> np.ndarray:
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim == 2:
            x = x[np.newaxis]
        if x.shape[1:] != (self.features.n_mels, self.features.window_frames):
            raise ValueError(f"expected log-Mel windows of shape (n, {self.features.n_mels}, "
                             f"{self.features.window_frames}), got {x.shape}; for audio samples use "
                             "emostream.EmotionRecognizer().predict(samples, sample_rate_hz)")
        return x


def restrict(p: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Probabilities (n, n_labels) → (n, len(columns)) renormalised to sum to 1 per row. A row whose kept mass is
    zero (float32 underflow: the model sure of a class left out) becomes uniform, never 0/0."""
    kept = np.asarray(p, dtype=np.float64)[:, columns]
    total = kept.sum(axis=1, keepdims=True)
    uniform = np.full_like(kept, 1.0 / len(columns))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, kept / total, uniform)
    return out.astype(np.float32)
