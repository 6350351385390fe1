"""Writing files so that a crash never leaves a half-written one (used by every module that writes).

`atomic_write` writes into a temporary file in the target's folder and renames it
over the target only when everything was written (``os.replace`` is atomic on
POSIX and Windows). A reader therefore sees either the old file or the complete
new one. Every file gets the same permissions as any file the user creates
(0o666 minus the umask), not the private 0o600 of a raw temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

TEMP_SUFFIX = ".tmp"


def default_file_mode() -> int:
    """The mode a newly created file gets: 0o666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file for writing; on success rename it to `path`, on error remove it.

    ``with atomic_write(path) as f: f.write(...)``; ``mode="wb"`` for bytes.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write opens files for writing only ('w' or 'wb'), got {mode!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write `text` to `path` atomically; return the path."""
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(obj, path: str | os.PathLike, indent: int = 2) -> Path:
    """Write `obj` as UTF-8 JSON (non-ASCII kept readable) to `path` atomically; return the path."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")
    return Path(path)


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """`torch.save` `obj` to `path` atomically; return the path."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def remove_stale_temp_files(folder: str | os.PathLike, name: str) -> list[Path]:
    """Delete temporary files that a killed `atomic_write` of `folder/name` left behind; return them."""
    removed = []
    for tmp in Path(folder).glob(f".{name}.*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def os_error_reason(exc: OSError) -> str:
    """Why a file could not be read, in words that say what to do (no path: the caller names the file)."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder; give a file"
    if isinstance(exc, PermissionError):
        return "permission denied; fix the file's permissions"
    return f"cannot be read ({exc.strerror or exc})"


def check_writable(path: str | os.PathLike) -> None:
    """Raise PermissionError (saying what to do) unless a file can be created at `path` (checked by creating one)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise PermissionError(
            f"Cannot write to {path.parent} ({exc.strerror or exc}). Choose another output path or fix the "
            f"folder's permissions."
        ) from None
