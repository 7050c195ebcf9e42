"""A WAV shorter than its header declares is told apart: libsndfile itself reads it to its end without a word."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf
from synth import SR, speechlike

from emostream.wav_header import cut_short, declared_and_held_frames


def wav(path, seconds, subtype="PCM_16", channels=1):
    y = speechlike(seconds, seed=2)
    sf.write(path, np.repeat(y[:, None], channels, axis=1) if channels > 1 else y, SR, subtype=subtype)
    return path


@pytest.mark.parametrize("subtype, channels", [("PCM_16", 1), ("FLOAT", 1), ("PCM_24", 2)])
def test_a_cut_wav_is_measured_against_its_header(tmp_path, subtype, channels):
    path = wav(tmp_path / "a.wav", 4.0, subtype, channels)
    assert declared_and_held_frames(path) == (4 * SR, 4 * SR) and cut_short(path, SR) is None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 4])
    declared, held = declared_and_held_frames(path)
    assert declared == 4 * SR and held == pytest.approx(SR, abs=SR // 50)
    assert held == sf.info(path).frames  # what libsndfile will read: the frames the file holds
    assert "declares 4.00 s of audio, the file holds 1.0" in cut_short(path, SR)


def test_chunks_before_the_data_are_walked_and_placeholder_sizes_are_not_a_length(tmp_path):
    path = wav(tmp_path / "a.wav", 1.0)
    data = bytearray(path.read_bytes())
    data_at = data.index(b"data")
    extra = b"LIST" + struct.pack("<I", 5) + b"odd!!" + b"\0"  # an odd-sized chunk, padded to even
    padded = data[:data_at] + extra + data[data_at:]
    struct.pack_into("<I", padded, 4, len(padded) - 8)
    path.write_bytes(bytes(padded[: len(padded) - SR]))  # half the samples of 16-bit mono gone
    assert declared_and_held_frames(path) == (SR, SR // 2)
    for placeholder in (0, 0xFFFFFFFF, 0x7FFFF000, 0x7FFFFFFF):  # pipe writers (ffmpeg, sox, arecord)
        struct.pack_into("<I", padded, padded.index(b"data") + 4, placeholder)
        path.write_bytes(bytes(padded))
        assert declared_and_held_frames(path) is None


def test_other_formats_and_odd_files_are_not_judged(tmp_path):
    flac = tmp_path / "a.flac"
    sf.write(flac, speechlike(1.0, seed=2), SR)
    adpcm = wav(tmp_path / "adpcm.wav", 2.0, "IMA_ADPCM")  # many frames per block: byte counts are not frames
    adpcm.write_bytes(adpcm.read_bytes()[: adpcm.stat().st_size // 2])
    (tmp_path / "tiny.wav").write_bytes(b"RIFF")
    (tmp_path / "no-data.wav").write_bytes(b"RIFF\x04\0\0\0WAVE")
    for path in (flac, adpcm, tmp_path / "tiny.wav", tmp_path / "no-data.wav"):
        assert declared_and_held_frames(path) is None and cut_short(path, SR) is None
