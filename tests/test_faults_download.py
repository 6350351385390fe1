"""Fault injection for downloads: a loopback server that truncates, resets, stalls, drips, lies and zip-bombs.

Every test is named by the class of failure it keeps away (issue 15):
``test_traceback__*`` (an uncaught exception instead of a clear error),
``test_hang__*`` (waiting forever), ``test_silent__*`` (a wrong or partial file accepted
as good) and ``test_lost__*`` (a file deleted or overwritten that was not ours to touch).
Count them with ``pytest --collect-only -q tests/test_faults_*.py | grep -c ::test_hang__``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import make_unreadable
from faultserver import Mode, start_fault_server, stop_fault_server

from buildllm import datasets, download, gpt2, sources
from buildllm.datasets import DatasetError, get_data_path
from buildllm.download import (
    ChecksumError,
    DownloadError,
    download_file,
    reachable,
    record_path,
    verify_file,
)
from buildllm.sources import WeightsUnavailableError

BODY = random.Random(15).randbytes(200_000)
SHA = hashlib.sha256(BODY).hexdigest()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fs(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = start_fault_server()
    yield server
    stop_fault_server(server)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    """No back-off pauses between attempts (the deadlines themselves are real)."""
    monkeypatch.setattr(download.time, "sleep", lambda s: None)


def fetch(url, dest, **kwargs):
    kwargs = {"progress": False, "timeout": 2.0, "retries": 2, **kwargs}
    return download_file(url, dest, **kwargs)


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@pytest.fixture
def unreadable(tmp_path) -> Path:
    """A path whose file exists but cannot be opened."""
    path = tmp_path / "unreadable.bin"
    path.write_bytes(BODY)
    return make_unreadable(path)


# --- hangs ------------------------------------------------------------------------------------------


def test_hang__body_dripping_below_the_minimum_rate_meets_the_request_deadline(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("trickle", delay=0.05))  # 20 bytes/s: 200 kB would take 3 hours
    start = time.monotonic()
    with pytest.raises(DownloadError, match="too slow"):
        fetch(url, tmp_path / "f", sha256=SHA, size=len(BODY), timeout=1.0, min_rate=1000, retries=1)
    assert time.monotonic() - start < 8  # 2 x timeout + received/min_rate, plus slack for a busy machine
    assert not (tmp_path / "f").exists()


def test_hang__headers_dripping_meet_the_request_deadline(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("trickle_headers", delay=0.2))
    start = time.monotonic()
    with pytest.raises(DownloadError, match="too slow|timed out"):
        fetch(url, tmp_path / "f", sha256=SHA, timeout=1.0, retries=1)
    assert time.monotonic() - start < 8


def test_hang__server_that_never_answers(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("silent"))
    start = time.monotonic()
    with pytest.raises(DownloadError, match="attempt 2/2"):
        fetch(url, tmp_path / "f", sha256=SHA, timeout=1.0)
    assert time.monotonic() - start < 10


def test_hang__stall_mid_body_is_retried_and_resumed(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("stall", cut=50_000), Mode("ok"))
    dest = fetch(url, tmp_path / "f", sha256=SHA, size=len(BODY), timeout=1.0)
    assert dest.read_bytes() == BODY
    first, second = fs.requests_for("/f")
    assert first is None and second is not None and second.startswith("bytes=")  # the second attempt resumed


def test_hang__reachability_check_with_a_silent_server(fs):
    url = fs.serve("/f", BODY, Mode("silent"))
    start = time.monotonic()
    assert reachable([url], timeout=1.0) is False
    assert time.monotonic() - start < 5


# --- tracebacks -----------------------------------------------------------------------------------


def test_traceback__chunked_transfer_that_breaks_off_is_retried(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("chunked_break", cut=30_000), Mode("chunked"))
    dest = fetch(url, tmp_path / "f", sha256=SHA)
    assert dest.read_bytes() == BODY
    assert len(fs.requests_for("/f")) == 2


def test_traceback__chunked_transfer_that_always_breaks_is_a_clear_error(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("chunked_break", cut=30_000))
    with pytest.raises(DownloadError, match=r"(?s)IncompleteRead.*place it at"):
        fetch(url, tmp_path / "f", sha256=SHA)
    assert visible(tmp_path) == ["f.part"]  # only a partial .part, kept to resume


def test_traceback__connection_reset_is_retried_and_resumed(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("reset", cut=120_000), Mode("ok"))
    dest = fetch(url, tmp_path / "f", sha256=SHA, size=len(BODY))
    assert dest.read_bytes() == BODY
    assert fs.requests_for("/f")[0] is None


def test_traceback__server_error_then_success(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("status", status=503), Mode("ok"))
    assert fetch(url, tmp_path / "f", sha256=SHA).read_bytes() == BODY


def test_traceback__unwritable_download_folder(fs, unwritable_dir):
    url = fs.serve("/f", BODY)
    with pytest.raises(DownloadError, match="Cannot create the folder|cannot write"):
        fetch(url, unwritable_dir / "sub" / "f", sha256=SHA)
    assert fs.log == []  # refused before any request


def test_traceback__unreadable_file_at_the_destination(fs, unreadable):
    url = fs.serve("/f", BODY)
    with pytest.raises(ChecksumError, match="permission denied"):
        fetch(url, unreadable, sha256=SHA)
    assert fs.log == []


def test_traceback__folder_at_the_destination(fs, tmp_path):
    (tmp_path / "f").mkdir()
    with pytest.raises(ChecksumError, match="is a folder"):
        fetch(fs.serve("/f", BODY), tmp_path / "f", sha256=SHA)


def test_traceback__damaged_download_record(fs, tmp_path):
    dest = fetch(fs.serve("/f", BODY), tmp_path / "f")
    record_path(dest).write_text("{not json", encoding="utf-8")
    with pytest.raises(ChecksumError, match="download record .* cannot be read"):
        verify_file(dest)


def test_traceback__unwritable_data_cache(fs, unwritable_dir, monkeypatch):
    monkeypatch.delenv("BUILDLLM_DATA_DIR", raising=False)
    monkeypatch.setenv("BUILDLLM_CACHE_DIR", str(unwritable_dir / "cache"))
    monkeypatch.setitem(datasets.DATASETS, "the-verdict",
                        dataclasses.replace(datasets.DATASETS["the-verdict"], urls=(fs.serve("/v", b"x"),)))
    with pytest.raises(DatasetError, match="could not be downloaded"):
        get_data_path("the-verdict", progress=False)


def test_traceback__unreadable_file_in_the_data_folder(unreadable, monkeypatch, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "the-verdict.txt").symlink_to(unreadable)
    with pytest.raises(DatasetError, match="permission denied"):
        get_data_path("the-verdict", folder)


# --- silent wrong results -----------------------------------------------------------------------


def test_silent__truncated_transfer_of_a_file_without_a_published_hash(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("truncate", cut=150_000))
    with pytest.raises(DownloadError, match="connection closed after"):
        fetch(url, tmp_path / "f", retries=1)  # no size, no SHA-256: only the Content-Length says what is complete
    assert not (tmp_path / "f").exists()


def test_silent__no_length_and_no_hash_is_refused(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("no_length"))
    with pytest.raises(DownloadError, match="did not say how long the file is"):
        fetch(url, tmp_path / "f")
    assert visible(tmp_path) == []


def test_silent__no_length_is_fine_when_the_hash_is_pinned(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("no_length"))
    assert fetch(url, tmp_path / "f", sha256=SHA).read_bytes() == BODY
    url = fs.serve("/g", BODY[:-10], Mode("no_length"))  # the connection closed early: the hash says so
    with pytest.raises(DownloadError, match="SHA-256"):
        fetch(url, tmp_path / "g", sha256=SHA)
    assert not (tmp_path / "g").exists()


def test_silent__wrong_bytes_never_become_the_file(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("wrong_bytes"))
    with pytest.raises(DownloadError, match="SHA-256"):
        fetch(url, tmp_path / "f", sha256=SHA, size=len(BODY))
    assert visible(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncated", "same-size edit"])
def test_silent__file_damaged_after_its_download_is_caught_by_its_record(fs, tmp_path, damage):
    dest = fetch(fs.serve("/f", BODY), tmp_path / "f")  # no published hash: the record vouches for the file
    record = download.read_record(dest)
    assert record["size"] == len(BODY) and record["sha256"] == SHA and record["pinned"] is False
    verify_file(dest)
    dest.write_bytes(BODY[:1000] if damage == "truncated" else b"X" + BODY[1:])
    with pytest.raises(ChecksumError, match="recorded at its download"):
        verify_file(dest)


def test_silent__gpt2_medium_safetensors_without_a_published_hash(fs, tmp_path, monkeypatch):
    """No SHA-256 is published for gpt2-medium: a transfer cut short fails, a later truncation is caught."""
    body = BODY
    monkeypatch.setattr(sources, "HF_URLS", (fs.url("/hf/{repo}/model.safetensors"),))
    monkeypatch.setattr(download.time, "sleep", lambda s: None)
    fs.serve("/hf/gpt2-medium/model.safetensors", body, Mode("truncate", cut=10_000))
    with pytest.raises(WeightsUnavailableError, match="connection closed after"):
        gpt2.download_gpt2_files("gpt2-medium", tmp_path, "huggingface", retries=1, progress=False)
    fs.serve("/hf/gpt2-medium/model.safetensors", body)
    folder = gpt2.download_gpt2_files("gpt2-medium", tmp_path, "huggingface", retries=1, progress=False)
    path = folder / "model.safetensors"
    with open(path, "r+b") as f:
        f.truncate(5000)
    spec = sources.gpt2_files("gpt2-medium", "huggingface")[0]
    assert not gpt2._is_valid(path, spec)


def make_zip(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def sms(monkeypatch, tmp_path, fs):
    monkeypatch.delenv("BUILDLLM_DATA_DIR", raising=False)
    monkeypatch.setenv("BUILDLLM_CACHE_DIR", str(tmp_path / "cache"))

    def serve(archive: bytes) -> None:
        monkeypatch.setitem(datasets.DATASETS, "sms-spam-collection", dataclasses.replace(
            datasets.DATASETS["sms-spam-collection"], urls=(fs.serve("/sms.zip", archive),)))
    return serve


def test_silent__zip_bomb_is_refused_before_unpacking(sms, tmp_path):
    sms(make_zip("SMSSpamCollection", b"\0" * (20 * 1024 * 1024)))  # 20 MB of zeros in a ~20 kB archive
    start = time.monotonic()
    with pytest.raises(DatasetError, match="would unpack to 20971520 bytes, expected 477907"):
        get_data_path("sms-spam-collection", progress=False)
    assert time.monotonic() - start < 10
    assert not (tmp_path / "cache" / "sms_spam_collection" / "SMSSpamCollection").exists()


def test_silent__zip_member_that_lies_about_its_size_is_not_unpacked_past_it(sms, tmp_path):
    """The central directory claims the expected size; the data inflates to far more."""
    archive = bytearray(make_zip("SMSSpamCollection", b"\0" * (5 * 1024 * 1024)))
    central = archive.find(b"PK\x01\x02")
    archive[central + 24:central + 28] = (477907).to_bytes(4, "little")  # uncompressed size field
    local = archive.find(b"PK\x03\x04")
    archive[local + 22:local + 26] = (477907).to_bytes(4, "little")
    sms(bytes(archive))
    with pytest.raises(DatasetError, match="could not be downloaded"):
        get_data_path("sms-spam-collection", progress=False)
    assert not (tmp_path / "cache" / "sms_spam_collection" / "SMSSpamCollection").exists()


def test_silent__archive_larger_than_its_cap_is_refused(sms, monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "ARCHIVE_MAX_SIZE", 10_000)
    sms(BODY)
    with pytest.raises(DatasetError, match="more than the 10000 allowed"):
        get_data_path("sms-spam-collection", progress=False)


# --- lost files ------------------------------------------------------------------------------------


def test_lost__a_file_we_did_not_download_is_reported_never_replaced(fs, tmp_path):
    dest = tmp_path / "f"
    dest.write_bytes(b"my own version")
    with pytest.raises(ChecksumError, match=r"not deleted\)"):
        fetch(fs.serve("/f", BODY), dest, sha256=SHA)
    assert dest.read_bytes() == b"my own version" and fs.log == []


def test_lost__only_our_own_damaged_download_is_fetched_again(fs, tmp_path):
    dest = fetch(fs.serve("/f", BODY), tmp_path / "f", sha256=SHA)
    dest.write_bytes(b"damaged")
    assert fetch(fs.url("/f"), dest, sha256=SHA).read_bytes() == BODY
    assert len(fs.log) == 2


def test_lost__corrupt_file_in_the_data_folder_is_kept(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "the-verdict.txt").write_text("not the verdict", encoding="utf-8")
    with pytest.raises(DatasetError, match="not usable"):
        get_data_path("the-verdict", folder)
    assert (folder / "the-verdict.txt").read_text(encoding="utf-8") == "not the verdict"


def test_lost__received_bytes_survive_failed_attempts(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("reset", cut=80_000))
    with pytest.raises(DownloadError):
        fetch(url, tmp_path / "f", sha256=SHA, retries=1)
    kept = (tmp_path / "f.part").stat().st_size
    assert 0 < kept <= 80_000
    fs.serve("/f", BODY)
    assert fetch(url, tmp_path / "f", sha256=SHA).read_bytes() == BODY
    assert fs.requests_for("/f")[-1] == f"bytes={kept}-"


def test_lost__kill_9_during_a_download_leaves_nothing_that_looks_valid(fs, tmp_path):
    url = fs.serve("/f", BODY, Mode("stall", cut=60_000), Mode("ok"))
    dest = tmp_path / "f"
    code = ("import sys; from buildllm.download import download_file; "
            "download_file(sys.argv[1], sys.argv[2], progress=False, timeout=60)")
    proc = subprocess.Popen([sys.executable, "-c", code, url, str(dest)], cwd=REPO,
                            env={**os.environ, "no_proxy": "127.0.0.1"})
    part = tmp_path / "f.part"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size >= 60_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert part.stat().st_size == 60_000
    assert visible(tmp_path) == ["f.part"] and not record_path(dest).exists()
    assert fetch(url, dest, sha256=SHA).read_bytes() == BODY
    assert fs.requests_for("/f")[-1] == "bytes=60000-"
