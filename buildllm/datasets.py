"""The data files of the curriculum, fetched by name and verified (all chapters).

``get_data_path("the-verdict")`` returns the path of a verified local copy:

1. if a data folder is named (the ``data_dir`` argument, else the environment
   variable ``BUILDLLM_DATA_DIR``), the file must already lie there and nothing
   is downloaded: this is how offline machines, the tests and CI work;
2. otherwise the file is downloaded once into the cache folder
   (``BUILDLLM_CACHE_DIR``, default ``~/.cache/buildllm/data``) and reused.

Every file is checked against its known size and SHA-256 each time it is
requested; a corrupt or partial copy is never returned. A damaged copy in the cache
is downloaded again only if its download record shows that we wrote it; any other
file is reported with what to do and never deleted (it may be the user's own copy).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

from .download import (
    ChecksumError,
    DownloadError,
    download_file,
    remove_if_downloaded,
    verify_file,
    write_record,
)
from .files import atomic_write
from .sources import DATASETS, RemoteFile

__all__ = ["DATASETS", "DatasetError", "configured_data_dir", "default_cache_dir", "get_data_path", "list_datasets",
           "load_json", "load_text"]

class DatasetError(RuntimeError):
    """A data file is unknown, missing or corrupt; the message says what to do."""


def list_datasets() -> list[str]:
    """Return the names `get_data_path` accepts."""
    return sorted(DATASETS)


def default_cache_dir() -> Path:
    """Return the folder downloads are cached in (``BUILDLLM_CACHE_DIR`` or ``~/.cache/buildllm/data``)."""
    env = os.environ.get("BUILDLLM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "buildllm" / "data"


def configured_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """Return the offline data folder (argument, else ``BUILDLLM_DATA_DIR``), or None."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("BUILDLLM_DATA_DIR")
    return Path(env).expanduser() if env else None


def _lookup(name: str) -> RemoteFile:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(
            f"Unknown dataset {name!r}. Known datasets: {', '.join(list_datasets())}."
        ) from None


def _how_to_place(spec: RemoteFile, where: Path) -> str:
    url = spec.urls[0]
    if spec.zip_member:
        return f"download {url}, unzip it and put the file {spec.zip_member} at {where}"
    return f"download {url} and save it as {where}"


ARCHIVE_MAX_SIZE = 64 * 1024 * 1024  # an archive whose own checksum is not published may not be larger


def _download(spec: RemoteFile, dest: Path, progress: bool) -> None:
    if spec.zip_member is None:
        download_file(spec.urls, dest, sha256=spec.sha256, size=spec.size, progress=progress)
        return
    # The archive's own checksum is not published; we verify the member we extract (its size
    # and SHA-256 are pinned), so the archive may come without a length, but never larger than
    # ARCHIVE_MAX_SIZE.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        archive = download_file(spec.urls, Path(tmp) / "archive.zip", progress=progress,
                                max_size=ARCHIVE_MAX_SIZE, require_length=False)
        with zipfile.ZipFile(archive) as zf:
            # Read only the one member we know by name: nothing in the archive can choose where
            # it is written (no path traversal). Its size is checked before it is unpacked, and
            # the unpacking stops at that size (a small archive cannot make us unpack gigabytes:
            # zipfile never returns more than the size the archive declares).
            info = zf.getinfo(spec.zip_member)
            if spec.size is not None and info.file_size != spec.size:
                raise ChecksumError(f"{spec.zip_member} in the archive would unpack to {info.file_size} bytes, "
                                    f"expected {spec.size}: not the expected file.")
            digest, written = hashlib.sha256(), 0
            with zf.open(info) as src, atomic_write(dest, "wb") as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    written += len(block)
                    if spec.size is not None and written > spec.size:
                        raise ChecksumError(f"{spec.zip_member} unpacks to more than {spec.size} bytes.")
                    digest.update(block)
                    out.write(block)
                # Checked before atomic_write renames the file into place: a wrong member never lands at dest.
                if spec.sha256 is not None and digest.hexdigest() != spec.sha256:
                    raise ChecksumError(f"{spec.zip_member} in the archive has SHA-256 {digest.hexdigest()}, "
                                        f"expected {spec.sha256}.")
        write_record(dest, written, digest.hexdigest(), spec.urls[0], spec.sha256 is not None)


def get_data_path(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """Return the path of a verified local copy of dataset `name`, downloading it if allowed."""
    spec = _lookup(name)
    offline_dir = configured_data_dir(data_dir)
    if offline_dir is not None:
        path = offline_dir / spec.relpath
        source = "the data folder given as data_dir" if data_dir is not None else "BUILDLLM_DATA_DIR"
        if not path.is_file():
            raise DatasetError(
                f"Dataset {name!r} not found: looked for {path} ({source} is {offline_dir}; "
                f"nothing is downloaded when a data folder is set). To fix: {_how_to_place(spec, path)}, "
                f"or unset BUILDLLM_DATA_DIR to download it automatically."
            )
        try:
            verify_file(path, spec.sha256, spec.size)
        except ChecksumError as exc:
            raise DatasetError(f"Dataset {name!r} at {path} is not usable: {exc}") from None
        return path

    path = default_cache_dir() / spec.relpath
    if path.exists():
        # A damaged copy that we downloaded is fetched again; any other is reported and left alone.
        try:
            verify_file(path, spec.sha256, spec.size)
            return path
        except ChecksumError as exc:
            if not remove_if_downloaded(path):
                raise DatasetError(f"Dataset {name!r} in the download cache is not usable: {exc}") from None
    if not download:
        raise DatasetError(
            f"Dataset {name!r} is not in the cache ({path}) and download=False. "
            f"To fix: {_how_to_place(spec, path)}, or set BUILDLLM_DATA_DIR to a folder that holds it."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _download(spec, path, progress)
    except (DownloadError, ChecksumError, zipfile.BadZipFile, KeyError, OSError, EOFError) as exc:
        # One piece of advice, ours: download_file's own ("place it at ...") would name the temporary archive of
        # a zipped dataset, and printed with ours it says the same thing twice in different words.
        why = "\nTried:\n  " + "\n  ".join(exc.attempts) if getattr(exc, "attempts", None) else f" {exc}"
        raise DatasetError(
            f"Dataset {name!r} could not be downloaded:{why}\n"
            f"To work offline: {_how_to_place(spec, path)}, or set BUILDLLM_DATA_DIR to a folder that holds "
            f"{spec.relpath}."
        ) from None
    return path


def load_text(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Return the text of a text dataset (e.g. ``"the-verdict"``), verified."""
    path = get_data_path(name, data_dir)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"Dataset {name!r} at {path} cannot be read ({exc}).") from None


def load_json(name: str, data_dir: str | os.PathLike | None = None):
    """Return the parsed content of a JSON dataset (e.g. ``"instruction-data"``), verified."""
    path = get_data_path(name, data_dir)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"Dataset {name!r} at {path} cannot be read ({exc}).") from None
