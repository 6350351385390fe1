"""Verified, atomic, resumable downloads (used by `datasets` and `gpt2`).

Every file we fetch has a known size and, where we know it, a SHA-256. A file is
written to ``<name>.part`` first and renamed into place only after it has been
checked, so a crashed or partial download never leaves a file that looks valid.
A later call resumes a ``.part`` file with an HTTP Range request.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable

CHUNK = 1 << 20


def open_url(request: urllib.request.Request | str, timeout: float):
    """Open a URL with a fresh opener, so proxy settings are read from the environment on every call.

    (`urllib.request.urlopen` caches the proxies it saw on first use for the whole process.)
    """
    return urllib.request.build_opener().open(request, timeout=timeout)


class DownloadError(RuntimeError):
    """A file could not be downloaded from any of its URLs."""


class ChecksumError(RuntimeError):
    """A file on disk does not have the expected size or SHA-256."""


def sha256_of(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str | os.PathLike, sha256: str | None = None, size: int | None = None) -> None:
    """Raise `ChecksumError` unless `path` has the expected size and SHA-256."""
    path = Path(path)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(
            f"{path} has {actual_size} bytes, expected {size}: the file is truncated or corrupt. "
            f"Delete it and download it again."
        )
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256:
            raise ChecksumError(
                f"{path} has SHA-256 {actual}, expected {sha256}: the file is corrupt or a different "
                f"version. It was not used. Delete it and download it again."
            )


def _fetch_once(url: str, part: Path, timeout: float, progress: bool, desc: str) -> None:
    """Download `url` into `part`, resuming from its current length when the server allows it."""
    # Imported here, not at module level: importing tqdm.auto in a notebook without ipywidgets
    # prints a warning, and most notebooks import `buildllm.datasets` without downloading anything.
    from tqdm.auto import tqdm

    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "buildllm"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    with open_url(request, timeout) as response:
        if start and response.status != 206:  # server ignored the Range header: start over
            start = 0
        remaining = response.headers.get("Content-Length")
        total = start + int(remaining) if remaining is not None else None
        mode = "ab" if start else "wb"
        with open(part, mode) as f, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=desc, disable=not progress, leave=False,
        ) as bar:
            received = 0
            for block in iter(lambda: response.read(CHUNK), b""):
                f.write(block)
                bar.update(len(block))
                received += len(block)
    if remaining is not None and received < int(remaining):
        # The connection dropped: keep the .part file so that the next attempt resumes it.
        raise ConnectionError(f"connection closed after {received} of {remaining} bytes")


def download_file(
    urls: str | Iterable[str],
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download the first URL that works into `dest`, verified, atomically; return `dest`.

    `urls` is one URL or a list (primary first, then backups). An existing `dest`
    that verifies is kept; one that does not is deleted and downloaded again.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        try:
            verify_file(dest, sha256, size)
            return dest
        except ChecksumError:
            dest.unlink()

    part = dest.with_name(dest.name + ".part")
    if size is not None and part.exists() and part.stat().st_size >= size:
        # A complete .part from a run stopped before its rename: nothing is left to resume.
        try:
            verify_file(part, sha256, size)
            os.replace(part, dest)
            return dest
        except ChecksumError:
            part.unlink()
    errors: list[str] = []
    for url in urls:
        for attempt in range(1, retries + 1):
            try:
                _fetch_once(url, part, timeout, progress, dest.name)
                if size is not None and part.stat().st_size > size:
                    raise ChecksumError(f"{url} sent more than the expected {size} bytes")
                verify_file(part, sha256, size)
                os.replace(part, dest)  # atomic on POSIX and Windows
                return dest
            except ChecksumError as exc:
                part.unlink(missing_ok=True)  # a bad file is never resumed
                errors.append(f"{url}: {exc}")
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                errors.append(f"{url} (attempt {attempt}/{retries}): {exc}")
                if isinstance(exc, urllib.error.HTTPError) and exc.code in (403, 404, 410):
                    break  # retrying a missing file does not help; try the next URL
                if attempt < retries:
                    time.sleep(min(2 ** attempt, 10))
    raise DownloadError(
        f"Could not download {dest.name}.\nTried:\n  " + "\n  ".join(errors)
        + f"\nIf this machine has no network, download the file elsewhere from\n  {urls[0]}\n"
        f"and place it at {dest}"
    )
