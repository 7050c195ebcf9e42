"""Log-Mel features: the single definition used by training, export and the streaming daemon."""

from emostream.features.logmel import (
    DEFAULT_CONFIG,
    FEATURE_VERSION,
    NORMALISATION,
    NORMALISATIONS,
    AudioDecodeError,
    LogMelConfig,
    centre_bands,
    compute_log_mel_spect,
    from_version_1,
    load_audio,
    mel_power,
    mel_power_of_frames,
    normalise_window,
    power_db,
    standardise_db,
)

__all__ = [
    "DEFAULT_CONFIG",
    "FEATURE_VERSION",
    "NORMALISATION",
    "NORMALISATIONS",
    "AudioDecodeError",
    "LogMelConfig",
    "centre_bands",
    "compute_log_mel_spect",
    "from_version_1",
    "load_audio",
    "mel_power",
    "mel_power_of_frames",
    "normalise_window",
    "power_db",
    "standardise_db",
]
