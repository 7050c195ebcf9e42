"""The microphone path against a stand-in sounddevice module: a device that fails, vanishes and comes back."""

import sys
import threading
import time
import types

import numpy as np
import pytest

from emostream.stream.ring_buffer import RingBuffer


class FakePortAudioError(Exception):
    pass


def fake_sounddevice(script):
    """``script``: per InputStream opened, "fail" (cannot open) or N (blocks before it dies; None: never dies)."""
    module = types.ModuleType("sounddevice")
    module.PortAudioError = FakePortAudioError
    module.query_devices = lambda device=None, kind=None: {"index": 0, "name": "Fake Mic", "max_input_channels": 2,
                                                          "default_samplerate": 48000.0}
    module.check_input_settings = lambda **kw: None
    opened = []

    class InputStream:
        def __init__(self, callback, blocksize, channels, **kwargs):
            self.plan = script[min(len(opened), len(script) - 1)]
            opened.append(self.plan)
            self.callback, self.blocksize, self.channels = callback, blocksize, channels
            self.active = False

        def __enter__(self):
            if self.plan == "fail":
                raise FakePortAudioError("Device unavailable")
            self.active = True
            self.thread = threading.Thread(target=self._feed, daemon=True)
            self.thread.start()
            return self

        def _feed(self):
            n = 0
            while self.active and (self.plan is None or n < self.plan):
                status = types.SimpleNamespace(input_overflow=n % 10 == 9)  # the card dropped input now and then
                self.callback(np.full((self.blocksize, self.channels), 0.1, np.float32), self.blocksize, None, status)
                n += 1
                time.sleep(0.002)
            self.active = False  # unplugged

        def __exit__(self, *exc):
            self.active = False

    module.InputStream = InputStream
    module.opened = opened
    return module


def test_a_failing_device_is_reopened_with_backoff_and_subscribers_are_told(monkeypatch, tiny_onnx):
    sd = fake_sounddevice(["fail", 20, None])  # cannot open, then dies after 20 blocks, then stays
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    from emostream.stream.sources import MicrophoneSource

    monkeypatch.setattr(MicrophoneSource, "RETRY_FIRST_S", 0.05)
    mic = MicrophoneSource(block_frames=256)
    assert mic.sample_rate_hz == 22050 and mic.channels == 1
    events = []
    mic.on_event = events.append
    ring = RingBuffer(1 << 20, mic.channels)
    stop = threading.Event()
    thread = threading.Thread(target=mic.run, args=(ring, stop))
    thread.start()
    deadline = time.time() + 10
    while len(sd.opened) < 3 and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and ring.closed
    assert sd.opened[:3] == ["fail", 20, None]
    kinds = [e["audio"] for e in events]
    assert kinds[:2] == ["lost", "ok"] and "lost" in kinds[2:] and kinds[-1] == "ok"
    assert events[0]["error"] == "Device unavailable" and events[0]["retry_s"] == 0.05
    assert ring.available > 20 * 256  # audio from both working streams arrived
    from emostream import messages
    from emostream.inference.model import EmotionModel
    from emostream.stream.daemon import EmotionDaemon, ServerConfig

    assert {e["audio"] for e in events} == {"lost", "ok"}
    for e in events:  # the README's fields, and nothing the subscriber would not expect
        want = {"type", "audio", "error", "retry_s"} if e["audio"] == "lost" else {"type", "audio", "source"}
        assert set(e) == want
        assert set(messages.SCHEMA["status"]) <= set(e) and e["type"] == "status"
    assert mic.input_overflows >= 2  # counted once, and now shown: /healthz and the status reply
    daemon = EmotionDaemon(EmotionModel(tiny_onnx), mic, server_config=ServerConfig(port=0), listen_config=None)
    assert daemon.health()["input_overflows"] == mic.input_overflows
    assert daemon.reply_to('{"type": "status"}')["input_overflows"] == mic.input_overflows


def test_missing_portaudio_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_portaudio(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_portaudio)
    from emostream.stream.sources import MicrophoneSource, SourceError

    with pytest.raises(SourceError, match="libportaudio2") as err:
        MicrophoneSource()
    assert "--file" in str(err.value) and "\n" not in str(err.value)


def test_a_device_given_as_digits_is_the_index_emostream_devices_lists_and_a_name_stays_a_name(monkeypatch):
    sd = fake_sounddevice([None])
    asked = []
    sd.query_devices = lambda device=None, kind=None: asked.append(device) or {
        "index": 7, "name": "USB Mic 3", "max_input_channels": 1, "default_samplerate": 48000.0}
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    from emostream.stream.sources import MicrophoneSource

    assert MicrophoneSource(device="3").device == 7
    MicrophoneSource(device="USB")
    assert asked == [3, "USB"]
