"""Data files by name: offline data folder, verified cache, downloads (including the zipped SMS data)."""

from __future__ import annotations

import dataclasses
import io
import shutil
import zipfile

import pytest

import buildllm.datasets as datasets
from buildllm.datasets import DatasetError, get_data_path, list_datasets, load_json, load_text
from buildllm.download import sha256_of
from test_download import Route, closed_port_url, no_sleep, server  # noqa: F401 (pytest fixtures)

VERDICT_SHA256 = "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"


@pytest.fixture
def online(monkeypatch, tmp_path):
    """No data folder, an empty cache folder in tmp_path: the situation of a learner's first run."""
    monkeypatch.delenv("BUILDLLM_DATA_DIR", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("BUILDLLM_CACHE_DIR", str(cache))
    return cache


def point_at(monkeypatch, name: str, *urls: str) -> None:
    """Make dataset `name` download from `urls` for this test only."""
    monkeypatch.setitem(datasets.DATASETS, name, dataclasses.replace(datasets.DATASETS[name], urls=urls))


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --- the offline data folder --------------------------------------------------------------


def test_known_datasets():
    assert list_datasets() == ["instruction-data", "sms-spam-collection", "the-verdict", "tinyshakespeare"]


def test_files_from_the_data_folder(data_dir):
    assert get_data_path("the-verdict") == data_dir / "the-verdict.txt"
    assert len(load_text("the-verdict")) == 20479
    assert len(load_json("instruction-data")) == 1100
    assert get_data_path("sms-spam-collection").stat().st_size == 477907


def test_data_dir_argument_wins_over_the_environment(data_dir, tmp_path):
    shutil.copy(data_dir / "the-verdict.txt", tmp_path / "the-verdict.txt")
    assert get_data_path("the-verdict", data_dir=tmp_path) == tmp_path / "the-verdict.txt"


def test_unknown_dataset_lists_the_known_names():
    with pytest.raises(DatasetError, match="Unknown dataset 'the-verdikt'. Known datasets: instruction-data, "
                                           "sms-spam-collection, the-verdict, tinyshakespeare"):
        get_data_path("the-verdikt")


def test_missing_file_in_data_folder_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetError) as info:
        get_data_path("the-verdict", data_dir=tmp_path)
    message = str(info.value)
    assert f"looked for {tmp_path / 'the-verdict.txt'}" in message
    assert "nothing is downloaded when a data folder is set" in message


def test_corrupt_file_is_not_used(data_dir, tmp_path):
    copy = tmp_path / "the-verdict.txt"
    data = bytearray((data_dir / "the-verdict.txt").read_bytes())
    data[1000] ^= 0x20  # one changed letter, same size
    copy.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="is not usable: .* has SHA-256 .* It was not used"):
        get_data_path("the-verdict", data_dir=tmp_path)


def test_truncated_file_in_buildllm_data_dir_is_not_used(data_dir, tmp_path, monkeypatch):
    (tmp_path / "the-verdict.txt").write_bytes((data_dir / "the-verdict.txt").read_bytes()[:-10])
    monkeypatch.setenv("BUILDLLM_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetError, match="is not usable: .* has 20469 bytes, expected 20479: the file is truncated"):
        load_text("the-verdict")


# --- downloads into the cache -------------------------------------------------------------


def test_download_into_cache_then_reuse(online, server, data_dir, monkeypatch):
    server.routes["/the-verdict.txt"] = Route((data_dir / "the-verdict.txt").read_bytes())
    point_at(monkeypatch, "the-verdict", server.url("/the-verdict.txt"))
    path = get_data_path("the-verdict", progress=False)
    assert path == online / "the-verdict.txt"
    assert sha256_of(path) == VERDICT_SHA256
    assert len(load_text("the-verdict")) == 20479
    assert server.paths() == ["/the-verdict.txt"]  # the second call used the cached copy

    path.write_text("tampered", encoding="utf-8")  # a corrupt cached copy is fetched again
    assert len(load_text("the-verdict")) == 20479
    assert server.paths() == ["/the-verdict.txt"] * 2


def test_no_network_and_no_local_copy(online, monkeypatch, no_sleep):
    url = closed_port_url("/the-verdict.txt")
    point_at(monkeypatch, "the-verdict", url)
    with pytest.raises(DatasetError) as info:
        get_data_path("the-verdict", progress=False)
    message = str(info.value)
    assert "Dataset 'the-verdict' could not be downloaded" in message
    assert f"{url} (attempt 3/3)" in message
    assert f"save it as {online / 'the-verdict.txt'}" in message
    assert "set BUILDLLM_DATA_DIR to a folder that holds the-verdict.txt" in message
    assert files_under(online) == []  # nothing left behind that could look like the file


def test_download_false_does_not_touch_the_network(online, monkeypatch):
    point_at(monkeypatch, "the-verdict", closed_port_url())
    with pytest.raises(DatasetError, match="is not in the cache .* and download=False"):
        get_data_path("the-verdict", download=False)


# --- the zipped SMS Spam Collection -------------------------------------------------------


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


@pytest.fixture
def sms_bytes(data_dir) -> bytes:
    return (data_dir / "sms_spam_collection" / "SMSSpamCollection").read_bytes()


def test_zip_member_extracted_and_verified(online, server, sms_bytes, monkeypatch, tmp_path):
    archive = make_zip({
        "readme": b"the UCI archive also holds a readme",
        "SMSSpamCollection": sms_bytes,
        "../../evil.txt": b"path traversal",  # a hostile member name: must not be written anywhere
        f"{tmp_path}/evil-absolute.txt": b"absolute path",
    })
    server.routes["/sms.zip"] = Route(archive)
    point_at(monkeypatch, "sms-spam-collection", server.url("/sms.zip"))
    path = get_data_path("sms-spam-collection", progress=False)
    assert path == online / "sms_spam_collection" / "SMSSpamCollection"
    assert path.read_bytes() == sms_bytes
    assert [f for f in files_under(online) if not f.endswith(".download.json")] == [
        "sms_spam_collection/SMSSpamCollection"]  # no archive, no readme left
    assert not any(p.name.startswith("evil") for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("members, phrase", [
    ({"../SMSSpamCollection": b"spam"}, "no item named 'SMSSpamCollection'"),
    ({"SMSSpamCollection": b"ham\tshort file"}, "would unpack to 14 bytes, expected 477907"),
])
def test_bad_zip_content_is_a_dataset_error(online, server, monkeypatch, no_sleep, members, phrase):
    server.routes["/sms.zip"] = Route(make_zip(members))
    point_at(monkeypatch, "sms-spam-collection", server.url("/sms.zip"))
    with pytest.raises(DatasetError, match="could not be downloaded") as info:
        get_data_path("sms-spam-collection", progress=False)
    assert phrase in str(info.value)
    assert "unzip it and put the file SMSSpamCollection at" in str(info.value)
    assert files_under(online) == []


def test_not_a_zip_is_a_dataset_error(online, server, monkeypatch):
    server.routes["/sms.zip"] = Route(b"<html>a captive portal page, not a zip</html>")
    point_at(monkeypatch, "sms-spam-collection", server.url("/sms.zip"))
    with pytest.raises(DatasetError, match="File is not a zip file"):
        get_data_path("sms-spam-collection", progress=False)
    assert files_under(online) == []
