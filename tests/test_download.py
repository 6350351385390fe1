"""Verified, atomic, resumable downloads, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import random
import socket
import threading
from dataclasses import dataclass, field

import pytest

import buildllm.download as download
from buildllm.download import ChecksumError, DownloadError, download_file, sha256_of, verify_file

PAYLOAD = random.Random(0).randbytes(300_000)
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Route:
    """What the test server answers for one path."""

    body: bytes = b""
    status: int = 200
    honor_range: bool = True  # answer "Range: bytes=N-" with 206 and the rest of the body
    truncate_to: int | None = None  # announce the full length, send only this many bytes, hang up
    corrupt: bool = False  # flip one byte in the middle (same length, wrong SHA-256)


@dataclass
class Request:
    path: str
    range: str | None


@dataclass
class LocalServer:
    """A real HTTP server in a thread; `routes` says what each path returns, `requests` logs every request."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    httpd: http.server.ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


def _make_handler(server: LocalServer):
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 10  # a stuck client never blocks the test forever

        def do_GET(self):  # noqa: N802 (http.server's naming)
            server.requests.append(Request(self.path, self.headers.get("Range")))
            route = server.routes.get(self.path)
            if route is None or route.status != 200:
                self.send_error(route.status if route else 404)
                return
            body = route.body
            if route.corrupt:
                middle = len(body) // 2
                body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
            start = 0
            range_header = self.headers.get("Range")
            if range_header and route.honor_range:
                start = int(range_header.removeprefix("bytes=").rstrip("-"))
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            rest = body[start:]
            self.send_header("Content-Length", str(len(rest)))
            self.end_headers()
            if route.truncate_to is not None:
                rest = rest[:route.truncate_to]
                self.close_connection = True
            self.wfile.write(rest)

        def log_message(self, *args):  # keep the test output quiet
            pass

    return Handler


