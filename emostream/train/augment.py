"""Waveform augmentations that mimic other voices, rooms and microphones. Pure functions of (samples, rng).

Gain alone is not among them: every window is standardised and referenced to its loudest bin, so a
gain change leaves the features unchanged (apart from the 80 dB floor).
"""

from __future__ import annotations

import numpy as np

from emostream.features import DEFAULT_CONFIG
from emostream.inference.scoring import noise_floor

SR = 22050


def add_noise(y: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float] = (5.0, 25.0)) -> np.ndarray:
    """White, pink or brown noise at a random SNR (dB, relative to the clip's mean power)."""
    noise = rng.standard_normal(y.size).astype(np.float32)
    colour = rng.integers(3)
    if colour:  # pink (1/f) or brown (1/f²) through spectral shaping
        spectrum = np.fft.rfft(noise)
        f = np.maximum(np.fft.rfftfreq(y.size), 1.0 / y.size)
        spectrum /= f ** (0.5 * colour)
        noise = np.fft.irfft(spectrum, n=y.size).astype(np.float32)
    signal_power = np.mean(y**2) + 1e-12
    noise_power = np.mean(noise**2) + 1e-12
    snr = rng.uniform(*snr_db)
    return (y + noise * np.sqrt(signal_power / noise_power / 10 ** (snr / 10))).astype(np.float32)


def change_speed(y: np.ndarray, rng: np.random.Generator, factor: tuple[float, float] = (0.88, 1.12)) -> np.ndarray:
    """Resample-based speed change: tempo and pitch move together, like a different vocal tract."""
    import soxr

    f = rng.uniform(*factor)
    return soxr.resample(y, SR * f, SR).astype(np.float32)


def add_reverb(y: np.ndarray, rng: np.random.Generator, rt60_s: tuple[float, float] = (0.15, 0.9)) -> np.ndarray:
    """Convolution with a synthetic room impulse response (exponentially decaying noise, random RT60)."""
    from scipy.signal import fftconvolve

    rt60 = rng.uniform(*rt60_s)
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # −60 dB at rt60
    rir[0] = 1.0 + abs(rir[0])  # direct path
    rir /= np.sqrt(np.sum(rir**2))
    wet = fftconvolve(y, rir)[: y.size]
    mix = rng.uniform(0.4, 1.0)
    return (mix * wet + (1 - mix) * y).astype(np.float32)


def band_limit_eq(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cheap microphone or phone line: random band limits and a few broad ±8 dB boosts or cuts."""
    spectrum = np.fft.rfft(y)
    f = np.fft.rfftfreq(y.size, 1 / SR)
    low, high = rng.uniform(80, 400), rng.uniform(3200, 10000)
    gain_db = np.where((f >= low) & (f <= high), 0.0, -30.0)
    for _ in range(rng.integers(1, 4)):
        centre, width, boost = rng.uniform(200, 6000), rng.uniform(0.3, 1.2), rng.uniform(-8, 8)
        gain_db += boost * np.exp(-0.5 * (np.log2(np.maximum(f, 1) / centre) / width) ** 2)
    return np.fft.irfft(spectrum * 10 ** (gain_db / 20), n=y.size).astype(np.float32)


def spectral_envelope(magnitude: np.ndarray, keep_coefficients: int) -> np.ndarray:
    """The smooth envelope of STFT magnitudes (freq bins, frames): the real cepstrum of each frame kept below
    ``keep_coefficients`` quefrency samples (lifter), back to linear magnitude. Formants stay, harmonics go."""
    cepstrum = np.fft.irfft(np.log(np.maximum(magnitude, 1e-7)), axis=0)
    cepstrum[keep_coefficients : cepstrum.shape[0] - keep_coefficients + 1] = 0.0
    return np.exp(np.fft.rfft(cepstrum, axis=0).real)


def shift_pitch_keep_formants(y: np.ndarray, rng: np.random.Generator, semitones: tuple[float, float] = (-4.0, 4.0),
                              lifter_s: float = 0.0015, max_gain_db: float = 24.0) -> np.ndarray:
    """Pitch moved by a random number of semitones, tempo and formants kept: another voice's F0 on this vocal tract.

    A phase-vocoder pitch shift moves the whole spectrum, formants too (as ``change_speed`` does); each STFT frame
    is then given back the original frame's spectral envelope (cepstrum liftered below ``lifter_s`` seconds, 1.5 ms:
    smoother than the harmonics of any F0 under ~600 Hz), the correction held within ±``max_gain_db``."""
    import librosa

    n_fft, hop = 1024, 256
    steps = float(rng.uniform(*semitones))
    shifted = librosa.effects.pitch_shift(np.asarray(y, np.float32), sr=SR, n_steps=steps, n_fft=n_fft,
                                          hop_length=hop)
    before = librosa.stft(np.asarray(y, np.float32), n_fft=n_fft, hop_length=hop)
    after = librosa.stft(shifted, n_fft=n_fft, hop_length=hop)
    keep = int(round(lifter_s * SR))
    limit = 10 ** (max_gain_db / 20)
    gain = np.clip(spectral_envelope(np.abs(before), keep) / spectral_envelope(np.abs(after), keep), 1 / limit, limit)
    return librosa.istft(after * gain, hop_length=hop, n_fft=n_fft, length=y.size).astype(np.float32)


#: A copy's version where its function has changed or may: part of its banks' cache key (``clipbank.bank_file_name``),
#: so a bank computed by an earlier function is never read back. The first four predate it (their keys unchanged).
AUGMENTATION_VERSIONS = {"pitch": 1}

AUGMENTATIONS = {"noise": add_noise, "speed": change_speed, "reverb": add_reverb, "eq": band_limit_eq,
                 "pitch": shift_pitch_keep_formants}

LOUD_PERCENTILE = 90  # a clip's "loud frames": this percentile of its frame levels (speech, not its pauses)


def loud_level_dbfs(y: np.ndarray, frame_samples: int = DEFAULT_CONFIG.n_fft_samples,
                    hop_samples: int = DEFAULT_CONFIG.hop_samples) -> float:
    """The level of a clip's loud frames, dB relative to full scale: the 90th percentile of its frames' RMS levels
    (frames of the features' FFT length, their hop apart), so a few bursts do not set it and pauses do not lower it.
    A clip shorter than one frame is one frame."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.size < frame_samples:
        y = np.pad(y, (0, frame_samples - y.size))
    frames = np.lib.stride_tricks.sliding_window_view(y, frame_samples)[::hop_samples]
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return float(20 * np.log10(max(np.percentile(rms, LOUD_PERCENTILE), 1e-10)))


def floor_under(y: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float]) -> np.ndarray:
    """The scoring's white noise floor laid under the clip, ``snr_db`` (drawn uniformly) below its loud frames.

    The daemon hears speech over a room's floor at whatever distance the talker stands; scored clips sit over a
    −60 dBFS floor at their recorded level. RAVDESS's pauses are digital silence and its quiet emotions are recorded
    quietly (calm's loud frames ≈ −42 dBFS, angry's ≈ −23), so without this the only floors training sees are the
    augmentation's, and at scoring time the distance of speech above the floor follows the emotion. Drawn per clip
    whatever its class, it says nothing about the emotion.
    """
    snr = rng.uniform(*snr_db)
    floor = noise_floor(y.size, loud_level_dbfs(y) - snr, rng)
    return (np.asarray(y, dtype=np.float32) + floor).astype(np.float32)
