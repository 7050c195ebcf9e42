"""Say when a WAV file is shorter than its header declares.

libsndfile reads a RIFF/WAVE file cut short (a copy interrupted, a recorder that died) to where its bytes end and
reports that length as the file's, silently (a cut FLAC instead fails mid-stream with a read error). So a
user who scores a cut WAV would never learn that part of the recording is missing. This reads the header's own
count of the data chunk's bytes and compares it with the bytes the file holds.
"""

from __future__ import annotations

import struct
from pathlib import Path

#: Data-chunk sizes a streaming writer leaves when it cannot seek back (ffmpeg: 0 or 0xFFFFFFFF; sox: 0x7FFFF000;
#: arecord: 0x7FFFFFFF): not a declared length.
PLACEHOLDER_SIZES = (0, 0xFFFFFFFF, 0x7FFFF000, 0x7FFFFFFF)
#: Format tags whose block is one frame (PCM, IEEE float, A-law, µ-law); compressed ones (ADPCM, GSM) pack many
#: frames per block, so their byte counts do not give frames this simply and they are not judged.
FRAME_PER_BLOCK_FORMATS = (1, 3, 6, 7)
EXTENSIBLE = 0xFFFE
HEADER_SCAN_BYTES = 1 << 16  # chunks before "data" (fmt, LIST, fact, ...) fit in this many bytes


def declared_and_held_frames(path: str | Path) -> tuple[int, int] | None:
    """(frames the header declares, frames the file holds) for a RIFF/WAVE file of PCM, float, A-law or µ-law
    samples; None for any other file, or a header whose sizes are placeholders or unreadable."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(HEADER_SCAN_BYTES)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    block_align, offset = None, 12
    while offset + 8 <= len(head):
        chunk_id, size = head[offset : offset + 4], struct.unpack_from("<I", head, offset + 4)[0]
        body = offset + 8
        if chunk_id == b"fmt " and body + 14 <= len(head):
            tag = struct.unpack_from("<H", head, body)[0]
            if tag == EXTENSIBLE and body + 26 <= len(head):
                tag = struct.unpack_from("<H", head, body + 24)[0]  # the sub-format GUID starts with the tag
            if tag not in FRAME_PER_BLOCK_FORMATS:
                return None
            block_align = struct.unpack_from("<H", head, body + 12)[0]
        elif chunk_id == b"data":
            if not block_align or size in PLACEHOLDER_SIZES:
                return None
            held_bytes = max(path.stat().st_size - body, 0)
            return size // block_align, min(size, held_bytes) // block_align
        offset = body + size + (size & 1)  # chunks are padded to an even length
    return None


def cut_short(path: str | Path, sample_rate_hz: int) -> str | None:
    """A one-line warning when a WAV file holds fewer frames than its header declares, else None (also when the
    file cannot be read again: the decoder that already opened it has the last word)."""
    try:
        frames = declared_and_held_frames(path)
    except OSError:
        return None
    if frames is None or frames[1] >= frames[0]:
        return None
    declared, held = (n / sample_rate_hz for n in frames)
    return (f"{Path(path).name}: its header declares {declared:.2f} s of audio, the file holds {held:.2f} s "
            "(cut short?); scoring what is there")