@pytest.fixture
def server():
    """A LocalServer listening on 127.0.0.1, shut down after the test."""
    local = LocalServer()
    local.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(local))
    local.httpd.daemon_threads = True
    thread = threading.Thread(target=local.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield local
    local.httpd.shutdown()
    local.httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def no_sleep(monkeypatch):
    """Skip the back-off pauses between retries; return the list of pauses asked for."""
    pauses: list[float] = []
    monkeypatch.setattr(download.time, "sleep", pauses.append)
    return pauses


def closed_port_url(path: str = "/file") -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def fetch(urls, dest, **kwargs):
    kwargs = {"sha256": PAYLOAD_SHA256, "size": len(PAYLOAD), "progress": False, "timeout": 10, **kwargs}
    return download_file(urls, dest, **kwargs)


def leftovers(folder) -> list[str]:
    """The files in `folder`, without the download records (hidden ``.<name>.download.json``) beside them."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".download.json"))


# --- verify_file --------------------------------------------------------------------------


def test_verify_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert sha256_of(path) == PAYLOAD_SHA256
    verify_file(path, PAYLOAD_SHA256, len(PAYLOAD))
    with pytest.raises(ChecksumError, match="has 300000 bytes, expected 300001: the file is truncated"):
        verify_file(path, PAYLOAD_SHA256, len(PAYLOAD) + 1)
    with pytest.raises(ChecksumError, match=r"It was not used \(and not deleted\). Delete it and download it again"):
        verify_file(path, "0" * 64, len(PAYLOAD))


# --- downloads ----------------------------------------------------------------------------


def test_successful_download_is_verified(server, tmp_path):
    server.routes["/file"] = Route(PAYLOAD)
    dest = tmp_path / "sub" / "file.bin"
    assert fetch(server.url("/file"), dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == ["file.bin"]  # no .part left behind
    assert server.requests == [Request("/file", None)]


def test_download_without_known_checksum(server, tmp_path):
    server.routes["/file"] = Route(b"any bytes")
    dest = fetch(server.url("/file"), tmp_path / "f", sha256=None, size=None)
    assert dest.read_bytes() == b"any bytes"


def test_corrupt_body_never_becomes_the_file(server, tmp_path, no_sleep):
    server.routes["/file"] = Route(PAYLOAD, corrupt=True)
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match="SHA-256 .* expected " + PAYLOAD_SHA256):
        fetch(server.url("/file"), dest, retries=2)
    assert leftovers(tmp_path) == []  # neither the file nor a full-length .part that could look valid
    assert len(server.requests) == 2  # retried, each time from the start (a bad .part is never resumed)
    assert all(r.range is None for r in server.requests)


def test_longer_body_than_expected_is_rejected(server, tmp_path, no_sleep):
    server.routes["/file"] = Route(PAYLOAD + b"extra")
    with pytest.raises(DownloadError, match="server offers 300005 bytes, expected 300000"):
        fetch(server.url("/file"), tmp_path / "file.bin", retries=1)
    assert leftovers(tmp_path) == []


def test_truncated_body_is_a_download_error_and_resumes_later(server, tmp_path, no_sleep):
    server.routes["/file"] = Route(PAYLOAD, truncate_to=100_000)
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match="Could not download file.bin") as info:
        fetch(server.url("/file"), dest, retries=2)
    assert "place it at" in str(info.value)
    assert not dest.exists()
    part = tmp_path / "file.bin.part"
    # Only a partial .part may stay (for resuming); its name and size say it is not the file.
    assert leftovers(tmp_path) == ["file.bin.part"]
    assert part.stat().st_size == 200_000  # two attempts of 100_000 bytes: the second resumed the first
    assert [r.range for r in server.requests] == [None, "bytes=100000-"]
    assert "connection closed after 100000 of 200000 bytes" in str(info.value)
    assert no_sleep == [2]

    # The connection is repaired: the next call fetches only the missing bytes.
    server.routes["/file"] = Route(PAYLOAD)
    fetch(server.url("/file"), dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1].range == "bytes=200000-"
    assert leftovers(tmp_path) == ["file.bin"]


def test_resume_a_part_file_with_range(server, tmp_path):
    server.routes["/file"] = Route(PAYLOAD)
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:123_456])
    fetch(server.url("/file"), dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [Request("/file", "bytes=123456-")]
    assert leftovers(tmp_path) == ["file.bin"]


def test_complete_part_file_is_renamed_without_a_request(server, tmp_path):
    """A run stopped between the last byte and the rename left a full .part: no Range request (a 416)."""
    server.routes["/file"] = Route(PAYLOAD)
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD)
    fetch(server.url("/file"), dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == []
    assert leftovers(tmp_path) == ["file.bin"]


def test_full_length_corrupt_part_file_is_downloaded_again(server, tmp_path):
    server.routes["/file"] = Route(PAYLOAD)
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"x" * len(PAYLOAD))
    fetch(server.url("/file"), dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [Request("/file", None)]


def test_server_that_ignores_range_starts_over(server, tmp_path):
    server.routes["/file"] = Route(PAYLOAD, honor_range=False)
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:1000])
    fetch(server.url("/file"), dest)
    assert dest.read_bytes() == PAYLOAD  # not 1000 bytes duplicated in front


def test_corrupt_part_file_is_discarded_then_downloaded_again(server, tmp_path, no_sleep):
    server.routes["/file"] = Route(PAYLOAD)
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"\0" * 5000)  # wrong bytes from a broken earlier run
    fetch(server.url("/file"), dest)
    assert dest.read_bytes() == PAYLOAD
    assert [r.range for r in server.requests] == ["bytes=5000-", None]


def test_backup_url_used_when_primary_is_missing(server, tmp_path, no_sleep):
    server.routes["/backup"] = Route(PAYLOAD)  # "/primary" is not served: 404
    dest = fetch([server.url("/primary"), server.url("/backup")], tmp_path / "file.bin")
    assert dest.read_bytes() == PAYLOAD
    assert server.paths() == ["/primary", "/backup"]  # a 404 is not retried
    assert no_sleep == []


def test_existing_valid_file_is_not_downloaded_again(server, tmp_path):
    server.routes["/file"] = Route(PAYLOAD)
    dest = tmp_path / "file.bin"
    dest.write_bytes(PAYLOAD)
    fetch(server.url("/file"), dest)
    assert server.requests == []


def test_existing_corrupt_file_is_reported_and_kept(server, tmp_path):
    """A file this code did not download may be the user's own: it is reported, never deleted or replaced."""
    server.routes["/file"] = Route(PAYLOAD)
    dest = tmp_path / "file.bin"
    dest.write_bytes(PAYLOAD[:-1] + b"?")
    with pytest.raises(ChecksumError, match=r"not deleted\). Delete it and download it again"):
        fetch(server.url("/file"), dest)
    assert dest.read_bytes() == PAYLOAD[:-1] + b"?"
    assert server.paths() == []


def test_unreachable_server_says_where_to_put_the_file(tmp_path, no_sleep):
    dest = tmp_path / "file.bin"
    url = closed_port_url()
    with pytest.raises(DownloadError) as info:
        fetch(url, dest, retries=3)
    message = str(info.value)
    assert f"{url} (attempt 3/3)" in message  # the OS's words for a refused connection vary
    assert f"download the file elsewhere from\n  {url}\nand place it at {dest}" in message
    assert no_sleep == [2, 4]  # back-off between the three attempts
    assert leftovers(tmp_path) == []
