"""emostream-download against a local HTTP server that serves small zips built here (no network)."""

import http.server
import threading
import zipfile

import pytest
from synth import tone

from emostream.train.data import index_ravdess
from emostream.train.download import DownloadError, download_ravdess, fetch_resumable


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (name → bytes) with HTTP Range support; counts the bytes it sent."""

    files: dict[str, bytes] = {}
    sent: list[int] = []

    def do_GET(self):
        name = self.path.split("?")[0].rsplit("/", 1)[-1]
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.sent.append(len(body) - start)  # before writing: the client may finish before we return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    RangeHandler.files, RangeHandler.sent = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/files", RangeHandler
    httpd.shutdown()


def official_zip(tmp_path, write_clip, names: list[str]) -> bytes:
    """A zip laid out like the official ones: Actor_XX/<name>.wav at the top."""
    path = tmp_path / "built.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i, name in enumerate(names):
            clip = write_clip(f"src/{name}", tone(0.3, 200.0 + 50 * i))
            zf.write(clip, f"Actor_{name[-6:-4]}/{name}")
    return path.read_bytes()


SPEECH = ["03-01-01-01-01-01-01.wav", "03-01-05-02-01-02-02.wav", "03-01-08-01-02-01-03.wav"]
SONG = ["03-02-03-01-01-01-01.wav", "03-02-04-02-02-02-02.wav"]


def test_download_unpacks_into_the_official_layout(tmp_path, write_clip, server):
    base_url, handler = server
    handler.files["Audio_Speech_Actors_01-24.zip"] = official_zip(tmp_path, write_clip, SPEECH)
    handler.files["Audio_Song_Actors_01-24.zip"] = official_zip(tmp_path, write_clip, SONG)
    dest = tmp_path / "ravdess"
    counts = download_ravdess(dest, base_url, expected={"speech": 3, "song": 2})
    assert counts == {"speech": 3, "song": 2}
    assert (dest / "Audio_Speech_Actors_01-24/Actor_02/03-01-05-02-01-02-02.wav").is_file()
    assert len(index_ravdess(dest).frame) == 5
    assert not list(dest.glob("*.zip*"))  # archives removed once checked
    sent = len(handler.sent)
    assert download_ravdess(dest, base_url, expected={"speech": 3, "song": 2}) == counts
    assert len(handler.sent) == sent  # complete tree: nothing fetched again


def test_download_resumes_a_partial_file(tmp_path, server):
    base_url, handler = server
    body = bytes(range(256)) * 4000
    handler.files["big.zip"] = body
    dest = tmp_path / "big.zip"
    (tmp_path / "big.zip.part").write_bytes(body[:300_000])
    fetch_resumable(f"{base_url}/big.zip?download=1", dest)
    assert dest.read_bytes() == body
    assert handler.sent == [len(body) - 300_000]


def test_wrong_clip_count_is_an_error(tmp_path, write_clip, server):
    base_url, handler = server
    handler.files["Audio_Speech_Actors_01-24.zip"] = official_zip(tmp_path, write_clip, SPEECH)
    with pytest.raises(DownloadError, match="3 clips after unpacking, expected 1440"):
        download_ravdess(tmp_path / "ravdess", base_url)


def test_missing_file_on_server_is_a_one_line_error(tmp_path, server):
    base_url, _ = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_resumable(f"{base_url}/absent.zip", tmp_path / "absent.zip")
