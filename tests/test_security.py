"""Token, origins, connection limit, and model reload on SIGHUP."""

import json
import shutil

import onnx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from emostream.inference.model import EmotionModel
from emostream.inference.pipeline import PipelineConfig
from emostream.stream.daemon import EmotionDaemon, ServerConfig
from emostream.stream.daemon import main as daemon_main
from emostream.stream.sources import FileSource


@pytest.fixture
def make(tiny_onnx, tmp_path):
    import soundfile as sf
    from synth import SR, speechlike

    audio = tmp_path / "a.wav"
    sf.write(audio, speechlike(4.0, seed=1), SR)

    def _make(model_path=tiny_onnx, **server):
        return EmotionDaemon(EmotionModel(model_path), FileSource(audio, realtime=True, loop=True),
                             PipelineConfig(hop_s=0.1), ServerConfig(port=0, **server))

    return _make


def status_of(url, **kwargs):
    try:
        with connect(url, **kwargs) as ws:
            return json.loads(ws.recv(timeout=10))["type"]
    except InvalidStatus as exc:
        return exc.response.status_code


def test_token_is_required_when_set(make, daemon_thread):
    with daemon_thread(make(token="s3cret")) as running:
        assert status_of(running.url) == 401
        assert status_of(running.url + "/?token=wrong") == 401
        assert status_of(running.url + "/?token=s3cret") == "hello"
        assert status_of(running.url, additional_headers={"Authorization": "Bearer s3cret"}) == "hello"
        assert status_of(running.url + "/?token=%C3%A9") == 401  # beyond ASCII: refused, not a 500


def test_the_subscriber_tells_a_missing_token_from_a_refused_one(make, daemon_thread):
    """Before, a wrong token was answered "the daemon wants a token" — as if none had been given."""
    import asyncio

    from emostream.stream.subscriber import SubscribeError, subscribe

    with daemon_thread(make(token="s3cret")) as running:
        for url, token, says in [(running.url, None, "wants a token"),
                                 (running.url + "/?token=", None, "wants a token"),
                                 (running.url, "wrong", "refused the token"),
                                 (running.url + "/?token=wrong", None, "refused the token")]:
            with pytest.raises(SubscribeError, match=says):
                asyncio.run(subscribe(url, count=1, token=token))


def test_a_base64_token_works_as_written_in_the_url(make, daemon_thread):
    """Before: '+' in ``?token=`` was read as a space (form decoding), so ``openssl rand -base64`` tokens failed."""
    with daemon_thread(make(token="ab+c/d=")) as running:
        assert status_of(running.url + "/?token=ab+c/d=") == "hello"
        assert status_of(running.url + "/?token=ab%2Bc%2Fd%3D") == "hello"  # percent-encoded, as a client may
        assert status_of(running.url + "/?token=ab%20c/d=") == 401  # a space is not a plus
        bearer = {"Authorization": "Bearer ab+c/d="}
        assert status_of(running.url + "/?token=", additional_headers=bearer) == "hello"  # empty: the header speaks


def test_only_get_and_head_are_answered_and_head_has_no_body(make, daemon_thread):
    import http.client

    with daemon_thread(make()) as running:
        port = running.daemon.port
        for method, status in (("DELETE", 405), ("POST", 405), ("OPTIONS", 405), ("HEAD", 200), ("GET", 200)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(method, "/healthz")
            response = conn.getresponse()
            body = response.read()
            conn.close()
            assert response.status == status, method
            if method == "HEAD":  # the GET's length, announced; nothing sent
                assert body == b"" and int(response.headers["Content-Length"]) > 10
            elif status == 405:
                assert response.headers["Allow"] == "GET, HEAD"


def test_a_token_beyond_printable_ascii_is_refused_at_start_without_showing_it():
    for token in ("clé-ünïcode", "tab\there", "bad\udcffbyte"):  # the last: a file's stray byte, surrogate-escaped
        with pytest.raises(ValueError, match="printable ASCII") as refused:
            ServerConfig(token=token).check()
        assert token not in str(refused.value)


def test_a_request_token_beyond_ascii_is_a_401_by_query_and_by_header(make, daemon_thread):
    with daemon_thread(make(token="s3cret")) as running:
        assert status_of(running.url + "/?token=s3cr%C3%A9t") == 401
        assert status_of(running.url, additional_headers={"Authorization": "Bearer s3cr\u00e9t"}) == 401


def test_browser_origins_other_than_the_daemons_own_are_refused(make, daemon_thread):
    with daemon_thread(make(allowed_origins=("https://dash.example",))) as running:
        own = f"http://127.0.0.1:{running.daemon.port}"
        assert status_of(running.url, origin="http://evil.example") == 403
        assert status_of(running.url, origin=own) == "hello"
        assert status_of(running.url, origin="https://dash.example") == "hello"
        assert status_of(running.url) == "hello"  # command-line clients send no Origin


def test_connection_limit(make, daemon_thread):
    with daemon_thread(make(max_subscribers=2)) as running:
        with connect(running.url) as a, connect(running.url) as b:
            a.recv(timeout=10), b.recv(timeout=10)
            assert status_of(running.url) == 503


def test_binding_beyond_loopback_needs_a_token(tiny_onnx, caplog):
    assert daemon_main(["--model", str(tiny_onnx), "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--token" in caplog.records[-1].getMessage()
    with pytest.raises(ValueError, match="token"):
        ServerConfig(host="0.0.0.0").check()
    ServerConfig(host="0.0.0.0", token="x").check()


def test_reload_keeps_the_old_model_when_the_new_file_is_bad(make, tiny_onnx, tmp_path, onnx_with_run_id,
                                                             daemon_thread):
    live = tmp_path / "live.onnx"
    shutil.copy(tiny_onnx, live)
    with daemon_thread(make(model_path=live)) as running:
        daemon = running.daemon
        old = daemon.model
        live.write_bytes(b"corrupt")
        assert daemon.reload_model() is False and daemon.model is old
        live.write_bytes(onnx_with_run_id("other-run", labels=list("abcdefgh")))
        assert daemon.reload_model() is False and daemon.model is old  # labels changed: refused
        corrupt = onnx.load_from_string(onnx_with_run_id("corrupt"))
        for entry in corrupt.metadata_props:
            if entry.key == "emostream.labels":
                entry.value = "5"  # valid JSON of the wrong type: once a TypeError that killed the reload thread
        live.write_bytes(corrupt.SerializeToString())
        assert daemon.reload_model() is False and daemon.model is old
        live.write_bytes(onnx_with_run_id("retrained"))
        assert daemon.reload_model() is True
        assert daemon.model.contract.run_id == "retrained" and daemon.pipeline.model is daemon.model
        with connect(running.url) as ws:
            assert json.loads(ws.recv(timeout=10))["model"]["run_id"] == "retrained"
            assert json.loads(ws.recv(timeout=10))["type"] == "scores"  # and the stream goes on
