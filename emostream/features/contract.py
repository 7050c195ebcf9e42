"""The feature contract a model file carries in its ONNX ``metadata_props``.

Export writes it; the daemon reads it back and refuses a model whose contract this code cannot
honour, naming the field that differs. Every feature version this code knows is honoured: the daemon computes
the version the model was trained on.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import MISSING, dataclass, fields

from emostream.features.logmel import (
    BASELINE_PRIOR_LIMIT,
    DEFAULT_CONFIG,
    NORMALISATIONS,
    STATEFUL_BASE,
    LogMelConfig,
    usable_baseline_prior,
)

PREFIX = "emostream."


def graph_input_name(version: str | None = None) -> str:
    """A graph input's name: ``log_mel`` for a model of one input; ``log_mel_v3``, ``log_mel_v4`` … for a model of
    several, one per feature version (the daemon matches them by name)."""
    return "log_mel" if version is None else f"log_mel_v{version}"


class ContractError(ValueError):
    """A model whose contract is missing or differs from what this code computes."""


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


#: What each metadata field must decode to (JSON), so a corrupt file is a ``ContractError`` naming the field —
#: never a TypeError from deep inside the feature code, which a SIGHUP reload would not survive.
_FIELD_KINDS = {
    "labels": ("a list of class names", _strings),
    "sample_rate_hz": ("a positive integer", _count),
    "n_fft_samples": ("a positive integer", _count),
    "hop_samples": ("a positive integer", _count),
    "n_mels": ("a positive integer", _count),
    "window_frames": ("a positive integer", _count),
    "top_db": ("a number", _number),
    "normalisation": ("a string", lambda v: isinstance(v, str)),
    "feature_version": ("a feature version", lambda v: isinstance(v, str) or _count(v)),
    "run_id": ("a string", lambda v: isinstance(v, str)),
    "test_accuracy": ("a number or null", lambda v: v is None or _number(v)),
    "input_name": ("a string", lambda v: isinstance(v, str)),
    "output_name": ("a string", lambda v: isinstance(v, str)),
    "baseline_prior": ("a list of numbers", lambda v: isinstance(v, list) and all(_number(x) for x in v)),
    "input_versions": ("a list of feature versions", _strings),
}


@dataclass(frozen=True)
class ModelContract:
    labels: tuple[str, ...]
    sample_rate_hz: int
    n_fft_samples: int
    hop_samples: int
    n_mels: int
    window_frames: int
    top_db: float
    normalisation: str
    feature_version: str
    run_id: str = ""
    test_accuracy: float | None = None
    input_name: str = "log_mel"
    output_name: str = "probabilities"
    #: Feature version 4: where a stream's speaker baseline starts, (n_mels,) — the mean of the training speakers'
    #: baselines. Empty for versions without a baseline.
    baseline_prior: tuple[float, ...] = ()
    #: A model of more than one input: each graph input's feature version, in the graph's order — an ensemble of
    #: version 3 and version 4 members takes ("3", "4") under feature_version "4" (the stream computes version 3
    #: windows and the speaker baseline, and gives the model both). Empty: one input of feature_version.
    input_versions: tuple[str, ...] = ()

    @property
    def inputs(self) -> tuple[str, ...]:
        """The feature version of each graph input, in order."""
        return tuple(self.input_versions) or (str(self.feature_version),)

    @property
    def graph_inputs(self) -> list[str]:
        """The graph's input names, in the order of ``inputs``."""
        return [graph_input_name()] if len(self.inputs) == 1 else [graph_input_name(v) for v in self.inputs]

    @classmethod
    def for_features(cls, labels, config: LogMelConfig = DEFAULT_CONFIG, **extra) -> ModelContract:
        """The contract of a model trained on this code's features."""
        return cls(labels=tuple(labels), **config.to_dict(), normalisation=config.normalisation, **extra)

    def to_metadata(self) -> dict[str, str]:
        """Flat string key/values for ``onnx.ModelProto.metadata_props``."""
        return {PREFIX + f.name: json.dumps(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> ModelContract:
        missing = [f.name for f in fields(cls) if f.default is MISSING and PREFIX + f.name not in metadata]
        if missing:
            raise ContractError(f"model has no feature contract (missing {', '.join(PREFIX + m for m in missing)})")
        values = {}
        for f in fields(cls):
            if PREFIX + f.name in metadata:
                try:
                    values[f.name] = json.loads(metadata[PREFIX + f.name])
                except json.JSONDecodeError:
                    raise ContractError(f"contract field {f.name} is not valid JSON") from None
        for name, value in values.items():
            kind, accepts = _FIELD_KINDS[name]
            if not accepts(value):
                raise ContractError(f"contract field {name} is not {kind}: {json.dumps(value)[:80]}")
            if isinstance(value, list):
                values[name] = tuple(value)
        return cls(**values)

    def feature_config(self) -> LogMelConfig:
        """The features this model takes (raises ``ContractError`` for a feature version this code does not know)."""
        try:
            return LogMelConfig(
                sample_rate_hz=self.sample_rate_hz,
                n_fft_samples=self.n_fft_samples,
                hop_samples=self.hop_samples,
                n_mels=self.n_mels,
                window_frames=self.window_frames,
                top_db=self.top_db,
                feature_version=str(self.feature_version),
            )
        except ValueError as exc:
            raise ContractError(f"model contract feature_version={self.feature_version!r}: {exc}") from None

    def check_honoured_by(self, config: LogMelConfig = DEFAULT_CONFIG) -> None:
        """Raise ``ContractError`` naming the first field this code's features would get wrong.

        ``config`` holds the signal settings this code runs with; the feature version is the model's own, as
        long as this code knows it (``NORMALISATIONS``) and describes its normalisation in the same words.
        """
        if str(self.feature_version) not in NORMALISATIONS:
            raise ContractError(f"model contract feature_version={self.feature_version!r} but this code computes "
                                f"feature versions {', '.join(sorted(NORMALISATIONS))}")
        config = dataclasses.replace(config, feature_version=str(self.feature_version))
        ours = ModelContract.for_features(self.labels, config)
        for name in ("sample_rate_hz", "n_fft_samples", "hop_samples", "n_mels", "window_frames", "top_db",
                     "normalisation", "feature_version"):
            want, have = getattr(self, name), getattr(ours, name)
            if want != have:
                raise ContractError(f"model contract {name}={want!r} but this code computes {name}={have!r}")
        if config.needs_baseline and not usable_baseline_prior(self.baseline_prior, config.n_mels):
            raise ContractError(f"model contract feature_version={self.feature_version!r} needs baseline_prior: "
                                    f"{config.n_mels} finite numbers below {BASELINE_PRIOR_LIMIT:g} in magnitude "
                                    "(where a stream's speaker baseline starts)")
        if self.input_versions:
            allowed = {str(self.feature_version), STATEFUL_BASE.get(str(self.feature_version))} - {None}
            if len(self.input_versions) < 2 or len(set(self.input_versions)) != len(self.input_versions) or \
                    not set(self.input_versions) <= allowed:
                raise ContractError(f"model contract input_versions={list(self.input_versions)!r}: expected two or "
                                    f"more distinct versions among {sorted(allowed)} (feature_version "
                                    f"{self.feature_version!r} and the per-window version it builds on)")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ContractError(f"model contract labels {list(self.labels)!r} are not distinct class names")
