"""From raw source frames to score messages: mix down → resample → log-Mel windows → model → gate/smooth.

``EmotionPipeline`` is plain and synchronous: the public API, file scoring and tests call it directly;
the daemon's ``AnalysisWorker`` (``emostream.stream.worker``) runs it on its own thread. Besides one
``scores`` message per window it says ``utterance`` when a run of classified windows ends (the mean of
their raw, unsmoothed probabilities), and ``finish()`` ends a finite stream: the resampler's tail, the
open utterance, and a stream shorter than one window scored as evaluation scores a clip (laid into a
quiet noise floor, ``scoring.stream_windows``) and flagged ``short``. ``summary()`` is the whole stream.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from emostream import messages as msg
from emostream.features import windows_for_inputs
from emostream.inference import scoring
from emostream.inference.baseline import StreamBaseline
from emostream.inference.logmel_stream import LogMelStream
from emostream.inference.model import EmotionModel
from emostream.inference.vad import VadConfig, VoiceActivity
from emostream.options import check_range

logger = logging.getLogger(__name__)

MAX_SAMPLE = 64.0  # +36 dBFS: beyond this a sample is garbage, not loud audio (1.0 is full scale)

# The one range of each streaming setting, (low, high) inclusive unless said: PipelineConfig and EmotionPipeline
# check them; the daemon's and emostream-score's flags, the Python API and /listen (whose operator limits must lie
# inside) take them from here.
HOP_RANGE_S = (0.0, 10.0)  # 0: every STFT hop (23 ms); --hop 1e9 once tried to allocate 20 TiB
SMOOTHING_RANGE = (0.0, 1.0)  # the upper bound open: 1 would keep the first window's scores for ever
SILENCE_RANGE_DBFS = (-200.0, 0.0)
INPUT_RATE_RANGE_HZ = (1000, 384_000)  # a WAV header of 2^30 Hz once asked for a 40 GiB ring buffer
INPUT_CHANNELS_RANGE = (1, 64)


@dataclass(frozen=True)
class PipelineConfig:
    """Streaming settings. The hop is rounded to whole STFT hops (512 samples at 22050 Hz)."""

    hop_s: float = 0.25
    smoothing: float = 0.0  # share of the previous smoothed scores kept per window (EMA); 0 = off
    silence_dbfs: float = -50.0  # windows quieter than this (RMS, dBFS) are marked silence, not classified
    # Voice-activity gate: loud windows without speech are sent with "speech": false and no label. The
    # daemon turns it on by default (--no-vad to drop it); None here keeps the level gate alone.
    vad: VadConfig | None = None
    # Report only these of the model's classes (two or more), renormalised: ``restrict``. None: every class.
    classes: tuple[str, ...] | None = None

    def __post_init__(self):
        check_range("hop_s", self.hop_s, *HOP_RANGE_S)
        check_range("smoothing", self.smoothing, *SMOOTHING_RANGE, high_open=True)
        check_range("silence_dbfs", self.silence_dbfs, *SILENCE_RANGE_DBFS)  # NaN here once reached the hello
        if self.vad is not None and not isinstance(self.vad, VadConfig):
            raise ValueError(f"vad must be a VadConfig or None, got {self.vad!r}")
        if self.classes is not None:
            object.__setattr__(self, "classes", checked_classes(self.classes))

    def hop_frames(self, sample_rate_hz: int, stft_hop_samples: int) -> int:
        return max(1, round(self.hop_s * sample_rate_hz / stft_hop_samples))


def checked_classes(classes) -> tuple[str, ...]:
    """``classes`` as a tuple of two or more distinct, non-empty names; ``ValueError`` (one line) otherwise."""
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
        raise ValueError(f"classes must be a list of class names, got {classes!r:.60}")
    names = tuple(classes)
    if not all(isinstance(c, str) and c for c in names):
        raise ValueError(f"classes must be class names, got {list(names)!r:.60}")
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise ValueError(f"classes must name each class once, got {', '.join(map(repr, repeated))} more than once")
    if len(names) < 2:
        raise ValueError(f"classes must name at least two distinct classes, got {list(names)!r:.80}")
    return names


def class_columns(labels: list[str], classes: tuple[str, ...] | None) -> np.ndarray | None:
    """The columns of ``labels`` (the model's, in its order) that ``classes`` keeps; None keeps every one."""
    if classes is None:
        return None
    unknown = [c for c in classes if c not in labels]
    if unknown:
        raise ValueError(f"classes {unknown!r:.80} are not classes of this model ({', '.join(labels)})")
    return np.array(sorted(labels.index(c) for c in classes))


def restrict(p: np.ndarray, columns: np.ndarray | None) -> np.ndarray:
    """Probabilities over every class, (n, k) or (k,) → over ``columns``, renormalised to sum to 1.

    Applied last, after any mean over windows, so an utterance's or a clip's answer is the argmax over the kept
    classes of the mean over all of them — what evaluation's 4-class and shared-class views score. A row whose
    kept mass is zero (float32 underflow: the model sure of a class left out) becomes uniform, never 0/0; a row
    holding NaN stays NaN, so the messages send it as null like any non-finite score."""
    if columns is None:
        return p
    kept = np.asarray(p, dtype=np.float64)[..., columns]
    total = kept.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, kept / total, np.where(np.isnan(total), np.nan, 1.0 / len(columns)))
    return out.astype(np.float32)


