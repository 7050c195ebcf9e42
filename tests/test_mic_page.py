"""The dashboard's "Listen to my microphone" in a real headless Chromium whose microphone plays a RAVDESS clip.

Chromium's fake capture device loops the WAV from an arbitrary point in the page's timeline, so windows
cannot be matched sample for sample: the check is the clip's label (the top of the mean probabilities over
voiced windows) and the mean probabilities themselves within 0.15 of the offline pipeline on the looped clip.
"""

import json

import numpy as np
import pytest
from needs import unavailable
from websockets.sync.client import connect

from emostream.inference.model import EmotionModel
from emostream.inference.pipeline import EmotionPipeline, PipelineConfig
from emostream.paths import DEFAULT_MODEL_PATH
from emostream.stream.daemon import EmotionDaemon, ServerConfig
from emostream.stream.listen import ListenConfig, NoSource

FAKE_MICROPHONE = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                   "--autoplay-policy=no-user-gesture-required")
CLIP = "Audio_Speech_Actors_01-24/Actor_01/03-01-07-02-01-01-01.flac"  # disgust, strong intensity
MEAN_TOLERANCE = 0.15


@pytest.fixture(scope="module")
def clip(ravdess_dir, tmp_path_factory):
    import soundfile as sf

    y, sr = sf.read(ravdess_dir / CLIP, dtype="float32")
    wav = tmp_path_factory.mktemp("mic") / "clip.wav"
    sf.write(wav, y, sr, subtype="PCM_16")
    return wav, y, sr


@pytest.fixture(scope="module")
def browser(clip, launch_chromium):
    return launch_chromium(*FAKE_MICROPHONE, f"--use-file-for-fake-audio-capture={clip[0]}")


@pytest.fixture(scope="module")
def model(tiny_onnx):
    if not DEFAULT_MODEL_PATH.is_file():
        unavailable("the shipped model is missing: the label check needs a trained model")
    return EmotionModel(DEFAULT_MODEL_PATH)


def mean_voiced(messages, labels):
    voiced = [m for m in messages if not m["silence"]]
    assert voiced, "no voiced window"
    return np.mean([[m["probabilities"][k] for k in labels] for m in voiced], axis=0)


def test_the_page_streams_its_microphone_and_agrees_with_the_offline_scores(browser, clip, model, daemon_thread):
    _, y, sr = clip
    looped = np.tile(y, 4)[:, None]
    offline = EmotionPipeline(model, PipelineConfig(), sr, 1).process(looped, last=True)
    want = mean_voiced(offline, model.labels)
    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0), ListenConfig(workers=1))
    with daemon_thread(daemon) as running:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{running.daemon.port}/")
        page.click("#mic-button")
        page.wait_for_selector("#mic-status[data-state=live]", timeout=15000)
        page.wait_for_function("() => window.emostream.mic.scores.length >= 16", timeout=60000)
        assert running.daemon.health()["listen"]["streams"] == 1
        page.click("#mic-button")  # Stop
        page.wait_for_selector("#mic-status[data-state=ended]", timeout=15000)
        mic = page.evaluate("() => ({ scores: window.emostream.mic.scores, end: window.emostream.mic.end, "
                            "utterances: window.emostream.mic.utterances, shown: document.getElementById('mic-top')"
                            ".textContent, status: document.getElementById('mic-status').textContent })")
        page.close()
    got = mean_voiced(mic["scores"], model.labels)
    assert model.labels[int(np.argmax(got))] == model.labels[int(np.argmax(want))] == "disgust"
    np.testing.assert_allclose(got, want, atol=MEAN_TOLERANCE)
    assert mic["end"]["windows"] == len(mic["scores"]) and "ended" in mic["status"]
    assert [m["seq"] for m in mic["scores"]] == list(range(len(mic["scores"])))
    last = mic["scores"][-1]
    assert mic["shown"] == ("silence" if last["silence"] else last["top"])
    assert mic["end"]["utterances"] == len(mic["utterances"])


def test_the_page_shows_the_daemons_error(browser, model, daemon_thread):
    daemon = EmotionDaemon(model, NoSource(22050), PipelineConfig(), ServerConfig(port=0),
                           ListenConfig(max_streams=1, workers=1))
    with daemon_thread(daemon) as running, connect(f"{running.url}/listen") as held:
        held.send(json.dumps({"type": "start", "sample_rate_hz": 16000, "format": "s16le"}))
        assert json.loads(held.recv(timeout=10))["type"] == "hello"
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{running.daemon.port}/")
        page.click("#mic-button")
        page.wait_for_selector("#mic-status[data-state=error]", timeout=15000)
        assert "too many streams (1)" in page.inner_text("#mic-status")
        assert page.evaluate("() => window.emostream.mic.closeCode") == 1013
        assert page.inner_text("#mic-button") == "Listen to my microphone"
        page.close()
