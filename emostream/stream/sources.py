"""Audio sources: microphone, file, raw PCM on stdin. Each writes (frames, channels) float32 into a ring.

Sources hand over audio at their own rate and channel count; mixing down and resampling happen on
the analysis thread (``stream.pipeline``), so a microphone callback only copies into the ring.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np

from emostream import messages as msg
from emostream.decoder_noise import MPEG_SUFFIXES, is_mpeg, open_quietly
from emostream.inference.pipeline import check_input
from emostream.paths import why_not_a_file
from emostream.stream.ring_buffer import RingBuffer
from emostream.wav_header import cut_short

logger = logging.getLogger(__name__)

PORTAUDIO_HINT = "install PortAudio with `apt-get install libportaudio2`, or use --file PATH or --stdin instead"


#: Raw PCM sample formats taken on stdin and over /listen: little-endian 16-bit integers or 32-bit floats.
PCM_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


class SourceError(RuntimeError):
    """An audio source that cannot be opened or read; the message is one line."""


class FileSource:
    """Any file soundfile reads, in blocks (never loaded whole), paced in real time unless ``realtime=False``."""

    def __init__(self, path: str | Path, realtime: bool = True, loop: bool = False, block_frames: int | None = None):
        self.path = Path(path)
        if reason := why_not_a_file(self.path, "audio file"):
            raise SourceError(reason)
        try:
            with open_quietly(self.path) as f:
                self.sample_rate_hz, self.channels, frames = f.samplerate, f.channels, f.frames
                self.mpeg = self.path.suffix.lower() in MPEG_SUFFIXES or is_mpeg(f.format)  # run() reopens it
        except Exception as exc:  # soundfile.LibsndfileError, RuntimeError on odd formats
            raise SourceError(f"cannot read audio file {self.path}: {str(exc).strip().splitlines()[0]}") from None
        if frames == 0:
            raise SourceError(f"audio file {self.path} holds no samples")
        if warning := cut_short(self.path, self.sample_rate_hz):
            logger.warning("%s", warning)
        try:  # before anything sized by the header (the ring buffer, the resampler) is allocated
            self.sample_rate_hz, self.channels = check_input(self.sample_rate_hz, self.channels)
        except ValueError as exc:
            raise SourceError(f"audio file {self.path}: {exc}") from None
        # Real time: small blocks, like a sound card's, so windows leave on cadence; fast: large blocks.
        self.block_frames = block_frames or (512 if realtime else 8192)
        self.realtime, self.loop = realtime, loop
        self.error: str | None = None  # why reading stopped early, when it did: the daemon ends with exit 1
        self.description = f"file {self.path.name} ({self.sample_rate_hz} Hz, {self.channels} ch" + \
            (", looped" if loop else "") + (")" if realtime else ", fast)")

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        started, sent = time.monotonic(), 0
        try:
            with open_quietly(self.path, self.mpeg) as f:
                while not stop.is_set():
                    for block in f.blocks(self.block_frames, dtype="float32", always_2d=True):
                        if not ring.write_all(block, stop):
                            return
                        sent += len(block)
                        if self.realtime:
                            ahead = started + sent / self.sample_rate_hz - time.monotonic()
                            if ahead > 0 and stop.wait(ahead):
                                return
                    if not self.loop:
                        return
                    f.seek(0)
        except Exception as exc:  # e.g. a file cut short: what was read is scored, then the daemon says why it ended
            # the subscribers (and brokers) hear the file's name, as in the hello's source; the log has the path
            self.error = f"reading {self.path.name} failed: {str(exc).strip() or type(exc).__name__}"
            logger.error("reading %s failed: %s", self.path, str(exc).strip() or type(exc).__name__)
        finally:
            ring.close()


def misaligned_by_a_byte(data: bytes, min_ratio: float = 8.0) -> tuple[bool, float, float]:
    """Does s16le ``data`` look read one byte off? Returns (verdict, level as read, level one byte later) in dBFS.

    Read one byte off, every sample's high byte comes from a neighbour's low byte: near-white noise at
    about −5 dBFS whatever was recorded. Read correctly, real audio is far quieter than that view of it
    (the low bytes are what becomes loud). So the stream looks misaligned when the level as read is
    ``min_ratio`` times (18 dB) the level one byte later and itself loud.
    """
    n = (len(data) - 1) // 2
    if n < 256:
        return False, -200.0, -200.0
    as_read = np.frombuffer(data[: 2 * n], "<i2").astype(np.float64) / 32768
    shifted = np.frombuffer(data[1 : 1 + 2 * n], "<i2").astype(np.float64) / 32768
    rms_read, rms_shifted = np.sqrt(np.mean(as_read**2)), np.sqrt(np.mean(shifted**2))
    db = (20 * np.log10(max(rms_read, 1e-10)), 20 * np.log10(max(rms_shifted, 1e-10)))
    return bool(rms_read > min_ratio * rms_shifted and db[0] > -20.0), float(db[0]), float(db[1])


class StdinSource:
    """Raw interleaved PCM (``s16le`` or ``f32le``) from a byte stream, e.g. ``arecord``, ``ffmpeg``, ``sox``.

    A stray odd byte shifts every later s16le sample by one byte, which no header can reveal; the
    source warns when the stream's statistics look like that (``misaligned_by_a_byte``).
    """

    FORMATS = PCM_FORMATS

    def __init__(self, sample_rate_hz: int, channels: int = 1, sample_format: str = "s16le",
                 stream: BinaryIO | None = None, block_frames: int = 1024):
        if sample_format not in self.FORMATS:
            raise SourceError(f"unknown sample format {sample_format!r}; use one of {', '.join(self.FORMATS)}")
        try:
            sample_rate_hz, channels = check_input(sample_rate_hz, channels)
        except ValueError as exc:
            raise SourceError(f"stdin: {exc}") from None
        self.sample_rate_hz, self.channels = sample_rate_hz, channels
        self.dtype, self.format_name = self.FORMATS[sample_format], sample_format
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.block_bytes = block_frames * channels * self.dtype.itemsize
        self.description = f"stdin {sample_format} {sample_rate_hz} Hz, {channels} ch"
        self.misaligned_blocks = 0  # s16le blocks that looked one byte off
        self.error: str | None = None  # why reading stopped early, when it did: the daemon ends with exit 1

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        frame_bytes = self.channels * self.dtype.itemsize
        pending = b""
        scale = 1 / 32768 if self.dtype.kind == "i" else 1.0
        try:
            while not stop.is_set():
                data = self.stream.read1(self.block_bytes) if hasattr(self.stream, "read1") else \
                    self.stream.read(self.block_bytes)
                if not data:
                    if pending:  # a partial frame cannot be placed: say so rather than lose it unseen
                        logger.warning("stdin ended with %d byte(s), less than one %d-byte frame (--format "
                                       "%s, --channels %d): dropped", len(pending), frame_bytes,
                                       self.format_name, self.channels)
                    return
                pending += data
                usable = len(pending) - len(pending) % frame_bytes
                if usable:
                    self._check_alignment(pending[:usable])
                    samples = np.frombuffer(pending[:usable], dtype=self.dtype).reshape(-1, self.channels)
                    pending = pending[usable:]
                    if not ring.write_all(samples.astype(np.float32) * scale, stop):
                        return
        except OSError as exc:  # e.g. EIO from a terminal that went away
            self.error = f"reading stdin failed: {exc.strerror or exc}"
            logger.error("%s", self.error)
        finally:
            ring.close()

    def _check_alignment(self, data: bytes) -> None:
        if self.dtype.kind != "i":
            return
        bad, db_read, db_shifted = misaligned_by_a_byte(data)
        if bad:
            if self.misaligned_blocks == 0:
                logger.warning("stdin s16le looks one byte off (a stray byte in the stream?): %.1f dBFS as read, "
                               "%.1f dBFS one byte later; scores are of noise until it is fixed. Check --format, "
                               "--channels and that nothing else writes to the pipe", db_read, db_shifted)
            self.misaligned_blocks += 1


def _sounddevice():
    try:
        import sounddevice
    except OSError:
        raise SourceError(f"PortAudio library not found: {PORTAUDIO_HINT}") from None
    except ImportError:
        raise SourceError("sounddevice is not installed: pip install sounddevice") from None
    return sounddevice


class MicrophoneSource:
    """An input device through sounddevice; the callback only copies into the ring (never blocks)."""

    RETRY_FIRST_S = 0.5
    RETRY_MAX_S = 8.0

    def __init__(self, device: str | int | None = None, sample_rate_hz: int = 22050, channels: int = 1,
                 block_frames: int = 512):
        sd = _sounddevice()
        if isinstance(device, str) and device.strip().isdecimal() and device.strip().isascii():
            device = int(device)  # "3" from the command line is emostream-devices' index 3; sounddevice reads a name
        try:
            info = sd.query_devices(device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            raise SourceError(f"no audio input device ({str(exc).strip().splitlines()[0]}); "
                              "use --file PATH or --stdin instead") from None
        self.device = info["index"] if isinstance(info, dict) and "index" in info else device
        self.channels = max(1, min(channels, int(info["max_input_channels"])))
        try:
            sd.check_input_settings(device=self.device, samplerate=sample_rate_hz, channels=self.channels)
            self.sample_rate_hz = sample_rate_hz
        except Exception:  # the device cannot give the model's rate: take its own, resample later
            self.sample_rate_hz = int(info["default_samplerate"])
        self.block_frames = block_frames
        self.input_overflows = 0
        self.on_event = None  # set by the daemon: device lost / back, told to subscribers
        self.description = f"microphone {info['name']!r} ({self.sample_rate_hz} Hz, {self.channels} ch)"

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        """Capture until stopped; a device that fails or vanishes is reopened with backoff (0.5 s → 8 s)."""
        sd = _sounddevice()

        def callback(indata, frames, time_info, status):
            if status.input_overflow:
                self.input_overflows += 1
            ring.write(indata)

        delay_s, failed = self.RETRY_FIRST_S, False
        try:
            while not stop.is_set():
                try:
                    with sd.InputStream(device=self.device, channels=self.channels, samplerate=self.sample_rate_hz,
                                        blocksize=self.block_frames, dtype="float32", callback=callback) as stream:
                        if failed:
                            logger.info("audio device back")
                            self._tell(msg.audio_status("ok", source=self.description))
                        failed, delay_s = False, self.RETRY_FIRST_S
                        while not stop.wait(0.2):
                            if not stream.active:
                                raise sd.PortAudioError("input stream stopped")
                except sd.PortAudioError as exc:
                    failed = True
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "device error"
                    logger.warning("audio device failed (%s); reopening in %.1f s", reason, delay_s)
                    self._tell(msg.audio_status("lost", error=reason, retry_s=delay_s))
                    if stop.wait(delay_s):
                        break
                    delay_s = min(delay_s * 2, self.RETRY_MAX_S)
        finally:
            ring.close()

    def _tell(self, event: dict) -> None:
        if self.on_event is not None:
            self.on_event(event)


def list_devices_main(argv: list[str] | None = None) -> int:
    """``emostream-devices``: list input devices with their index, channels and default rate."""
    argparse.ArgumentParser(prog="emostream-devices", description=list_devices_main.__doc__).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        sd = _sounddevice()
        devices = [d for d in sd.query_devices() if d["max_input_channels"] > 0]
    except SourceError as exc:
        logger.error("%s", exc)
        return 2
    if not devices:
        logger.error("no audio input devices found; use --file PATH or --stdin instead")
        return 2
    for d in devices:
        print(f"{d['index']:3d}  {d['name']}  ({d['max_input_channels']} ch, {d['default_samplerate']:.0f} Hz)")
    return 0
