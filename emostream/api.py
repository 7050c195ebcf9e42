"""The public API: ``EmotionRecognizer`` and ``score_file``, re-exported by ``emostream``.

Audio goes in at any rate and channel count (mixed down and resampled by the daemon's own pipeline);
plain results come out:

- ``predict(samples, sample_rate_hz)`` — one clip → ``ClipScore``: the mean over the windows the daemon
  would produce while the clip streams past inside a quiet noise floor (the evaluation's clip score; silence,
  which evaluation still scores, has no emotion here).
- ``stream(sample_rate_hz, channels)`` — chunks in, ``WindowScore``s out as windows complete (the
  daemon's scores, utterances on the side); ``iter_scores(chunks, ...)`` is the same as a generator.
- ``score_file(path)`` — a file streamed through the daemon's path → ``FileScores``: the window timeline,
  the utterances (speech segments, averaged) and a whole-file summary.

A clip shorter than one 2.3 s window is scored too (laid into the noise floor) and flagged ``short``, if it
passes the gates: the level gate, and the voice gate when one is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emostream.features import AudioDecodeError
from emostream.inference import scoring
from emostream.inference.model import THREADS_RANGE, EmotionModel, InferenceConfig
from emostream.inference.pipeline import INPUT_CHANNELS_RANGE, EmotionPipeline, PipelineConfig
from emostream.inference.vad import VadConfig
from emostream.options import check_range
from emostream.paths import DEFAULT_MODEL_PATH, why_not_a_file
from emostream.wav_header import cut_short

logger = logging.getLogger(__name__)

#: Frames read per block from a file: the daemon's ``--fast`` file source reads the same.
FILE_BLOCK_FRAMES = 8192


@dataclass(frozen=True)
class WindowScore:
    """One 2.3 s window of the stream. ``speech`` says whether it was classified: False for a silent window
    and, with the voice gate on, for a loud one without speech; ``probabilities`` and ``top`` are None then."""

    seq: int
    start_s: float
    end_s: float
    level_dbfs: float
    silence: bool
    probabilities: dict[str, float] | None
    top: str | None
    top_p: float | None
    speech: bool

    @classmethod
    def from_message(cls, m: dict) -> WindowScore:
        return cls(m["seq"], m["start_s"], m["end_s"], m["level_dbfs"], m["silence"], m["probabilities"],
                   m["top"], m["top_p"], m["speech"])


@dataclass(frozen=True)
class Utterance:
    """A run of classified windows (speech between silences), with their mean probabilities."""

    start_s: float
    end_s: float
    windows: int
    probabilities: dict[str, float]
    top: str
    top_p: float
    short: bool = False  # the whole input was shorter than one window and was scored inside a noise floor

    @classmethod
    def from_message(cls, m: dict) -> Utterance:
        return cls(m["start_s"], m["end_s"], m["windows"], m["probabilities"], m["top"], m["top_p"],
                   m.get("short", False))


@dataclass(frozen=True)
class ClipScore:
    """A whole clip or file: mean probabilities over its classified windows (None if all was silence)."""

    top: str | None
    top_p: float | None
    probabilities: dict[str, float] | None
    duration_s: float
    windows: int  # windows averaged
    short: bool  # shorter than one window: scored inside a noise floor


@dataclass(frozen=True)
class FileScores:
    path: str
    windows: list[WindowScore]
    utterances: list[Utterance]
    summary: ClipScore

    def to_dict(self) -> dict:
        return asdict(self)


def float_samples(samples) -> np.ndarray:
    """Samples as float32 at full scale 1: integer PCM (int16 from ``scipy.io.wavfile``, int32, unsigned 8-bit WAV)
    scaled from its own full scale, as the daemon's ``--stdin s16le`` is; read as floats, int16 would sit 90 dB too
    loud and be clipped to noise."""
    x = np.asarray(samples)
    if x.dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    if x.dtype.kind not in "iu" or x.dtype.itemsize > 4:  # int64: most often a list of Python ints, of no scale
        raise ValueError(f"expected float samples (full scale 1) or int8/int16/int32/uint8/uint16 PCM, got dtype "
                         f"{x.dtype} (e.g. np.asarray(samples, dtype=np.int16))")
    full_scale = np.float32(2 ** (8 * x.dtype.itemsize - 1))
    centred = x.astype(np.float32) - (full_scale if x.dtype.kind == "u" else np.float32(0))
    return centred / full_scale


class EmotionStream:
    """Chunks of (frames,) or (frames, channels) samples in (float at full scale 1, or integer PCM); window scores
    out as windows complete.

    ``utterances`` collects the utterance results met so far; ``finish()`` ends the stream (flushes the
    resampler, closes the open utterance, scores a stream shorter than one window) and returns the
    last windows; ``summary()`` is the whole stream's ``ClipScore``.
    """

    def __init__(self, pipeline: EmotionPipeline):
        self.pipeline = pipeline
        self.utterances: list[Utterance] = []
        self.messages: list[dict] = []  # every message, as the daemon would send them
        self.finished = False

    def _check_open(self, what: str) -> None:
        if self.finished:
            raise ValueError(f"{what} after finish(): this stream has ended; start another with stream()")

    def _split(self, messages: list[dict]) -> list[WindowScore]:
        self.messages += messages
        self.utterances += [Utterance.from_message(m) for m in messages if m["type"] == "utterance"]
        return [WindowScore.from_message(m) for m in messages if m["type"] == "scores"]

    def push(self, chunk) -> list[WindowScore]:
        self._check_open("push()")
        x = float_samples(chunk)
        if x.ndim == 1:
            x = x[:, np.newaxis]
        channels = self.pipeline.input_channels
        if x.ndim != 2 or x.shape[1] != channels:
            expected = "(frames,) or (frames, 1)" if channels == 1 else f"(frames, {channels})"
            raise ValueError(f"this stream has {channels} channel{'s' if channels > 1 else ''}: expected {expected} "
                             f"samples, got shape {np.shape(chunk)}")
        return self._split(self.pipeline.process(x))

    def finish(self) -> list[WindowScore]:
        self._check_open("finish()")
        self.finished = True
        return self._split(self.pipeline.finish())

    def summary(self) -> ClipScore:
        return ClipScore(**self.pipeline.summary())


class EmotionRecognizer:
    """The bundled model (or the ONNX file ``model``) with the daemon's settings; units in the argument names.

    ``hop_s``: seconds between windows (rounded to whole STFT hops, at least one; 0..10); ``smoothing``: share of
    the previous window's scores kept (EMA, 0 ≤ s < 1; window scores only — utterances and summaries average
    the raw scores); ``silence_dbfs``: windows quieter than this (−200..0) are silence, not classified; ``vad``:
    the daemon's voice gate for ``stream``/``iter_scores``/``score_file`` (``VadConfig()`` is the daemon's
    default; None, the default here, keeps the level gate alone — ``predict`` always does, as evaluation).
    ``classes``: report only these of the model's classes, renormalised (e.g. ``["angry", "happy", "neutral",
    "sad"]``; ``pipeline.restrict``). The ranges are the daemon's (``emostream.inference.pipeline``); the input
    may be 1000..384000 Hz and 1..64 channels.

    >>> rec = EmotionRecognizer()
    >>> rec.predict(samples, sample_rate_hz=16000).top  # doctest: +SKIP
    'neutral'
    """

    def __init__(self, model: str | Path | None = None, hop_s: float = PipelineConfig.hop_s,
                 smoothing: float = PipelineConfig.smoothing, silence_dbfs: float = PipelineConfig.silence_dbfs,
                 threads: int = 1, vad: VadConfig | None = None, classes: Iterable[str] | None = None):
        self.config = PipelineConfig(hop_s=hop_s, smoothing=smoothing, silence_dbfs=silence_dbfs, vad=vad,
                                     classes=classes)  # checks ranges
        check_range("threads", threads, *THREADS_RANGE)
        self.model = EmotionModel(DEFAULT_MODEL_PATH if model is None else model,
                                  InferenceConfig(intra_op_threads=threads))
        self.sample_rate_hz: int = self.model.contract.sample_rate_hz  # the model's; any input rate is accepted
        # settings the model cannot honour fail here, not on the first file
        self.labels: list[str] = self._pipeline(self.sample_rate_hz, 1).labels  # classes= kept, or every one

    def _pipeline(self, sample_rate_hz: int, channels: int, config: PipelineConfig | None = None) -> EmotionPipeline:
        return EmotionPipeline(self.model, config or self.config, sample_rate_hz, channels)

    def stream(self, sample_rate_hz: int, channels: int = 1) -> EmotionStream:
        """A live stream: ``push`` chunks of any size; each call returns the windows they completed."""
        return EmotionStream(self._pipeline(sample_rate_hz, channels))

    def iter_scores(self, chunks: Iterable, sample_rate_hz: int, channels: int = 1) -> Iterator[WindowScore]:
        """Yield window scores while consuming ``chunks``; the stream is finished when they run out."""
        s = self.stream(sample_rate_hz, channels)
        for chunk in chunks:
            yield from s.push(chunk)
        yield from s.finish()

    def predict(self, samples, sample_rate_hz: int) -> ClipScore:
        """One clip, (frames,) or (frames, channels) at ``sample_rate_hz`` → its mean probabilities.

        The clip is mixed down and resampled as the daemon does, laid into a quiet noise floor and read by
        the daemon's sliding windows; windows under the silence gate are left out. A clip the gate hears as
        silence (every window under it; a short clip quieter than it, as the daemon judges one) has no emotion:
        ``top``, ``top_p`` and ``probabilities`` are None, ``windows`` is 0, and ``short`` is False: as in
        ``score_file`` and the daemon, ``short`` flags a clip scored inside a noise floor, not one left unscored.
        """
        x = float_samples(samples)
        if x.ndim not in (1, 2) or x.shape[0] == 0:
            raise ValueError(f"expected (frames,) or (frames, channels) samples, got shape {x.shape}")
        if x.ndim == 2 and x.shape[1] > INPUT_CHANNELS_RANGE[1] >= x.shape[0]:
            raise ValueError(f"expected (frames, channels) samples, got shape {x.shape}: for a (channels, frames) "
                             "array pass its transpose (samples.T)")
        level_only = dataclasses.replace(self.config, vad=None)  # evaluation's clip score: no detector to build
        pipeline = self._pipeline(sample_rate_hz, 1 if x.ndim == 1 else x.shape[1], level_only)
        mono = pipeline.to_model_rate(x, last=True)
        windows, voiced = scoring.stream_windows(mono, pipeline.context, 0, pipeline.features)
        short = scoring.is_short(mono.size, pipeline.features)
        duration_s = round(x.shape[0] / sample_rate_hz, 6)
        if not scoring.level_gate_hears(mono, windows, pipeline.context, pipeline.features):
            return ClipScore(top=None, top_p=None, probabilities=None, duration_s=duration_s, windows=0, short=False)
        model = self.model
        p = pipeline.report(model.predict(pipeline.model_input(voiced, model)).mean(axis=0))  # v4: from the prior
        top = int(np.argmax(p))
        return ClipScore(top=self.labels[top], top_p=float(p[top]),
                         probabilities={k: float(v) for k, v in zip(self.labels, p, strict=True)},
                         duration_s=duration_s, windows=len(voiced), short=short)

    def score_file(self, path: str | Path) -> FileScores:
        """Stream a file (any format soundfile reads) through the daemon's path; see ``FileScores``."""
        import soundfile as sf

        from emostream.decoder_noise import open_quietly

        path = Path(path)
        if reason := why_not_a_file(path, "audio file"):
            raise AudioDecodeError(reason)
        decode_errors = (sf.LibsndfileError, RuntimeError, TypeError)  # soundfile's; not the pipeline's

        def unreadable(exc: Exception) -> AudioDecodeError:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return AudioDecodeError(f"cannot read audio file {path}: {reason}")

        with contextlib.ExitStack() as opened:  # MP3: the decoder's stderr chatter kept off the terminal
            try:
                f = opened.enter_context(open_quietly(path))
            except decode_errors as exc:
                raise unreadable(exc) from None
            try:
                s = self.stream(f.samplerate, f.channels)
            except ValueError as exc:  # a header of 1 Hz or 2^30 Hz, or 1000 channels
                raise AudioDecodeError(f"cannot score audio file {path}: {exc}") from None
            s.pipeline.input_name, s.pipeline.counted_in = str(path), None  # warnings name the file
            if warning := cut_short(path, f.samplerate):
                logger.warning("%s", warning)
            blocks, windows = f.blocks(FILE_BLOCK_FRAMES, dtype="float32", always_2d=True), []
            while True:  # only the reads are decode errors; the pipeline's own errors propagate as they are
                try:
                    block = next(blocks)
                except StopIteration:
                    break
                except decode_errors as exc:
                    raise unreadable(exc) from None
                windows += s.push(block)
        if s.pipeline.input_frames == 0:
            raise AudioDecodeError(f"audio file {path} holds no samples")
        windows += s.finish()
        return FileScores(str(path), windows, s.utterances, s.summary())


_default: EmotionRecognizer | None = None


def score_file(path: str | Path) -> FileScores:
    """``EmotionRecognizer().score_file(path)`` with one bundled-model recogniser kept for later calls."""
    global _default
    if _default is None:
        _default = EmotionRecognizer()
    return _default.score_file(path)
