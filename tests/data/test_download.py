"""Resumable downloads (bertlib.core.assets.download_http / fetch_url) against a real HTTP server on 127.0.0.1.

The server (http.server in a thread) serves byte ranges itself, logs every request's Range and
If-Range headers and the body bytes it sent, and can drop the connection part-way through a body,
ignore Range, ignore If-Range, change the file between requests, or answer 503 — the failures a 20 GB
dump download meets. Expected bytes and hashes come from hashlib on the served bytes.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bertlib.core.assets import download_http, download_path, fetch_url
from bertlib.core.errors import AssetError

DUMP = "enwiki-latest-pages-articles.xml.bz2"


@dataclass
class Served:
    """One served file: its bytes and ETag."""

    body: bytes
    etag: str


@dataclass
class ServerState:
    files: dict[str, Served] = field(default_factory=dict)
    ranges: bool = True  # honour Range (206); False = always the whole file (200)
    if_range: bool = True  # honour If-Range; False = a broken server that sends the range anyway
    drops: list[int] = field(default_factory=list)  # for the next GETs of a file: body bytes sent before dropping
    unavailable: int = 0  # answer this many GETs with 503 first
    change_after_first: Served | None = None  # replaces the dump after its first GET
    log: list[dict] = field(default_factory=list)


def _handler(state: ServerState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_HEAD(self):
            f = state.files.get(self.path.lstrip("/"))
            self.send_response(200 if f else 404)
            self.send_header("Content-Length", str(len(f.body) if f else 0))
            self.end_headers()

        def do_GET(self):
            name = self.path.lstrip("/")
            entry = {
                "path": name,
                "range": self.headers.get("Range"),
                "if_range": self.headers.get("If-Range"),
                "status": None,
                "sent": 0,
            }
            state.log.append(entry)
            f = state.files.get(name)
            if f is None:
                entry["status"] = 404
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if state.unavailable:
                state.unavailable -= 1
                entry["status"] = 503
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            rng = self.headers.get("Range")
            fresh = not self.headers.get("If-Range") or not state.if_range or self.headers["If-Range"] == f.etag
            if rng and state.ranges and fresh:
                start = int(rng.removeprefix("bytes=").rstrip("-"))
            body = f.body[start:]
            if start:
                if start >= len(f.body):
                    entry["status"] = 416
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(f.body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(f.body) - 1}/{len(f.body)}")
            else:
                self.send_response(200)
            entry["status"] = 206 if start else 200
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f.etag)
            self.send_header("Accept-Ranges", "bytes" if state.ranges else "none")
            self.end_headers()
            cut = state.drops.pop(0) if state.drops and name == DUMP else None
            if name == DUMP and state.change_after_first is not None:
                state.files[DUMP], state.change_after_first = state.change_after_first, None
            payload = body if cut is None else body[:cut]
            entry["sent"] = len(payload)  # logged before writing: the client may be done before write() returns
            self.wfile.write(payload)
            self.wfile.flush()
            if cut is not None:  # drop the connection mid-body
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


@pytest.fixture
def server():
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def payload(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def dump_gets(state) -> list[dict]:
    return [e for e in state.log if e["path"] == DUMP]


def test_dropped_connections_resume_from_the_partial_offset(server, tmp_path):
    body = payload(3_000_000, 1)
    server.files[DUMP] = Served(body, '"v1"')
    server.drops = [700_000, 900_000]
    dest = download_http(f"{server.base}/{DUMP}", tmp_path / DUMP, sha256=sha256(body), progress=False, backoff=0.01)
    assert dest.read_bytes() == body
    gets = dump_gets(server)
    assert [g["range"] for g in gets] == [None, "bytes=700000-", "bytes=1600000-"]
    assert [g["if_range"] for g in gets] == [None, '"v1"', '"v1"']
    assert [g["status"] for g in gets] == [200, 206, 206]
    assert sum(g["sent"] for g in gets) == len(body)  # not one byte sent twice
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{DUMP}.lock", DUMP]  # no .part / .part.json left


def test_a_rerun_after_giving_up_resumes_the_kept_partial_file(server, tmp_path):
    body = payload(1_000_000, 2)
    server.files[DUMP] = Served(body, '"v1"')
    server.drops = [400_000]
    url = f"{server.base}/{DUMP}"
    with pytest.raises(AssetError) as err:
        download_http(url, tmp_path / DUMP, progress=False, retries=0)
    assert "rerun to resume" in str(err.value) and "\n" not in str(err.value)
    assert (tmp_path / f"{DUMP}.part").stat().st_size == 400_000
    assert not (tmp_path / DUMP).exists()
    dest = download_http(url, tmp_path / DUMP, sha256=sha256(body), progress=False)  # "the next run"
    assert dest.read_bytes() == body
    assert [g["range"] for g in dump_gets(server)] == [None, "bytes=400000-"]
    assert sum(g["sent"] for g in dump_gets(server)) == len(body)


def test_a_server_that_ignores_range_restarts_cleanly(server, tmp_path):
    body = payload(1_500_000, 3)
    server.files[DUMP] = Served(body, '"v1"')
    server.ranges = False
    server.drops = [600_000]
    dest = download_http(f"{server.base}/{DUMP}", tmp_path / DUMP, sha256=sha256(body), progress=False, backoff=0.01)
    assert dest.read_bytes() == body  # not the 600000 kept bytes + the whole file again
    gets = dump_gets(server)
    assert [g["range"] for g in gets] == [None, "bytes=600000-"]
    assert [g["status"] for g in gets] == [200, 200]


@pytest.mark.parametrize("honours_if_range", [True, False])
def test_a_changed_remote_file_is_not_spliced(server, tmp_path, honours_if_range):
    old, new = payload(1_200_000, 4), payload(1_200_000, 5)  # same size: only the ETag tells them apart
    server.files[DUMP] = Served(old, '"old"')
    server.change_after_first = Served(new, '"new"')
    server.if_range = honours_if_range
    server.drops = [500_000]
    dest = download_http(f"{server.base}/{DUMP}", tmp_path / DUMP, progress=False, backoff=0.01)
    assert dest.read_bytes() == new
    gets = dump_gets(server)
    assert gets[1]["range"] == "bytes=500000-" and gets[1]["if_range"] == '"old"'
    if honours_if_range:  # the server sends the new file whole
        assert [g["status"] for g in gets] == [200, 200]
    else:  # the server sends a range of the new file: its ETag differs, so the partial file is dropped
        assert [g["status"] for g in gets] == [200, 206, 200]
        assert gets[2]["range"] is None


def test_a_checksum_mismatch_is_one_line_and_leaves_no_file(server, tmp_path):
    body = payload(300_000, 6)
    server.files[DUMP] = Served(body, '"v1"')
    url = f"{server.base}/{DUMP}"
    wrong = "0" * 64
    with pytest.raises(AssetError) as err:
        download_http(url, tmp_path / DUMP, sha256=wrong, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and url in msg and wrong in msg and sha256(body) in msg
    assert not any(p.name.startswith(DUMP) for p in tmp_path.iterdir())  # neither the file nor a partial


def test_wikimedia_sha1sums_next_to_the_dump_are_used(server, tmp_path):
    body = payload(800_000, 7)
    sha1 = hashlib.sha1(body).hexdigest()
    server.files[DUMP] = Served(body, '"v1"')
    sums = f"{'1' * 40}  enwiki-latest-pages-articles-multistream.xml.bz2\n{sha1}  {DUMP}\n"
    server.files["enwiki-latest-sha1sums.txt"] = Served(sums.encode(), '"s"')
    url = f"{server.base}/{DUMP}"
    assert download_http(url, tmp_path / "ok" / DUMP, progress=False).read_bytes() == body
    assert "enwiki-latest-sha1sums.txt" in [e["path"] for e in server.log]

    bad = f"{'2' * 40}  {DUMP}\n"  # the published sha1 does not match the bytes served
    server.files["enwiki-latest-sha1sums.txt"] = Served(bad.encode(), '"s2"')
    with pytest.raises(AssetError) as err:
        download_http(url, tmp_path / "bad" / DUMP, progress=False)
    assert "sha1" in str(err.value) and "2" * 40 in str(err.value) and sha1 in str(err.value)
    assert not any(p.name.startswith(DUMP) for p in (tmp_path / "bad").iterdir())


def test_503_is_retried_and_fetch_url_caches(server, tmp_path):
    body = payload(200_000, 8)
    server.files["corpus.txt"] = Served(body, '"c"')
    server.unavailable = 2
    url = f"{server.base}/corpus.txt"
    path = fetch_url(url, sha256=sha256(body), cache_dir=tmp_path, progress=False)
    assert path == download_path(url, tmp_path) and path.read_bytes() == body
    assert [e["status"] for e in server.log] == [503, 503, 200]
    assert fetch_url(url, sha256=sha256(body), cache_dir=tmp_path, progress=False) == path
    assert len(server.log) == 3  # cached: no new request


def test_an_http_error_is_one_line_naming_the_url(server, tmp_path):
    url = f"{server.base}/missing.bz2"
    with pytest.raises(AssetError) as err:
        download_http(url, tmp_path / "missing.bz2", progress=False)
    assert url in str(err.value) and "404" in str(err.value) and "\n" not in str(err.value)


def test_a_partial_file_already_complete_is_verified_without_new_bytes(server, tmp_path):
    """A run that died after the last byte but before the rename: the rerun's range is empty (416)."""
    body = payload(250_000, 9)
    server.files[DUMP] = Served(body, '"v1"')
    (tmp_path / f"{DUMP}.part").write_bytes(body)
    (tmp_path / f"{DUMP}.part.json").write_text(json.dumps({"size": len(body), "etag": '"v1"'}))
    dest = download_http(f"{server.base}/{DUMP}", tmp_path / DUMP, sha256=sha256(body), progress=False)
    assert dest.read_bytes() == body
    assert [(g["range"], g["status"], g["sent"]) for g in dump_gets(server)] == [("bytes=250000-", 416, 0)]
