"""``emostream-download``: fetch the two official RAVDESS audio zips and unpack them in the official layout.

Downloads resume where they stopped (HTTP Range), show a progress bar, and the unpacked tree is
checked against the expected clip counts (1440 speech, 1012 song).
"""

from __future__ import annotations

import argparse
import http.client
import logging
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from emostream.train.data import AUDIO_SUFFIXES, CHANNEL_FOLDERS, EXPECTED_COUNTS, resolve_data_dir

logger = logging.getLogger(__name__)

ZENODO_BASE_URL = "https://zenodo.org/records/1188976/files"
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    pass


def fetch_resumable(url: str, dest: Path, timeout_s: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, continuing a ``dest.part`` left by an earlier attempt."""
    if dest.is_file():
        return dest
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part file is complete
            part.replace(dest)
            return dest
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: {exc}") from None
    with response:
        if have and response.status != 206:  # server ignored the Range: start again
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as out, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr
        ) as bar:
            try:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:  # a reset mid-way: what came is kept to resume
                raise DownloadError(f"{url}: the download broke off ({exc}); run again to resume") from None
    if total is not None and part.stat().st_size != total:
        raise DownloadError(f"{url}: got {part.stat().st_size} of {total} bytes; run again to resume")
    part.replace(dest)
    return dest


def unpack_channel(archive: Path, root: Path, channel: str) -> int:
    """Unpack one zip into ``root/<channel folder>/Actor_XX/``; returns the number of audio files.

    The official zips hold ``Actor_XX/...`` at the top; zips that already start with the channel
    folder are accepted too.
    """
    folder = CHANNEL_FOLDERS[channel]
    target = root / folder
    try:
        with zipfile.ZipFile(archive) as zf:
            count = 0
            for member in zf.infolist():
                name = member.filename
                if member.is_dir() or Path(name).suffix.lower() not in AUDIO_SUFFIXES:
                    continue
                parts = Path(name).parts
                if parts[0] == folder:
                    parts = parts[1:]
                if ".." in parts or not parts or not parts[0].startswith("Actor_"):
                    raise DownloadError(f"{archive}: unexpected member {name}")
                out = target.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(out, "wb") as dst:
                    while chunk := src.read(CHUNK_BYTES):
                        dst.write(chunk)
                count += 1
    except zipfile.BadZipFile:
        archive.unlink()
        raise DownloadError(f"{archive}: not a valid zip (deleted; run again to fetch it anew)") from None
    return count


def count_clips(root: Path, channel: str) -> int:
    folder = root / CHANNEL_FOLDERS[channel]
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if folder.is_dir() else 0


def download_ravdess(
    dest: Path, base_url: str = ZENODO_BASE_URL, expected: dict[str, int] = EXPECTED_COUNTS
) -> dict[str, int]:
    """Fetch, unpack and check both channels; returns the clip count per channel."""
    dest.mkdir(parents=True, exist_ok=True)
    counts = {}
    for channel, folder in CHANNEL_FOLDERS.items():
        if count_clips(dest, channel) == expected[channel]:
            logger.info("%s already complete (%d clips)", folder, expected[channel])
            counts[channel] = expected[channel]
            continue
        archive = fetch_resumable(f"{base_url}/{folder}.zip?download=1", dest / f"{folder}.zip")
        unpack_channel(archive, dest, channel)
        counts[channel] = count_clips(dest, channel)
        if counts[channel] != expected[channel]:
            raise DownloadError(f"{folder}: {counts[channel]} clips after unpacking, expected {expected[channel]}")
        archive.unlink()
        logger.info("%s: %d clips", folder, counts[channel])
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emostream-download", description=__doc__.splitlines()[0])
    p.add_argument("--dest", type=Path, help="RAVDESS root to create (default: $RAVDESS_DIR or ../shared/data/ravdess)")
    p.add_argument("--base-url", default=ZENODO_BASE_URL, help="where the two zips live (Zenodo record 1188976)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        counts = download_ravdess(resolve_data_dir(args.dest), args.base_url)
    except DownloadError as exc:
        logger.error("%s", exc)
        return 1
    logger.info("RAVDESS ready: %s", counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
