"""The dashboard shows how sure the model is and whether a window held speech (issue 16, case 8).

The page is served by Playwright's router (no daemon: its WebSocket fails and retries) and fed messages
through its own ``onHello``/``onScores``, so each case is exactly one message.
"""


import pytest

from emostream.confidence import describe_bands
from emostream.paths import DASHBOARD

LABELS = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]
HELLO = {"type": "hello", "labels": LABELS, "sample_rate_hz": 22050, "hop_s": 0.255, "window_s": 2.3,
         "window_frames": 99, "n_mels": 128, "silence_dbfs": -50, "smoothing": 0,
         "vad": {"backend": "silero", "threshold": 0.5, "min_speech_s": 0.25}, "source": "test",
         "model": {"run_id": "r", "test_accuracy": 0.7, "feature_version": 1}, "version": "x",
         "confidence_bands": describe_bands()}


def scores(seq, top=None, top_p=None, silence=False):
    p = None
    if top is not None:
        rest = (1 - top_p) / (len(LABELS) - 1)
        p = {label: (top_p if label == top else rest) for label in LABELS}
    return {"type": "scores", "seq": seq, "start_s": seq * 0.255, "end_s": 2.3 + seq * 0.255, "ready_time": 0,
            "wall_time": 0, "silence": silence, "speech": p is not None, "level_dbfs": -30.0 if not silence else -70.0,
            "probabilities": p, "top": top, "top_p": top_p, "features_ms": 0.2, "inference_ms": 1.0, "dropped": 0}


@pytest.fixture(scope="module")
def page(launch_chromium):
    page = launch_chromium().new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("http://127.0.0.1:9/", lambda route: route.fulfill(body=DASHBOARD.read_text(),
                                                                  content_type="text/html"))
    page.goto("http://127.0.0.1:9/")
    page.evaluate("(h) => onHello(h)", HELLO)
    page.errors = errors
    return page


def shown(page, message) -> dict:
    page.evaluate("(m) => onScores(m)", message)
    return page.evaluate("""() => ({ top: document.getElementById('top').textContent,
        opacity: parseFloat(document.getElementById('top').style.opacity),
        detail: document.getElementById('top-p').textContent,
        speech: document.getElementById('speech').textContent,
        contract: document.getElementById('contract').textContent })""")


def test_a_34_percent_winner_does_not_look_like_a_95_percent_one(page):
    unsure = shown(page, scores(1, "sad", 0.34))
    sure = shown(page, scores(2, "sad", 0.95))
    assert unsure["top"] == sure["top"] == "sad"
    assert "34 % — unsure" in unsure["detail"] and "95 % — sure" in sure["detail"]
    assert unsure["opacity"] < 0.6 < 0.9 < sure["opacity"]
    assert unsure["speech"] == sure["speech"] == "speech"
    assert "silero" in sure["contract"] and "0.5" in sure["contract"]  # the gate's threshold, from the hello


def test_windows_without_speech_and_silent_windows_are_shown_as_such(page):
    noise = shown(page, scores(3))
    assert noise["top"] == "no speech" and noise["speech"] == "no speech" and "-30.0 dBFS" in noise["detail"]
    quiet = shown(page, scores(4, silence=True))
    assert quiet["top"] == "silence" and quiet["speech"] == "silence"
    null_level = {**scores(5), "level_dbfs": None}  # a strict-JSON null where a number was not finite
    assert shown(page, null_level)["top"] == "no speech"
    assert page.errors == []


def test_the_words_are_the_hellos_and_scores_over_fewer_classes_get_none(page):
    """The daemon defines the words (``emostream.confidence``); a hello without them (``--classes``: renormalised
    scores) leaves the percentage alone, and other bands give other words."""
    try:
        page.evaluate("(h) => onHello(h)", {**HELLO, "confidence_bands": None})
        bare = shown(page, scores(6, "sad", 0.95))
        assert bare["detail"].startswith("95 %, at") and "sure" not in bare["detail"]
        assert "none (scores over fewer classes" in bare["contract"]
        page.evaluate("(h) => onHello(h)", {**HELLO, "confidence_bands": [{"min_top_p": 0.9, "word": "certain"},
                                                                          {"min_top_p": 0.0, "word": "guessing"}]})
        assert "95 % — certain" in shown(page, scores(7, "sad", 0.95))["detail"]
        guess = page.evaluate("(m) => { onScores(m); return document.getElementById('top').dataset.leastSure; }",
                              scores(8, "sad", 0.5))
        assert guess == "true"
        assert "guessing" in shown(page, scores(9, "sad", 0.5))["detail"]
    finally:
        page.evaluate("(h) => onHello(h)", HELLO)
    assert page.errors == []
