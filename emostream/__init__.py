"""emostream: live speech-emotion scores from a microphone or any audio stream, on a CPU.

The public API (``EmotionRecognizer``, ``score_file`` and their result types, from ``emostream.api``) is
imported on first use, so ``import emostream`` stays cheap and loads no model::

    import emostream
    result = emostream.score_file("talk.wav")
    print(result.summary.top, [u.top for u in result.utterances])
"""

__version__ = "0.2.0"

_API = ("EmotionRecognizer", "EmotionStream", "score_file", "ClipScore", "FileScores", "Utterance", "WindowScore",
        "VadConfig")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from emostream import api

        return getattr(api, name)
    raise AttributeError(f"module 'emostream' has no attribute {name!r}")
