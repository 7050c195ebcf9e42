"""What an answer's top probability is called where people read it: one definition for the daemon's hello (the
dashboard's words come from it) and for ``emostream-calibration``, which measures how often each word was right on
voices the model never heard (README "How far to trust an answer").

The bands are for the model's full output (eight classes, chance 1/8); with ``--classes`` the probabilities are
renormalised over fewer classes, so a band's measured meaning no longer holds.
"""

from __future__ import annotations

#: (lowest top probability, word), highest band first; the last band starts at 0 so every answer has a word.
CONFIDENCE_BANDS: tuple[tuple[float, str], ...] = ((0.6, "sure"), (0.4, "fairly sure"), (0.0, "unsure"))


def check_bands(bands: tuple[tuple[float, str], ...]) -> tuple[tuple[float, str], ...]:
    """``bands`` if every answer gets exactly one word: lowest top probabilities strictly falling, the last 0,
    the words distinct. Raises ``ValueError`` otherwise (the dashboard takes the first band an answer reaches)."""
    lowest = [b[0] for b in bands]
    if not bands or lowest[-1] != 0.0 or any(a <= b for a, b in zip(lowest, lowest[1:], strict=False)) or \
            len({b[1] for b in bands}) != len(bands):
        raise ValueError(f"confidence bands {bands}: expected falling lowest top probabilities ending at 0, "
                         "distinct words")
    return bands


check_bands(CONFIDENCE_BANDS)


def confidence_word(top_p: float, bands: tuple[tuple[float, str], ...] = CONFIDENCE_BANDS) -> str:
    """The word of the highest band whose lowest top probability ``top_p`` reaches."""
    for lowest, word in bands:
        if top_p >= lowest:
            return word
    return bands[-1][1]


def describe_bands(bands: tuple[tuple[float, str], ...] = CONFIDENCE_BANDS) -> list[dict]:
    """The bands as the hello carries them: ``[{"min_top_p": 0.6, "word": "sure"}, …]``, highest first."""
    return [{"min_top_p": lowest, "word": word} for lowest, word in bands]


def bands_for(labels, model_labels) -> list[dict] | None:
    """The hello's ``confidence_bands``: the bands when the scores hold every class of the model, else None
    (probabilities renormalised over fewer classes are larger, so the measured words would overstate them)."""
    return describe_bands() if list(labels) == list(model_labels) else None
