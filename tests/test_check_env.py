"""`python -m buildllm.check_env`: run as a learner would, from a terminal."""

from __future__ import annotations

from buildllm.datasets import list_datasets
from conftest import run_script


def test_everything_available_with_the_shared_data(data_dir, tmp_path):
    proc = run_script(["-m", "buildllm.check_env"], cwd=tmp_path, env={"BUILDLLM_DATA_DIR": str(data_dir)})
    assert "[ok]   gpt2 tokenizer" in proc.stdout
    for name in list_datasets():
        assert f"data: {name}" in proc.stdout
    assert "[FAIL]" not in proc.stdout
    assert "All required items are available." in proc.stdout


def test_empty_data_folder_fails_with_advice(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_script(["-m", "buildllm.check_env"], cwd=tmp_path, env={"BUILDLLM_DATA_DIR": str(empty)},
                      check=False)
    assert proc.returncode == 1
    assert "[FAIL] data: the-verdict" in proc.stdout
    assert f"looked for {empty / 'the-verdict.txt'}" in proc.stdout
    assert f"{len(list_datasets())} required item(s) missing" in proc.stdout  # one per dataset
    assert "README 'Offline use'" in proc.stdout
    assert "[ok]   gpt2 tokenizer" in proc.stdout  # the tokenizer does not need the data folder
