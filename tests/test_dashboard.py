"""The dashboard page in a real headless Chromium, driven by Playwright, against a live daemon."""

import json
import os
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from emostream.inference.model import EmotionModel
from emostream.inference.pipeline import PipelineConfig
from emostream.paths import DEFAULT_MODEL_PATH, DEFAULT_SAMPLE
from emostream.stream.daemon import EmotionDaemon, ServerConfig
from emostream.stream.sources import FileSource


@pytest.fixture(scope="module")
def browser(launch_chromium):
    return launch_chromium()


@pytest.fixture
def daemon(tiny_onnx):
    model = EmotionModel(DEFAULT_MODEL_PATH if DEFAULT_MODEL_PATH.is_file() else tiny_onnx)
    sample = DEFAULT_SAMPLE
    return EmotionDaemon(model, FileSource(sample, realtime=True, loop=True), PipelineConfig(hop_s=0.25),
                         ServerConfig(port=0))


def shown_and_last(page) -> dict:
    """Read what the page shows and the last message it got in one JS turn (no message in between)."""
    return page.evaluate("""() => ({ shown: document.getElementById('top').textContent,
                                     last: window.emostream.last(),
                                     bars: [...document.querySelectorAll('.bar')].map(b => b.dataset.label) })""")


def test_page_shows_live_scores_and_matches_the_websocket_stream(browser, daemon, tmp_path, daemon_thread):
    with daemon_thread(daemon) as running:
        base = f"http://127.0.0.1:{running.daemon.port}"
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        with connect(running.url) as ws:
            hello = json.loads(ws.recv(timeout=10))
            page.goto(f"{base}/")
            page.wait_for_selector("#status[data-state=open]", timeout=15000)
            # The README's screenshot (EMOSTREAM_SCREENSHOT=path) waits for a fuller timeline.
            windows = 60 if "EMOSTREAM_SCREENSHOT" in os.environ else 3
            page.wait_for_function(f"() => window.emostream.last() && window.emostream.last().seq >= {windows}",
                                   timeout=60000)
            state = shown_and_last(page)
            ours = {}
            deadline = time.time() + 10
            while state["last"]["seq"] not in ours and time.time() < deadline:
                m = json.loads(ws.recv(timeout=10))
                if m["type"] == "scores":
                    ours[m["seq"]] = m
        last = state["last"]
        assert state["bars"] == hello["labels"]
        assert state["shown"] == ("silence" if last["silence"] else last["top"])
        assert ours[last["seq"]]["top"] == last["top"]  # the page shows what the daemon sent everyone
        assert ours[last["seq"]]["probabilities"] == last["probabilities"]
        contract = page.inner_text("#contract")
        assert "22050 Hz" in contract and hello["model"]["run_id"] in contract
        shot = Path(os.environ.get("EMOSTREAM_SCREENSHOT", tmp_path / "dashboard.png"))
        page.wait_for_timeout(200)  # let the bars finish their 150 ms transition
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
    # The daemon is gone: the page says so and keeps retrying.
    page.wait_for_selector("#status[data-state=closed]", timeout=15000)
    assert page.is_visible("#down-banner") and "retrying" in page.inner_text("#status")
    page.close()


