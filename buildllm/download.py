"""Verified, atomic, resumable downloads (used by `datasets`, `gpt2` and `smollm2`).

What a caller can count on:

- **Nothing half-written looks valid.** A file is written to ``<name>.part`` and renamed
  into place only after it was checked; a later call resumes a ``.part`` with an HTTP
  Range request.
- **Every file is verified, also when its SHA-256 is not published.** Where the registry
  (`buildllm.sources`) pins a size and SHA-256, they are checked. Where it does not, the
  server must say how long the file is (Content-Length), the download must deliver exactly
  that many bytes, and the size and SHA-256 of the complete file are then recorded in a
  small *download record* beside it (``.<name>.download.json``). Every later read checks
  the file against its record, so a file truncated or changed after its download is caught
  as surely as one with a pinned hash. (Trust on first use: the first download itself can
  only be checked for completeness.)
- **Broken transfers are retried**: connection resets, a chunked transfer that breaks off
  (``http.client.IncompleteRead``), timeouts and server errors, with back-off, resuming
  the bytes already received. A 404 moves on to the next URL at once.
- **A slow server cannot hang us.** Each request has a total deadline, not only a timeout
  per read: `timeout` seconds to connect and receive the headers, and then the body must
  arrive at `min_rate` bytes per second on average after a grace of `timeout` seconds (each
  byte received buys 1/`min_rate` s), so a request for N bytes ends after at most
  ``2 * timeout + N / min_rate`` seconds whatever the server does. A watchdog thread shuts
  the connection down when the deadline passes; the bytes received so far are kept and the
  next attempt resumes them. (A fixed total time per request would cut off honest multi-GB
  downloads on slow lines; a pure per-read timeout lets a server that sends one byte every
  few seconds keep us forever.)
- **A file this module did not download is never deleted.** A file already at the
  destination that fails its check is replaced by a fresh download only when its download
  record shows that this module put it there (then it was complete when written, and has
  been damaged since). A file without a record may be a user's own copy: it is reported
  (`ChecksumError`, saying what to do) and left exactly as it is. ``.part`` files, which
  this module alone writes, are removed when they turn out wrong. (To make a file you put in
  place of a downloaded one your own, delete its record ``.<name>.download.json``.)
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from .files import atomic_write_json, os_error_reason

CHUNK = 1 << 20
MIN_RATE = 64 * 1024  # bytes per second below which a request misses its deadline (see the module docstring)
RECORD_FORMAT = "buildllm-download-record"


class DownloadError(RuntimeError):
    """A file could not be downloaded from any of its URLs; the message says what to do.

    `attempts` lists each failed try ("URL (attempt i/n): why"), for callers that give their
    own advice (e.g. where to place a file that is unpacked from an archive) instead of ours.
    """

    def __init__(self, message: str, attempts: Iterable[str] = ()):
        super().__init__(message)
        self.attempts = list(attempts)


class ChecksumError(RuntimeError):
    """A file on disk does not have the expected size or SHA-256 (or cannot be read to check it)."""


class _NoLengthError(Exception):
    """The server did not say how long the file is, and nothing else can tell a truncated copy from a whole one."""


class _LocalFileError(Exception):
    """Writing the local .part file failed (permissions, disk full): retrying the download does not help."""


# --- Checking files -------------------------------------------------------------------------------------


def sha256_of(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def record_path(path: str | os.PathLike) -> Path:
    """Where the download record of `path` lies: ``.<name>.download.json`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.download.json")


def read_record(path: str | os.PathLike) -> dict | None:
    """The download record of `path` ({"size", "sha256", "url", ...}), or None if it has none.

    Raises `ChecksumError` for a record that exists but cannot be read: it is never
    silently ignored, since it is what vouches for the file.
    """
    record = record_path(path)
    if not record.exists():
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        if data.get("format") != RECORD_FORMAT or not isinstance(data.get("size"), int) \
                or not isinstance(data.get("sha256"), str) or len(data["sha256"]) != 64:
            raise ValueError("not a download record of this version")
    except (OSError, ValueError, AttributeError) as exc:
        raise ChecksumError(
            f"The download record {record} of {Path(path).name} cannot be read ({exc}), so the file cannot be "
            f"verified. Delete both files and download again."
        ) from None
    return data


def write_record(path: str | os.PathLike, size: int, sha256: str, url: str | None, pinned: bool) -> Path:
    """Write the download record of `path` atomically; return its path."""
    return atomic_write_json({"format": RECORD_FORMAT, "file": Path(path).name, "size": size, "sha256": sha256,
                              "url": url, "pinned": pinned,
                              "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, record_path(path))


def _check(path: Path, sha256: str | None, size: int | None, what: str) -> None:
    try:
        with open(path, "rb") as f:  # opened first: an unreadable file is reported as such, not as "0 bytes"
            actual_size = os.fstat(f.fileno()).st_size
            if size is not None and actual_size != size:
                raise ChecksumError(f"{path} has {actual_size} bytes, expected {size}{what}: the file is truncated "
                                    f"or corrupt.")
            if sha256 is not None:
                h = hashlib.sha256()
                for block in iter(lambda: f.read(CHUNK), b""):
                    h.update(block)
                if h.hexdigest() != sha256:
                    raise ChecksumError(f"{path} has SHA-256 {h.hexdigest()}, expected {sha256}{what}: the file is "
                                        f"corrupt or a different version.")
    except OSError as exc:
        raise ChecksumError(f"Cannot verify {path}: {os_error_reason(exc)}.") from None


def verify_file(path: str | os.PathLike, sha256: str | None = None, size: int | None = None) -> None:
    """Raise `ChecksumError` unless `path` has the expected size and SHA-256.

    Values that are not given (not pinned) come from the file's download record, when it
    has one; a file with neither pins nor a record (placed by hand, hash unknown) passes.
    """
    path = Path(path)
    record = read_record(path) if sha256 is None or size is None else None
    try:
        _check(path, sha256, size, "")
        if record is not None:
            _check(path, record["sha256"] if sha256 is None else None, record["size"] if size is None else None,
                   f" (recorded at its download in {record_path(path).name})")
    except ChecksumError as exc:
        raise ChecksumError(f"{exc} It was not used (and not deleted). Delete it and download it again.") from None


def remove_if_downloaded(path: str | os.PathLike) -> bool:
    """Delete `path` and its download record if the record shows this module downloaded it; return whether it did.

    Call it only for a file that failed its check. A file without a (readable) record is
    never deleted: it may be a copy the user placed there.
    """
    path = Path(path)
    try:
        if read_record(path) is None:
            return False
    except ChecksumError:
        return False
    path.unlink(missing_ok=True)
    record_path(path).unlink(missing_ok=True)
    return True


# --- One HTTP request with a total deadline ----------------------------------------------------------


class _Deadline:
    """A watchdog that shuts the request's socket down when its deadline passes, so no read can block past it."""

    def __init__(self, seconds: float):
        self.expires = time.monotonic() + seconds
        self.expired = False
        self.sock: socket.socket | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def extend(self, seconds: float) -> None:
        """Let the request run until `seconds` from now."""
        self.expires = time.monotonic() + seconds

    def _watch(self) -> None:
        while not self._done.wait(max(0.0, self.expires - time.monotonic())):
            if time.monotonic() >= self.expires:
                self.expired = True
                if self.sock is not None:
                    try:  # the base class's shutdown also wakes a thread blocked in an SSL read
                        socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
                    except OSError:
                        pass
                return

    def close(self) -> None:
        self._done.set()


def _tracked(connection_class, deadline: _Deadline):
    """`connection_class` whose socket is handed to `deadline` as soon as it connects (also after redirects)."""

    class Tracked(connection_class):
        def connect(self):
            super().connect()
            deadline.sock = self.sock

    return Tracked


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(_tracked(http.client.HTTPConnection, self.deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, req):
        return self.do_open(_tracked(http.client.HTTPSConnection, self.deadline), req, context=self._context)


def open_url(request: urllib.request.Request | str, timeout: float, deadline: _Deadline | None = None):
    """Open a URL; with `deadline`, its watchdog can cut the connection. Proxy settings are read on every call.

    (`urllib.request.urlopen` caches the proxies it saw on first use for the whole process.)
    """
    if deadline is None:
        return urllib.request.build_opener().open(request, timeout=timeout)
    opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline))
    return opener.open(request, timeout=timeout)


def reachable(urls: Iterable[str], timeout: float = 10.0) -> bool:
    """True if any server in `urls` answers a HEAD request at all (even with an HTTP error) within `timeout` s."""
    for url in urls:
        deadline = _Deadline(timeout)
        try:
            request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "buildllm"})
            with open_url(request, timeout, deadline):
                return True
        except urllib.error.HTTPError:
            return True  # the server answered; a download reports the details
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            continue
        finally:
            deadline.close()
    return False


def _total_size(response, start: int) -> int | None:
    """The full file size the response announces (Content-Range's total, else start + Content-Length), or None."""
    content_range = response.headers.get("Content-Range")
    if response.status == 206 and content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        if total.isdigit():
            return int(total)
    length = response.headers.get("Content-Length")
    if length is not None and length.strip().isdigit():
        return start + int(length)
    return None


def _fetch_once(url: str, part: Path, timeout: float, min_rate: float, progress: bool, desc: str,
                size: int | None, require_length: bool, max_size: int | None) -> None:
    """Download `url` into `part` (resuming it where the server allows); raise on any incomplete transfer."""
    # Imported here, not at module level: importing tqdm.auto in a notebook without ipywidgets
    # prints a warning, and most notebooks import `buildllm.datasets` without downloading anything.
    from tqdm.auto import tqdm

    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "buildllm"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    deadline = _Deadline(timeout)  # connecting and the headers
    try:
        with open_url(request, timeout, deadline) as response:
            if start and response.status != 206:  # the server ignored the Range header: start over
                start = 0
            total = _total_size(response, start)
            if total is None and size is None and require_length:
                raise _NoLengthError(f"{url} did not say how long the file is (no Content-Length), so a truncated "
                                     f"transfer could not be told from a complete one")
            expected = size if size is not None else total
            if size is not None and total is not None and total != size:
                raise ChecksumError(f"the server offers {total} bytes, expected {size}: a truncated or different file")
            limit = expected if expected is not None else max_size
            if max_size is not None and total is not None and total > max_size:
                raise ChecksumError(f"the server offers {total} bytes, more than the {max_size} allowed for this file")
            deadline.extend(timeout)  # the grace period; every byte received adds 1/min_rate seconds
            body_start = time.monotonic()
            try:
                f = open(part, "ab" if start else "wb")
            except OSError as exc:
                raise _LocalFileError(f"cannot write {part}: {exc.strerror or exc}") from None
            with f, tqdm(total=expected, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                         disable=not progress, leave=False) as bar:
                received = start
                while True:
                    block = response.read1(CHUNK)  # returns what one read gives: never waits to fill CHUNK
                    if not block:
                        break
                    received += len(block)
                    if limit is not None and received > limit:
                        raise ChecksumError(f"the server sent more than the expected {limit} bytes")
                    try:
                        f.write(block)
                    except OSError as exc:
                        raise _LocalFileError(f"cannot write {part}: {exc.strerror or exc}") from None
                    bar.update(len(block))
                    deadline.expires = body_start + timeout + (received - start) / min_rate
    except (OSError, http.client.HTTPException, ValueError):
        if deadline.expired:
            raise TimeoutError(f"too slow: the server sent less than {min_rate / 1024:g} KiB/s on average (the "
                               f"request's deadline passed; the bytes received are kept)") from None
        raise
    finally:
        deadline.close()
    if deadline.expired:  # the watchdog fired between two reads: the end we saw may be an artefact of it
        raise TimeoutError(f"too slow: the server sent less than {min_rate / 1024:g} KiB/s on average (the "
                           f"request's deadline passed; the bytes received are kept)")
    if expected is not None and received < expected:
        # The connection dropped: keep the .part file so that the next attempt resumes it.
        raise ConnectionError(f"connection closed after {received - start} of {expected - start} bytes")


def download_file(
    urls: str | Iterable[str],
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    min_rate: float = MIN_RATE,
    max_size: int | None = None,
    require_length: bool | None = None,
    progress: bool = True,
) -> Path:
    """Download the first URL that works into `dest`, verified, atomically; return `dest`.

    `urls` is one URL or a list (primary first, then mirrors). `sha256` and `size` are the
    pinned values where they are known (else the server's Content-Length is required and
    the result is recorded, see the module docstring); `max_size` caps a file whose size
    is not known. `require_length=False` accepts a body of unannounced length (only for
    files that are verified otherwise, e.g. an archive whose member has a pinned hash). An existing `dest` that verifies is kept without any request; one that
    does not is reported with `ChecksumError` and left untouched.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"Cannot create the folder {dest.parent} for {dest.name}: {exc.strerror or exc}. Choose "
                            f"another folder or fix its permissions.") from None
    if dest.exists():
        try:
            verify_file(dest, sha256, size)
            return dest
        except ChecksumError:
            if not remove_if_downloaded(dest):
                raise  # not ours: reported, left alone
    record_path(dest).unlink(missing_ok=True)  # a record without its file is stale (ours: only we write them)
    pinned = sha256 is not None
    if require_length is None:
        require_length = not pinned

    part = dest.with_name(dest.name + ".part")
    if size is not None and part.exists() and part.stat().st_size >= size:
        # A complete .part from a run stopped before its rename: nothing is left to resume.
        try:
            _check(part, sha256, size, "")
            return _finish(part, dest, size, sha256, None, pinned)
        except ChecksumError:
            part.unlink()
    errors: list[str] = []
    for url in urls:
        for attempt in range(1, retries + 1):
            try:
                _fetch_once(url, part, timeout, min_rate, progress, dest.name, size, require_length, max_size)
                _check(part, sha256, size, "")
                return _finish(part, dest, part.stat().st_size, sha256, url, pinned)
            except ChecksumError as exc:
                part.unlink(missing_ok=True)  # a bad file is never resumed
                errors.append(f"{url}: {exc}")
            except _NoLengthError as exc:
                part.unlink(missing_ok=True)
                errors.append(f"{url}: {exc}")
                break
            except _LocalFileError as exc:
                raise DownloadError(f"Could not download {dest.name}: {exc}. Free some disk space or fix the "
                                    f"folder's permissions, then run again.") from None
            except urllib.error.HTTPError as exc:
                errors.append(f"{url} (attempt {attempt}/{retries}): HTTP {exc.code} {exc.reason}")
                if exc.code in (403, 404, 410):
                    break  # retrying a missing file does not help; try the next URL
                if exc.code == 416:  # our .part is not a prefix of the server's file: start again from zero
                    part.unlink(missing_ok=True)
                if attempt < retries:
                    time.sleep(min(2 ** attempt, 10))
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                # Resets, refused connections, timeouts, IncompleteRead, a missed deadline: retry, resuming.
                reason = getattr(exc, "reason", None) or exc
                errors.append(f"{url} (attempt {attempt}/{retries}): {type(exc).__name__}: {reason}")
                if attempt < retries:
                    time.sleep(min(2 ** attempt, 10))
    raise DownloadError(
        f"Could not download {dest.name}.\nTried:\n  " + "\n  ".join(errors)
        + f"\nIf this machine has no network, download the file elsewhere from\n  {urls[0]}\n"
        f"and place it at {dest}",
        attempts=errors,
    )


def _finish(part: Path, dest: Path, size: int, sha256: str | None, url: str | None, pinned: bool) -> Path:
    """Record the verified `part`, then rename it to `dest` (the record first: a file never lacks its record)."""
    write_record(dest, size, sha256 or sha256_of(part), url, pinned)
    os.replace(part, dest)  # atomic on POSIX and Windows
    return dest
