"""Shared fixtures: synthetic audio with fixed seeds, the real data set where present, tiny models."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from needs import unavailable
from synth import SR

from emostream.train.data import resolve_data_dir


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow (full data, long)")


def pytest_collection_modifyitems(config, items):
    """`slow` tests run only with --run-slow or EMOSTREAM_SLOW=1."""
    if config.getoption("--run-slow") or os.environ.get("EMOSTREAM_SLOW") == "1":
        return
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(pytest.mark.skipif(True, reason="slow: run with --run-slow or EMOSTREAM_SLOW=1"))


@pytest.fixture(scope="session")
def ravdess_dir() -> Path:
    """The real clips; tests that use this skip where they are absent, and fail instead under CI=true."""
    root = resolve_data_dir(None)
    if not (root / "Audio_Speech_Actors_01-24").is_dir():
        unavailable(f"RAVDESS clips not found at {root} (set RAVDESS_DIR or run emostream-download)")
    return root


@pytest.fixture(scope="session")
def emodb_dir() -> Path:
    """The EmoDB copy; skip where absent, fail instead under CI=true."""
    from emostream.paths import data_dir

    root = data_dir("emodb")
    if not (root / "wav").is_dir():
        unavailable(f"EmoDB clips not found at {root} (set EMODB_DIR)")
    return root


@pytest.fixture
def write_clip(tmp_path):
    """Write float samples to a 16-bit WAV (or FLAC) under tmp_path; returns the path."""
    import soundfile as sf

    def _write(name: str, samples, sr: int = SR) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, samples, sr, subtype="PCM_16")
        return path

    return _write


LABELS = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]


@pytest.fixture(scope="session")
def onnx_with_run_id():
    """bytes of a small, freshly built (untrained) CRNN exported with its contract: real ONNX, real metadata."""
    import keras

    from emostream.export.onnx_export import convert
    from emostream.features.contract import ModelContract
    from emostream.train.model import CrnnConfig, build_crnn

    def _build(run_id: str, labels=LABELS, seed: int = 7) -> bytes:
        keras.utils.set_random_seed(seed)
        model = build_crnn(CrnnConfig(conv_filters=(4, 8), lstm_units=(16, 8)), compile=False)
        proto = convert(model, ModelContract.for_features(labels, run_id=run_id, test_accuracy=0.125))
        return proto.SerializeToString()

    return _build


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, onnx_with_run_id) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    path.write_bytes(onnx_with_run_id("tiny-untrained"))
    return path


@pytest.fixture(scope="session")
def recognizer():
    """``emostream.EmotionRecognizer()`` on the shipped model, loaded once."""
    from emostream import EmotionRecognizer

    return EmotionRecognizer()


@pytest.fixture
def speech_with_pause(write_clip):
    """A 44.1 kHz stereo WAV: 3 s speech-like, 3 s silence (a silent window), 3 s speech-like; (path, samples)."""
    import numpy as np
    from synth import speechlike

    sr = 44100
    mono = np.concatenate([speechlike(3.0, seed=31, sr=sr), np.zeros(3 * sr, np.float32),
                           speechlike(3.0, seed=32, sr=sr)])
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    return write_clip("pause.wav", stereo, sr), stereo


class DaemonThread:
    """Runs ``EmotionDaemon.run`` on its own event loop in a thread; ``port`` once listening."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.listening = threading.Event()
        self.code = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.code = asyncio.run(self.daemon.run(on_listening=lambda port: self.listening.set()))

    def __enter__(self):
        self.thread.start()
        assert self.listening.wait(10)
        self.url = f"ws://127.0.0.1:{self.daemon.port}"
        return self

    def __exit__(self, *exc):
        self.daemon.request_stop()
        self.thread.join(15)
        assert not self.thread.is_alive()


@pytest.fixture
def daemon_thread():
    """``with daemon_thread(EmotionDaemon(...)) as running:`` serves on ``running.url`` until the block ends."""
    return DaemonThread


def _broker(kind, tmp_path, **settings):
    """A broker of ``kind`` (``emostream.bench.brokers``) started on a free loopback port; absent binary or
    client → skip."""
    import importlib.util

    from emostream.bench.brokers import Mosquitto, RedisServer, find_binary

    binary_name, client = kind.binary_name, {RedisServer: "redis", Mosquitto: "aiomqtt"}[kind]
    binary = find_binary(binary_name)
    if binary is None:
        unavailable(f"{binary_name} not installed (apt-get install {binary_name}; scripts/setup.sh does it)")
    if importlib.util.find_spec(client) is None:
        unavailable(f"the {client} package is missing: pip install 'emostream[publish]'")
    server = kind(binary, tmp_path, **settings).start()
    yield server
    if server.process is not None:
        server.resume()  # a paused server must run to die cleanly
    server.kill()


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server (no persistence) on 127.0.0.1; ``.kill()``/``.start()`` to restart on the same port."""
    from emostream.bench.brokers import RedisServer

    yield from _broker(RedisServer, tmp_path)


@pytest.fixture
def mqtt_broker(tmp_path):
    """A fresh mosquitto (anonymous, no persistence) on 127.0.0.1; ``.kill()``/``.start()`` to restart."""
    from emostream.bench.brokers import Mosquitto

    yield from _broker(Mosquitto, tmp_path)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A throw-away CA and server certificate for 127.0.0.1 (needs openssl)."""
    from brokers import make_tls_files

    try:
        return make_tls_files(tmp_path_factory.mktemp("tls"))
    except FileNotFoundError:
        unavailable("openssl not installed: cannot make the test certificates")


@pytest.fixture
def secure_redis(tmp_path, tls_files):
    """redis-server on a TLS-only port that requires a password."""
    from emostream.bench.brokers import RedisServer

    yield from _broker(RedisServer, tmp_path, password="s3cret-pw", tls=tls_files)


@pytest.fixture
def secure_mqtt_broker(tmp_path, tls_files):
    """mosquitto on a TLS-only port, user "alice" with a password, no anonymous clients."""
    from emostream.bench.brokers import Mosquitto

    yield from _broker(Mosquitto, tmp_path, password="s3cret-pw", tls=tls_files)


CHROMIUM_FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


@pytest.fixture(scope="module")
def launch_chromium():
    """``launch_chromium(*extra_flags)`` → a headless Debian Chromium driven by Playwright (no browser download);
    skipped where Chromium is absent, failed under CI=true. Every browser it made is closed after the module."""
    import shutil

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        unavailable("Chromium not installed (scripts/test.sh installs Debian's chromium when run as root)")
    from playwright.sync_api import sync_playwright

    browsers = []
    with sync_playwright() as p:
        def launch(*extra_flags: str):
            browsers.append(p.chromium.launch(executable_path=executable, args=[*CHROMIUM_FLAGS, *extra_flags]))
            return browsers[-1]

        yield launch
        for browser in browsers:
            browser.close()
