"""``StreamScorer``: one stream of audio → the daemon's messages, the same for the daemon, files and the API.

On top of ``EmotionPipeline`` (window scores) it tracks utterances — a run of classified windows ends
with one ``utterance`` message carrying their mean probabilities — and, when a finite stream ends,
flushes the resampler, closes the open utterance and scores a stream shorter than one window the way
evaluation scores a clip (``scoring.stream_windows``: embedded in a quiet noise floor, never padded in
the dB domain), flagged ``short``. ``summary()`` is the whole stream's result: the mean of every
classified window.
"""

from __future__ import annotations

import numpy as np

from emostream import messages as msg
from emostream.inference import scoring
from emostream.inference.pipeline import EmotionPipeline


class StreamScorer:
    """Feed (frames, channels) float32 at the pipeline's input rate; get score and utterance messages."""

    def __init__(self, pipeline: EmotionPipeline, seed: int = 0):
        self.pipeline = pipeline
        self.labels = list(pipeline.model.labels)
        self.seed = seed
        self.context = scoring.StreamContext(hop_frames=pipeline.stream.hop_frames,
                                             silence_dbfs=pipeline.config.silence_dbfs)
        self.tracker = scoring.UtteranceTracker()
        self.reset()

    def reset(self) -> None:
        self.pipeline.reset()
        self.tracker.reset()
        self.input_frames = 0
        self.windows = 0  # score messages sent
        self.utterances = 0  # utterance messages sent
        self.short = False  # the stream ended before one window was full; scored embedded
        self._sum: np.ndarray | None = None  # over classified windows, for the summary
        self._classified = 0

    @property
    def duration_s(self) -> float:
        return self.input_frames / self.pipeline.input_rate_hz

    def push(self, frames: np.ndarray) -> list[dict]:
        frames = np.asarray(frames, dtype=np.float32)
        self.input_frames += len(frames)
        return self._track(self.pipeline.process(frames, last=False))

    def finish(self) -> list[dict]:
        """The stream is over: what the resampler held back, the open utterance, a short stream's score."""
        out = self._track(self.pipeline.process(np.zeros((0, self.pipeline.input_channels), np.float32), last=True))
        out += self._utterance(self.tracker.finish())
        if self.pipeline.stream.windows_emitted == 0 and self.pipeline.stream.samples_seen > 0:
            out += self._short_clip(self.pipeline.stream.held_audio())
        return out

    def _short_clip(self, audio: np.ndarray) -> list[dict]:
        """Fewer samples than one window: lay them into the noise floor, as evaluation scores a clip."""
        from emostream.inference.logmel_stream import level_dbfs

        if level_dbfs(audio) < self.context.silence_dbfs:
            return []  # silence stays silence, however short
        features = self.pipeline.features
        _, voiced = scoring.stream_windows(audio, self.context, self.seed, features)
        p = self.pipeline.model.predict(np.stack([w.features for w in voiced])).mean(axis=0)
        self.short = True
        self._add(p, len(voiced))
        self.utterances += 1
        return [msg.utterance(start_s=0.0, end_s=audio.size / features.sample_rate_hz, windows=len(voiced),
                              labels=self.labels, p=p, short=True)]

    def _track(self, messages: list[dict]) -> list[dict]:
        out = []
        for m in messages:
            out.append(m)
            self.windows += 1
            p = None if m["probabilities"] is None else np.array([m["probabilities"][k] for k in self.labels])
            if p is not None:
                self._add(p, 1)
            out += self._utterance(self.tracker.push(m["start_s"], m["end_s"], p))
        return out

    def _add(self, p: np.ndarray, n: int) -> None:
        p = np.asarray(p, dtype=np.float64) * n
        self._sum = p if self._sum is None else self._sum + p
        self._classified += n

    def _utterance(self, finished) -> list[dict]:
        if finished is None:
            return []
        start_s, end_s, n, p = finished
        self.utterances += 1
        return [msg.utterance(start_s=start_s, end_s=end_s, windows=n, labels=self.labels, p=p)]

    def summary(self) -> dict:
        """The whole stream: mean probabilities over its classified windows (None when all was silence)."""
        p = None if self._sum is None else (self._sum / self._classified).astype(np.float32)
        top, top_p = msg.top_of(self.labels, p)
        return {"top": top, "top_p": top_p,
                "probabilities": None if p is None else msg.probabilities_dict(self.labels, p),
                "duration_s": round(self.duration_s, 6), "windows": self._classified, "short": self.short}

    def end_message(self, reason: str = "source ended") -> dict:
        return msg.end(windows=self.windows, utterances=self.utterances, duration_s=self.duration_s, reason=reason)
