"""ch04/gpt.py end to end, as a learner runs it from a terminal."""

from __future__ import annotations

import re

import pytest

from conftest import REPO, load_script, run_script

SCRIPT = str(REPO / "ch04" / "gpt.py")
pytestmark = pytest.mark.script

# The untrained 124M model with seed 123 (same as tests/test_model.py::test_generate_hello_i_am_seed_123).
BOOK_IDS = [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267]


def output_ids(stdout: str) -> list[int]:
    match = re.search(r"^Output IDs: \[([\d, ]+)\]$", stdout, re.MULTILINE)
    assert match, stdout
    return [int(t) for t in match.group(1).split(",")]


def test_defaults_from_another_directory_and_deterministic(tmp_path):
    """Two separate runs with the same seed build the same weights and print the same tokens."""
    first = run_script([SCRIPT, "--prompt", "Hello, I am", "--max-new-tokens", "6", "--device", "cpu"], cwd=tmp_path)
    assert "Encoded input IDs: [15496, 11, 314, 716]" in first.stdout
    assert output_ids(first.stdout) == BOOK_IDS
    assert "Decoded text: 'Hello, I am Featureiman Byeswickattribute argue'" in first.stdout
    assert "163,009,536 parameters (124,412,160 counting the output layer as the token embedding" in first.stdout

    second = run_script([SCRIPT, "--max-new-tokens", "6", "--device", "cpu"], cwd=REPO)
    assert output_ids(second.stdout) == output_ids(first.stdout)


def test_other_seed_small_context_and_size(tmp_path):
    proc = run_script([SCRIPT, "--prompt", "Every effort moves you", "--max-new-tokens", "3", "--seed", "1",
                       "--context-length", "8", "--device", "cpu"], cwd=tmp_path)
    ids = output_ids(proc.stdout)
    assert len(ids) == 4 + 3 and ids[:4] == [6109, 3626, 6100, 345]
    assert ids != BOOK_IDS[:7]
    assert "Output length: 7 tokens" in proc.stdout


def load_script_module():
    """Import ch04/gpt.py by its path, to call main() in this process (fast argument checks)."""
    return load_script(SCRIPT, "ch04_gpt")


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script_module().main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ["--prompt", "--max-new-tokens", "--model-size", "--context-length", "--seed", "--device"]:
        assert option in out


def test_unknown_model_size_lists_valid_ones(tmp_path):
    proc = run_script([SCRIPT, "--model-size", "gpt2-huge"], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "invalid choice: 'gpt2-huge'" in proc.stderr
    for size in ["gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl"]:
        assert size in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-new-tokens", "-1"], "argument --max-new-tokens: must be a whole number >= 0"),
        (["--context-length", "0"], "argument --context-length: must be a whole number >= 1"),
        (["--device", "tpu"], "argument --device: choose auto, cpu, cuda, cuda:N"),
    ],
)
def test_bad_arguments(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        load_script_module().main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_empty_prompt_and_missing_gpu_are_messages(capsys):
    assert load_script_module().main(["--prompt", ""]) == 2
    assert "--prompt is empty" in capsys.readouterr().err
    if not __import__("torch").cuda.is_available():
        assert load_script_module().main(["--device", "cuda:1"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
