"""The data files of the curriculum, fetched by name and verified (all chapters).

``get_data_path("the-verdict")`` returns the path of a verified local copy:

1. if a data folder is named (the ``data_dir`` argument, else the environment
   variable ``BUILDLLM_DATA_DIR``), the file must already lie there and nothing
   is downloaded: this is how offline machines, the tests and CI work;
2. otherwise the file is downloaded once into the cache folder
   (``BUILDLLM_CACHE_DIR``, default ``~/.cache/buildllm/data``) and reused.

Every file is checked against its known size and SHA-256 each time it is
requested; a corrupt or partial copy is never returned.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .download import ChecksumError, DownloadError, download_file, verify_file

_COMPANION = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main"


@dataclass(frozen=True)
class DataFile:
    """One data file: where it lives relative to a data folder and how to verify it."""

    name: str
    relpath: str
    sha256: str
    size: int
    urls: tuple[str, ...]
    description: str
    zip_member: str | None = None  # the URL is a zip archive holding this member


DATASETS: dict[str, DataFile] = {
    f.name: f
    for f in [
        DataFile(
            name="the-verdict",
            relpath="the-verdict.txt",
            sha256="b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
            size=20479,
            urls=(f"{_COMPANION}/ch02/01_main-chapter-code/the-verdict.txt",),
            description="Edith Wharton's short story 'The Verdict' (public domain), ch02 and ch05",
        ),
        DataFile(
            name="sms-spam-collection",
            relpath="sms_spam_collection/SMSSpamCollection",
            sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
            size=477907,
            urls=("https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",),
            zip_member="SMSSpamCollection",
            description="UCI SMS Spam Collection: 5574 tab-separated messages (4827 ham, 747 spam), ch06",
        ),
        DataFile(
            name="instruction-data",
            relpath="instruction-data.json",
            sha256="7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
            size=203524,
            urls=(f"{_COMPANION}/ch07/01_main-chapter-code/instruction-data.json",),
            description="1100 instruction/input/output examples, ch07",
        ),
        DataFile(
            name="tinyshakespeare",
            relpath="tinyshakespeare.txt",
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            size=1115394,
            urls=("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
            description="Tiny Shakespeare (public domain), a larger text to pretrain on in ch05",
        ),
    ]
}


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


def _lookup(name: str) -> DataFile:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(
            f"Unknown dataset {name!r}. Known datasets: {', '.join(list_datasets())}."
        ) from None


def _how_to_place(spec: DataFile, where: Path) -> str:
    url = spec.urls[0]
    if spec.zip_member:
        return f"download {url}, unzip it and put the file {spec.zip_member} at {where}"
    return f"download {url} and save it as {where}"


def _download(spec: DataFile, dest: Path, progress: bool) -> None:
    if spec.zip_member is None:
        download_file(spec.urls, dest, sha256=spec.sha256, size=spec.size, progress=progress)
        return
    # The archive's own checksum is not published; we verify the member we extract.
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        archive = download_file(spec.urls, Path(tmp) / "archive.zip", progress=progress)
        with zipfile.ZipFile(archive) as zf:
            # Read only the one member we know by name: nothing in the archive can
            # choose where it is written (no path traversal through member names).
            data = zf.read(spec.zip_member)
        part = Path(tmp) / dest.name
        part.write_bytes(data)
        verify_file(part, spec.sha256, spec.size)
        os.replace(part, dest)


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
    if path.is_file():
        try:
            verify_file(path, spec.sha256, spec.size)
            return path
        except ChecksumError:
            path.unlink()  # corrupt cached copy: fetch it again below
    if not download:
        raise DatasetError(
            f"Dataset {name!r} is not in the cache ({path}) and download=False. "
            f"To fix: {_how_to_place(spec, path)}, or set BUILDLLM_DATA_DIR to a folder that holds it."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download(spec, path, progress)
    except (DownloadError, ChecksumError, zipfile.BadZipFile, KeyError) as exc:
        raise DatasetError(
            f"Dataset {name!r} could not be downloaded: {exc}\n"
            f"To work offline: {_how_to_place(spec, path)}, or set BUILDLLM_DATA_DIR to a folder that holds "
            f"{spec.relpath}."
        ) from None
    return path


def load_text(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Return the text of a text dataset (e.g. ``"the-verdict"``), verified."""
    return get_data_path(name, data_dir).read_text(encoding="utf-8")


def load_json(name: str, data_dir: str | os.PathLike | None = None):
    """Return the parsed content of a JSON dataset (e.g. ``"instruction-data"``), verified."""
    with open(get_data_path(name, data_dir), encoding="utf-8") as f:
        return json.load(f)