def test_model_text_is_shown_as_text_and_the_token_stays_off_the_screen(browser, onnx_with_run_id, tmp_path,
                                                                         daemon_thread):
    """A model's labels and run id are any strings: before, they went into the page as HTML (a script could run in
    the daemon's origin, which holds the token); the 'not reachable' line showed the URL with the token."""
    evil_run = '<img src=x onerror="window.pwned = 1">'
    labels = ["<i>angry</i>", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]
    path = tmp_path / "markup.onnx"
    path.write_bytes(onnx_with_run_id(evil_run, labels=labels))
    daemon = EmotionDaemon(EmotionModel(path), FileSource(DEFAULT_SAMPLE, realtime=True, loop=True),
                           PipelineConfig(hop_s=0.25), ServerConfig(port=0, token="ab+c/d="))
    with daemon_thread(daemon) as running:
        port = running.daemon.port
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/?token=ab+c/d=")
        page.wait_for_selector("#status[data-state=open]", timeout=15000)
        page.wait_for_function("() => window.emostream.last() !== null", timeout=30000)
        assert evil_run in page.inner_text("#contract") and "<i>angry</i>" in page.inner_text("#bars")
        assert page.evaluate("() => [...document.querySelectorAll('.bar')].map(b => b.dataset.label)") == labels
        assert page.evaluate("() => window.pwned === undefined && document.querySelectorAll('img, i').length === 0")
        assert page.inner_text("#ws-url") == f"ws://127.0.0.1:{port}/"  # no token on the screen
        page.close()


def test_the_main_panel_keeps_to_the_daemons_own_stream_while_listeners_are_broadcast(browser, tiny_onnx,
                                                                                     daemon_thread):
    """Before: with --broadcast-listeners the page drew every /listen stream's scores into its own timeline."""
    import numpy as np

    from emostream.stream.listen import ListenConfig

    model = EmotionModel(tiny_onnx)
    daemon = EmotionDaemon(model, FileSource(DEFAULT_SAMPLE, realtime=True, loop=True), PipelineConfig(hop_s=0.25),
                           ServerConfig(port=0), ListenConfig(max_realtime_factor=1000, realtime_burst_s=60,
                                                              workers=1, broadcast=True))
    with daemon_thread(daemon) as running:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{running.daemon.port}/")
        page.wait_for_selector("#status[data-state=open]", timeout=15000)
        page.wait_for_function("() => window.emostream.last() !== null", timeout=30000)
        page.evaluate("""() => { window.seen = []; const show = window.emostream.last;
                                 setInterval(() => { const m = show(); if (m) window.seen.push(m.stream_id || null); },
                                             20); }""")
        noise = (np.random.default_rng(3).standard_normal(16000 * 8) * 3000).astype("<i2").tobytes()
        with connect(f"{running.url}/listen") as ws:  # 8 s of loud audio at once: ~23 tagged windows broadcast
            ws.send(json.dumps({"type": "start", "sample_rate_hz": 16000, "format": "s16le"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
            ws.send(noise)
            ws.send(json.dumps({"type": "stop"}))
            while json.loads(ws.recv(timeout=30))["type"] != "end":
                pass
        page.wait_for_timeout(1000)
        seen = page.evaluate("() => window.seen")
        assert seen and set(seen) == {None}  # only the daemon's own, untagged windows
        # The microphone panel, for a loud window the voice gate found no speech in (before: "" and "0 %")
        page.evaluate("""() => onMicMessage({type: "scores", seq: 0, start_s: 0, end_s: 2.3, silence: false,
                                             speech: false, probabilities: null, top: null, top_p: null,
                                             level_dbfs: -10.7})""")
        assert page.text_content("#mic-top") == "no speech" and page.text_content("#mic-detail") == "-10.7 dBFS"
        page.close()


def test_page_behind_a_path_prefix_connects_to_the_same_path(browser, daemon, daemon_thread):
    with daemon_thread(daemon) as running:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{running.daemon.port}/emotion/")
        page.wait_for_selector("#status[data-state=open]", timeout=15000)
        assert page.inner_text("#ws-url") == f"ws://127.0.0.1:{running.daemon.port}/emotion/"
        page.close()


def test_dashboard_is_plain_html_over_http(daemon, daemon_thread):
    import urllib.request

    with daemon_thread(daemon) as running:
        with urllib.request.urlopen(f"http://127.0.0.1:{running.daemon.port}/", timeout=5) as r:
            body = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/html")
        assert "<script>" in body and "http://" not in body.split("<script>")[1].split("</script>")[0]  # no CDN