def parse_classes(text: str) -> tuple[str, ...]:
    """``--classes angry,happy,neutral,sad`` → a tuple of names (an argparse ``type=``; the pipeline checks them
    against the model)."""
    try:
        return checked_classes([n.strip() for n in text.split(",") if n.strip()])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (two or more names separated by commas)") from None


def add_classes_argument(parser) -> None:
    """The one ``--classes`` flag of the daemon and ``emostream-score``."""
    parser.add_argument("--classes", type=parse_classes, metavar="A,B,...",
                        help="report only these classes, renormalised (e.g. angry,happy,neutral,sad); "
                             "default: every class of the model")


def check_input(sample_rate_hz, channels) -> tuple[int, int]:
    """The input's rate (Hz) and channel count as ints; ``ValueError`` (one line) unless whole numbers in range."""
    checked = []
    for name, value, bounds in (("sample_rate_hz", sample_rate_hz, INPUT_RATE_RANGE_HZ),
                                ("channels", channels, INPUT_CHANNELS_RANGE)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        check_range(name, int(value), *bounds)
        checked.append(int(value))
    return checked[0], checked[1]


class EmotionPipeline:
    """Feed (frames, channels) float32 at ``input_rate_hz``; get one score message (dict) per window."""

    def __init__(self, model: EmotionModel, config: PipelineConfig, input_rate_hz: int, input_channels: int = 1):
        input_rate_hz, input_channels = check_input(input_rate_hz, input_channels)
        self.model, self.config = model, config
        self.columns = class_columns(model.labels, config.classes)  # reload keeps the labels, so these hold
        #: what the messages hold: the model's classes, or those ``config.classes`` kept (in the model's order)
        self.labels = list(model.labels) if self.columns is None else [model.labels[i] for i in self.columns]
        self.features = model.contract.feature_config()
        self.input_rate_hz, self.input_channels = input_rate_hz, input_channels
        self.stream = LogMelStream(self.features.per_window(), config.hop_frames(self.features.sample_rate_hz,
                                                                                  self.features.hop_samples))
        # Feature version 4: each classified window relative to the stream's speaker baseline (reset with the stream).
        self.baseline = (StreamBaseline(model.contract.baseline_prior, self.stream.hop_frames)
                         if self.features.needs_baseline else None)
        # How a stream shorter than one window is scored: evaluation's clip scoring with this hop and gate.
        self.context = scoring.StreamContext(hop_frames=self.stream.hop_frames, silence_dbfs=config.silence_dbfs)
        self.tracker = scoring.UtteranceTracker()
        self.hop_s = self.stream.hop_samples / self.features.sample_rate_hz
        self.nonfinite_samples = 0
        self.clipped_samples = 0
        # How warnings about the samples name the input, and where its counts can be read (file scoring: the path)
        self.input_name, self.counted_in = "input", "/healthz"
        if config.vad is not None and config.vad.min_speech_s > self.features.window_s:
            raise ValueError(f"the voice gate's min_speech_s ({config.vad.min_speech_s} s) is longer than a "
                             f"window ({self.features.window_s:.2f} s): no window could ever be classified")
        self.vad = None if config.vad is None else VoiceActivity(config.vad, self.features.sample_rate_hz)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next frame pushed starts a new one (counters and utterances included)."""
        self.stream.reset()
        self.tracker.reset()
        if self.baseline is not None:
            self.baseline.reset()
        self.input_frames = 0
        self.utterances_out = 0
        self.short = False  # the stream ended before one window was full and was scored embedded
        self.short_skipped: str | None = None  # why such a stream was not scored (the level or the voice gate)
        self._sum: np.ndarray | None = None  # raw probabilities of every classified window, for summary()
        self._classified = 0
        self._resampler = None
        if self.input_rate_hz != self.features.sample_rate_hz:
            import soxr

            self._resampler = soxr.ResampleStream(self.input_rate_hz, self.features.sample_rate_hz, 1,
                                                  dtype="float32", quality="HQ")
        self._smoothed = None
        self.windows_out = 0
        if self.vad is not None:
            self.vad.reset()

    def warm_up(self) -> None:
        """Run one silent window through features and model, then forget it: the first real window
        must not pay for lazy set-up (filterbank, allocator, onnxruntime's first run)."""
        n = self.features.window_samples
        self.stream.push(np.zeros(n, np.float32) + 1e-3 * np.sin(np.arange(n, dtype=np.float32)))
        silent = np.zeros((1, self.features.n_mels, self.features.window_frames), np.float32)
        self.model.predict([silent] * len(self.model.input_versions))
        self.reset()

    def _counted(self) -> str:
        return f" (counted in {self.counted_in})" if self.counted_in else ""

    def to_model_rate(self, frames: np.ndarray, last: bool = False) -> np.ndarray:
        """Mono float32 at the model's rate; NaN/Inf samples become 0 and are counted."""
        frames = np.asarray(frames, dtype=np.float32)
        self.input_frames += len(frames)
        mono = frames.mean(axis=1) if frames.ndim == 2 and frames.shape[1] > 1 else frames.reshape(-1)
        bad = ~np.isfinite(mono)
        if bad.any():
            if not self.nonfinite_samples:
                logger.warning("%s holds NaN/Inf samples: replaced by 0%s", self.input_name, self._counted())
            self.nonfinite_samples += int(bad.sum())
            mono = np.where(bad, 0.0, mono).astype(np.float32)
        loud = np.abs(mono) > MAX_SAMPLE
        if loud.any():  # e.g. f32le garbage of 1e30: its power would overflow float32 into Inf/NaN scores
            if not self.clipped_samples:
                logger.warning("%s holds samples beyond ±%g (full scale is 1): clipped%s", self.input_name,
                               MAX_SAMPLE, self._counted())
            self.clipped_samples += int(loud.sum())
            mono = np.clip(mono, -MAX_SAMPLE, MAX_SAMPLE)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last)
        return mono

    def report(self, p: np.ndarray) -> np.ndarray:
        """Probabilities over the model's classes → over ``labels`` (``restrict``)."""
        return restrict(p, self.columns)

    @property
    def duration_s(self) -> float:
        """Input received so far, in seconds at the input rate."""
        return self.input_frames / self.input_rate_hz

    def process(self, frames: np.ndarray, last: bool = False) -> list[dict]:
        """Score messages for the windows these frames complete, each followed by an utterance message
        where it ends a run of classified windows. ``last`` flushes the resampler (``finish`` does more)."""
        ready_time = time.time()  # the samples completing these windows are in hand from here on
        started = time.perf_counter()
        mono = self.to_model_rate(frames, last)
        windows = self.stream.push(mono)
        if self.vad is not None:
            self.vad.push(mono, last)
        if not windows:
            return []
        features_ms = (time.perf_counter() - started) * 1e3 / len(windows)
        sr = self.features.sample_rate_hz
        loud = [w for w in windows if w.level_dbfs >= self.config.silence_dbfs]
        voiced = loud if self.vad is None else [w for w in loud if self.vad.is_speech(w.start_sample, w.end_sample)]
        inference_ms = 0.0
        scores = {}
        if voiced:
            started = time.perf_counter()
            model = self.model  # read once: a reload swaps it between windows, never inside one
            probabilities = model.predict(self.model_input(voiced, model))
            inference_ms = (time.perf_counter() - started) * 1e3 / len(voiced)
            scores = {w.index: p for w, p in zip(voiced, probabilities, strict=True)}
        messages = []
        for w in windows:
            p = scores.get(w.index)
            if p is not None and self.config.smoothing > 0:
                s = self.config.smoothing
                self._smoothed = p if self._smoothed is None else s * self._smoothed + (1 - s) * p
                p = self._smoothed
            messages.append(msg.scores(seq=w.index, start_s=w.start_sample / sr, end_s=w.end_sample / sr,
                                       ready_time=ready_time, level_dbfs=w.level_dbfs, labels=self.labels,
                                       p=None if p is None else self.report(p), features_ms=features_ms,
                                       inference_ms=inference_ms,
                                       silence=w.level_dbfs < self.config.silence_dbfs))
        self.windows_out += len(messages)
        return self._with_utterances(messages, scores)

    def _with_utterances(self, messages: list[dict], raw: dict[int, np.ndarray]) -> list[dict]:
        """Each score message, followed by an utterance message where it ends a run of classified windows.
        ``raw``: the unsmoothed probabilities over every class of the model, by window index (classified windows
        only); the means are taken over them and restricted to the reported classes last."""
        out = []
        for m in messages:
            out.append(m)
            p = raw.get(m["seq"])
            if p is not None:
                self._add(p, 1)
            out += self._utterance(self.tracker.push(m["start_s"], m["end_s"], p))
        return out

    def finish(self) -> list[dict]:
        """The stream is over: what the resampler held back, the open utterance, a short stream's score."""
        out = self.process(np.zeros((0, self.input_channels), np.float32), last=True)
        out += self._utterance(self.tracker.finish())
        if self.stream.windows_emitted == 0 and self.stream.samples_seen > 0:
            out += self._short_clip(self.stream.held_audio())
        return out

    def _short_clip(self, audio: np.ndarray) -> list[dict]:
        """Fewer samples than one window: laid into the noise floor and scored as evaluation scores a clip."""
        if not scoring.level_gate_hears(audio, [], self.context, self.features):  # short: its own level
            self.short_skipped = "quieter than the level gate"  # silence stays silence, however short
            return []
        if self.vad is not None and not self.vad.is_speech(0, audio.size):
            self.short_skipped = "no speech in it (voice gate)"  # the gate holds for short streams too
            return []
        _, voiced = scoring.stream_windows(audio, self.context, 0, self.features)
        model = self.model
        p = model.predict(self.model_input(voiced, model)).mean(axis=0)
        self.short = True
        self._add(p, len(voiced))
        self.utterances_out += 1
        return [msg.utterance(start_s=0.0, end_s=audio.size / self.features.sample_rate_hz, windows=len(voiced),
                              labels=self.labels, p=self.report(p), short=True)]

    def model_input(self, windows: list, model: EmotionModel | None = None):
        """Classified windows, in stream order → what ``model`` (default: the pipeline's) takes: (n, n_mels, frames)
        of its feature version, one such array per input for a model of several (version 3 and version 4 members).
        Callers pass the model they will run, read once, so a reload between the two cannot mismatch them."""
        x = np.stack([w.features for w in windows])
        if self.baseline is None:
            return x
        inputs = windows_for_inputs((model or self.model).input_versions, x, self.baseline.relative(x))
        return inputs[0] if len(inputs) == 1 else inputs

    def _add(self, p: np.ndarray, n: int) -> None:
        weighted = np.asarray(p, dtype=np.float64) * n
        self._sum = weighted if self._sum is None else self._sum + weighted
        self._classified += n

    def _utterance(self, finished) -> list[dict]:
        if finished is None:
            return []
        start_s, end_s, n, p = finished
        self.utterances_out += 1
        return [msg.utterance(start_s=start_s, end_s=end_s, windows=n, labels=self.labels, p=self.report(p))]

    def summary(self) -> dict:
        """The whole stream: mean raw probabilities of its classified windows (None when all was silence)."""
        p = None if self._sum is None else self.report((self._sum / self._classified).astype(np.float32))
        top, top_p = msg.top_of(self.labels, p)
        return {"top": top, "top_p": top_p,
                "probabilities": None if p is None else msg.probabilities_dict(self.labels, p),
                "duration_s": round(self.duration_s, 6), "windows": self._classified, "short": self.short}

    def end_message(self, reason: str = "source ended") -> dict:
        return msg.end(windows=self.windows_out, utterances=self.utterances_out, duration_s=self.duration_s,
                       reason=reason)
