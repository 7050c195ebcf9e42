"""emostream: live speech-emotion scores from a microphone or any audio stream, on a CPU."""

__version__ = "0.2.0"
