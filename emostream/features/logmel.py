"""The one log-Mel window definition shared by training, export and streaming.

The reference recipe: ``librosa.load`` at 22050 Hz mono, ``melspectrogram`` (n_fft 2048, hop 512,
128 mels, centred frames with zero padding), ``power_to_db`` relative to the maximum, zero-pad or trim
to 100 frames, then standardise the window to zero mean and unit variance.

One deliberate detail keeps training and streaming identical: the frames are trimmed to the window
*before* ``power_to_db``, so the dB reference (the loudest bin) and the 80 dB floor are taken over
the 100 frames the model sees. A streaming window of 100 frames is then exactly
``compute_log_mel_spect`` of the same span of samples, with no clip-wide statistic it cannot know.

Nothing here imports TensorFlow: the daemon imports this module.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emostream.paths import why_not_a_file

#: Feature version 3 keeps only the mel bands a 16 kHz or wideband-telephone (G.722, AMR-WB: 50–7000 Hz) channel
#: carries; the bands above are held at the window's floor, so what is up there cannot move the model as long as
#: the window's loudest bin lies below the limit (speech: 0 of the sample's 53 windows peak above it). The dB
#: reference and the −80 dB floor stay those of version 1 (all bands), which is what lets cached version 1 windows
#: convert exactly. Part of version 3's definition: another limit is another version.
WIDEBAND_LIMIT_HZ = 7100.0

#: Every feature version this code computes, with its normalisation rule in words (both go into a model's
#: contract). A change to the numbers this module produces is a new version here, never an edit of an old one.
NORMALISATIONS = {
    "1": "power_to_db(ref=max over window, amin=1e-10, top_db=80); zero-pad; (x-mean)/std, std<1e-8 -> 1",
    "2": "power_to_db(ref=max over window, amin=1e-10, top_db=80); zero-pad; (x-mean)/std, std<1e-8 -> 1; "
         "subtract each mel band's mean over the window; (x-mean)/std, std<1e-8 -> 1",
    "3": "power_to_db(ref=max over window, amin=1e-10, top_db=80); zero-pad; (x-mean)/std, std<1e-8 -> 1; "
         f"mel bands whose upper edge is above {WIDEBAND_LIMIT_HZ:.0f} Hz set to the minimum of the other bands; "
         "(x-mean)/std, std<1e-8 -> 1",
}
#: Feature version 4 is version 3 heard relative to the speaker: each band minus the speaker's baseline (the band's
#: mean over the speaker's classified version 3 windows), then standardised again. The baseline is state a window
#: alone does not carry: the daemon keeps one per stream (``inference.baseline``), starting from the prior the model
#: carries in its contract with the weight of ``BASELINE_PRIOR_WINDOWS`` windows and remembering about the last
#: ``BASELINE_MEMORY_WINDOWS``, both counted at a hop of ``BASELINE_HOP_FRAMES`` frames (5.1 s and 61 s of classified
#: windows; a stream at another hop counts the same seconds); training and evaluation use the speaker's other clips.
#: The numbers are part of version 4's definition.
BASELINE_PRIOR_WINDOWS = 20
BASELINE_MEMORY_WINDOWS = 240
BASELINE_HOP_FRAMES = 11
#: A prior's numbers are means of standardised windows: far beyond this, a contract is corrupt (and float32 would
#: turn it into Inf).
BASELINE_PRIOR_LIMIT = 1e3
NORMALISATIONS["4"] = (NORMALISATIONS["3"] + "; minus the speaker baseline (each band's mean over the speaker's "
                       f"classified version 3 windows; a stream starts at the contract's prior weighted as "
                       f"{BASELINE_PRIOR_WINDOWS} windows and remembers {BASELINE_MEMORY_WINDOWS}, at a hop of "
                       f"{BASELINE_HOP_FRAMES} frames); (x-mean)/std, std<1e-8 -> 1")
#: Versions whose window depends on state beyond the window itself, and the per-window version they build on.
STATEFUL_BASE = {"4": "3"}


def windows_for_inputs(input_versions, per_window: np.ndarray, relative: np.ndarray | None) -> list[np.ndarray]:
    """The window arrays a model's inputs take, in the graph's order: the per-window version's windows for an input
    of a version a window alone determines, their baseline-relative twins for a stateful one. One stream gives both,
    so a model of version 3 and version 4 members (``ModelContract.input_versions``) hears each window both ways."""
    if relative is None and any(v in STATEFUL_BASE for v in input_versions):
        raise ValueError(f"inputs of feature versions {list(input_versions)} need the speaker baseline")
    return [relative if v in STATEFUL_BASE else per_window for v in input_versions]

#: The version of the default configuration (what the models of feature version 1 were trained on).
FEATURE_VERSION = "1"
NORMALISATION = NORMALISATIONS[FEATURE_VERSION]


@dataclass(frozen=True)
class LogMelConfig:
    """Feature settings of the reference recipe. Units are in the names."""

    sample_rate_hz: int = 22050
    n_fft_samples: int = 2048
    hop_samples: int = 512
    n_mels: int = 128
    window_frames: int = 100
    top_db: float = 80.0
    feature_version: str = FEATURE_VERSION

    def __post_init__(self):
        if self.feature_version not in NORMALISATIONS:
            raise ValueError(f"feature version {self.feature_version!r} is unknown to this code "
                             f"(it computes versions {', '.join(sorted(NORMALISATIONS))})")

    @property
    def normalisation(self) -> str:
        return NORMALISATIONS[self.feature_version]

    @property
    def needs_baseline(self) -> bool:
        """The window needs the speaker baseline (``relative_to_baseline``) on top of its per-window version."""
        return self.feature_version in STATEFUL_BASE

    def per_window(self) -> LogMelConfig:
        """This configuration at the version a window alone determines (version 4 → 3; the others unchanged)."""
        if not self.needs_baseline:
            return self
        return LogMelConfig(**{**self.to_dict(), "feature_version": STATEFUL_BASE[self.feature_version]})

    @property
    def window_samples(self) -> int:
        """Samples in a span that yields exactly ``window_frames`` centred frames (2.30 s)."""
        return (self.window_frames - 1) * self.hop_samples

    @property
    def window_s(self) -> float:
        return self.window_samples / self.sample_rate_hz

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_CONFIG = LogMelConfig()


class AudioDecodeError(ValueError):
    """Raised when a file cannot be decoded into audio samples."""


def load_audio(path: str | Path, config: LogMelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Decode ``path`` to float32 mono at ``config.sample_rate_hz`` exactly as the reference does.

    Raises ``AudioDecodeError`` with a one-line reason for missing, empty or undecodable files.
    """
    import librosa

    path = Path(path)
    if reason := why_not_a_file(path, "audio file"):
        raise AudioDecodeError(reason)
    if path.stat().st_size == 0:
        raise AudioDecodeError(f"{path}: file is empty")
    from emostream.decoder_noise import quiet_decoder_for

    try:
        with warnings.catch_warnings(), quiet_decoder_for(path):  # librosa warns before falling back to audioread
            warnings.simplefilter("ignore")
            y, _ = librosa.load(path, sr=config.sample_rate_hz, mono=True)
    except Exception as exc:  # librosa/soundfile/audioread raise many types
        raise AudioDecodeError(f"{path}: cannot decode audio ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if y.size == 0:
        raise AudioDecodeError(f"{path}: decoded to zero samples")
    if not np.all(np.isfinite(y)):
        raise AudioDecodeError(f"{path}: audio contains NaN or Inf samples")
    return y


@functools.lru_cache(maxsize=8)
def mel_filterbank(config: LogMelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """The (n_mels, 1 + n_fft/2) Slaney mel matrix that ``librosa.feature.melspectrogram`` uses."""
    import librosa

    basis = librosa.filters.mel(sr=config.sample_rate_hz, n_fft=config.n_fft_samples, n_mels=config.n_mels)
    basis.setflags(write=False)
    return basis


@functools.lru_cache(maxsize=8)
def mel_filterbank_sparse(config: LogMelConfig = DEFAULT_CONFIG):
    """The same matrix in CSR form: only ~1.5 % of it is non-zero, so per-hop products are ~3× cheaper."""
    import scipy.sparse

    return scipy.sparse.csr_matrix(mel_filterbank(config))


@functools.lru_cache(maxsize=8)
def analysis_window(config: LogMelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """The periodic Hann window librosa's STFT applies to each frame."""
    import scipy.signal

    window = scipy.signal.get_window("hann", config.n_fft_samples, fftbins=True).astype(np.float32)
    window.setflags(write=False)
    return window


def mel_power_of_frames(frames: np.ndarray, config: LogMelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Mel power of already-cut frames.

    ``frames``: (n_frames, n_fft_samples) float32 samples. Returns (n_mels, n_frames) float32, the
    same numbers ``librosa.feature.melspectrogram`` gives for those frames.
    """
    spectrum = np.fft.rfft(frames * analysis_window(config), axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    return np.asarray(mel_filterbank_sparse(config) @ power.T, dtype=np.float32)


def mel_power(y: np.ndarray, config: LogMelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Centred mel power spectrogram of a whole signal: (n_mels, 1 + len(y) // hop)."""
    import librosa

    return librosa.feature.melspectrogram(
        y=np.asarray(y, dtype=np.float32),
        sr=config.sample_rate_hz,
        n_fft=config.n_fft_samples,
        hop_length=config.hop_samples,
        n_mels=config.n_mels,
    )


def power_db(mel: np.ndarray) -> np.ndarray:
    """Mel power → dB relative to 1.0 with librosa's floor (amin 1e-10); no clipping yet."""
    import librosa

    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)


def standardise_db(db: np.ndarray, config: LogMelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """dB frames (n_mels, any) → the model's standardised (n_mels, window_frames) float32 window.

    Trim to ``window_frames``; shift so the loudest bin is 0 dB and floor at −``top_db`` (what
    ``power_to_db(ref=np.max, top_db=80)`` does); zero-pad short windows on the right in dB, as the
    reference does; then subtract the mean and divide by the standard deviation (1 if it is ~0).
    Feature version 2 then centres each mel band (``centre_bands``); version 3 holds the bands above 7.1 kHz at
    the floor (``hold_high_bands``).
    """
    db = db[:, : config.window_frames].astype(np.float32)
    db = db - db.max()
    db = np.maximum(db, -config.top_db)
    if db.shape[1] < config.window_frames:
        db = np.pad(db, ((0, 0), (0, config.window_frames - db.shape[1])))
    mean = db.mean()
    std = db.std()
    return from_version_1((db - mean) / (std if std > 1e-8 else 1.0), config)


def from_version_1(windows: np.ndarray, config: LogMelConfig = DEFAULT_CONFIG,
                   baseline: np.ndarray | None = None) -> np.ndarray:
    """Version 1 window(s) (…, n_mels, frames) → the window(s) of ``config.feature_version``, float32: every later
    version is a step on top of version 1, so cached version 1 windows serve every version exactly.

    Version 4 needs ``baseline``: (n_mels,) for all windows or (…, n_mels) one per window (``relative_to_baseline``).
    """
    x = np.asarray(windows, dtype=np.float32)
    if config.needs_baseline:
        if baseline is None:
            raise ValueError(f"feature version {config.feature_version} needs the speaker baseline")
        return relative_to_baseline(from_version_1(x, config.per_window()), baseline)
    if config.feature_version == "2":
        return centre_bands(x)
    if config.feature_version == "3":
        return hold_high_bands(x, kept_bands(config))
    return x


def kept_bands(config: LogMelConfig) -> int:
    """How many of the lowest mel bands carry signal in ``config``'s feature version (version 3 holds the rest at
    the floor; earlier versions keep all)."""
    if config.feature_version == "3":
        return bands_within(config, WIDEBAND_LIMIT_HZ)
    return config.n_mels


@functools.lru_cache(maxsize=8)
def bands_within(config: LogMelConfig, limit_hz: float) -> int:
    """How many of the lowest mel bands lie wholly below ``limit_hz`` (their filter's upper edge ≤ it)."""
    import librosa

    edges_hz = librosa.mel_frequencies(config.n_mels + 2, fmin=0.0, fmax=config.sample_rate_hz / 2)
    return int(np.sum(edges_hz[2:] <= limit_hz))


def hold_high_bands(windows: np.ndarray, n_kept: int) -> np.ndarray:
    """Version 1 window(s) (…, n_mels, frames) → version 3: the bands from ``n_kept`` up set to the minimum of
    the kept bands, then the window standardised again (std < 1e-8 → 1).

    A clip recorded at 16 kHz (most speech corpora, VoIP, headsets; the EmoDB copy here) has nothing above
    8 kHz, RAVDESS has; held at the floor, those bands look the same for both. Standardising is affine-invariant,
    so this of a version 1 window equals version 3 computed from the dB frames: cached v1 windows convert exactly.
    """
    x = np.array(windows, dtype=np.float32)
    floor = x[..., :n_kept, :].min(axis=(-2, -1), keepdims=True)
    x[..., n_kept:, :] = floor
    return unit_std(x - x.mean(axis=(-2, -1), keepdims=True))


def centre_bands(windows: np.ndarray) -> np.ndarray:
    """Feature version 1 window(s) (…, n_mels, frames) → version 2: each band minus its mean over the window's
    frames, then the window standardised again (std < 1e-8 → 1).

    A speaker's or a channel's long-term spectrum (timbre, microphone, room colouring) is a constant per band
    over a window; this removes it and keeps how each band moves. Standardising is affine-invariant, so this of
    a version 1 window equals version 2 computed from the dB frames: cached v1 windows convert exactly.
    """
    x = np.asarray(windows, dtype=np.float32)
    return unit_std(x - x.mean(axis=-1, keepdims=True))


def unit_std(x: np.ndarray) -> np.ndarray:
    """Zero-mean window(s) (…, n_mels, frames) divided by each window's standard deviation (std < 1e-8 → 1),
    float32: the last step of every version after 1."""
    std = x.std(axis=(-2, -1), keepdims=True)
    return (x / np.where(std > 1e-8, std, 1.0)).astype(np.float32)


def usable_baseline_prior(prior, n_mels: int | None = None) -> bool:
    """``prior`` can start a stream's speaker baseline: a non-empty sequence (of ``n_mels``, when given) of finite
    numbers below ``BASELINE_PRIOR_LIMIT`` in magnitude. The one check the contract, export and the daemon share."""
    if not isinstance(prior, (list, tuple, np.ndarray)) or len(prior) == 0:
        return False
    if n_mels is not None and len(prior) != n_mels:
        return False
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
               and math.isfinite(v) and abs(v) < BASELINE_PRIOR_LIMIT for v in prior)


def band_profile(windows: np.ndarray) -> np.ndarray:
    """Window(s) (…, n_mels, frames) → each band's mean over the frames (…, n_mels), float64: what a speaker
    baseline averages (a speaker's baseline is the mean profile of their windows)."""
    return np.asarray(windows, dtype=np.float64).mean(axis=-1)


def relative_to_baseline(windows: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Per-window-version window(s) (…, n_mels, frames) minus ``baseline`` ((n_mels,) or (…, n_mels)) in every
    frame, then each window standardised again (std < 1e-8 → 1): feature version 4.

    The speaker's long-term spectrum (timbre, microphone, room) is subtracted, and unlike version 2 what the
    emotion does to the spectrum for the length of a window is kept: angry speech is brighter than this
    speaker's usual, not brighter than RAVDESS's actors.
    """
    x = np.asarray(windows, dtype=np.float32) - np.asarray(baseline, dtype=np.float32)[..., np.newaxis]
    return unit_std(x - x.mean(axis=(-2, -1), keepdims=True))


def normalise_window(mel: np.ndarray, config: LogMelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Mel power (n_mels, any frames) → the model's window: ``standardise_db(power_db(...))``."""
    return standardise_db(power_db(mel[:, : config.window_frames]), config)


def compute_log_mel_spect(audio: np.ndarray | str | Path, config: LogMelConfig = DEFAULT_CONFIG) -> np.ndarray:
    """The model's input window for a clip or a span of samples: (n_mels, window_frames) float32.

    ``audio`` is a path (decoded with ``load_audio``) or float samples already at
    ``config.sample_rate_hz``. Only the first ``window_frames`` frames are used.
    """
    y = load_audio(audio, config) if isinstance(audio, (str, Path)) else np.asarray(audio, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got {y.shape}")
    if y.size == 0:
        raise ValueError("cannot compute features of zero samples")
    # Frames past the window are never used: cut the signal so they are never computed.
    y = y[: config.window_samples + config.n_fft_samples // 2]
    return normalise_window(mel_power(y, config), config)
