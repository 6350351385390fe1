"""Fault injection for the scripts' command lines: nonsense numbers, unreadable inputs, unwritable outputs.

Every script under ch0*/, appendix-*/ and benchmarks/ must refuse a nonsensical number
(NaN, infinity, a negative size) while parsing, with one of the shared types of
`buildllm.cli`, and must find out that an output folder cannot be written, or an input
cannot be read, before any long work starts: an ``error: ...`` line and status 2, no
traceback, nothing written. Names follow issue 15's classes: ``test_silent__*`` (nonsense
accepted), ``test_traceback__*`` (a crash instead of a clear error) and ``test_lost__*``
(work lost because an output turned out unwritable only at the end).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
import torch
from conftest import NUMBER_PROBES, REPO, SCRIPTS, load_script, make_unreadable


@pytest.fixture(scope="module")
def numeric_options(help_reports):
    """{script: {flags: {type, accepted}}} for every option that converts its value to a number."""
    return {str(script): {"/".join(o["flags"]): o for o in report["options"]
                          if o["type"] in ("int", "float") or (o["type"] and o["accepted"] != list(NUMBER_PROBES))}
            for script, report in help_reports.items()}


@pytest.mark.parametrize("script", SCRIPTS, ids=str)
def test_silent__numeric_options_refuse_nonsense_while_parsing(script, numeric_options):
    problems = []
    for flag, info in numeric_options[str(script)].items():
        if info["type"] in ("int", "float"):
            problems.append(f"{flag}: plain {info['type']}; use a type from buildllm.cli (positive_int, ...)")
        elif info["accepted"]:
            problems.append(f"{flag} ({info['type']}) accepts {info['accepted']}")
    assert not problems, f"{script}:\n  " + "\n  ".join(problems)


# --- unwritable outputs and unreadable inputs, checked before the work ---------------------------------


@pytest.fixture
def unreadable(tmp_path) -> Path:
    """A file that exists but cannot be opened."""
    path = tmp_path / "unreadable.txt"
    path.write_text("text", encoding="utf-8")
    return make_unreadable(path)


def run(script: str, args: list[str]) -> tuple[int, str, str]:
    """`script`'s main(args) in this process; return (status, stdout, stderr). The environment is restored after."""
    module = load_script(REPO / script, "faults_" + Path(script).stem.replace("-", "_"))
    saved_env = dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = module.main(args)
            except SystemExit as exc:  # argparse's own errors
                status = exc.code
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    return status, out.getvalue(), err.getvalue()


def assert_refused(result, *phrases: str) -> None:
    status, _, err = result
    assert status == 2, err[-2000:]
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, err[-2000:]


TINY_GPT = ["--emb-dim", "16", "--n-layers", "1", "--n-heads", "2", "--context-length", "16"]
OUTPUT_DIR_CASES = {
    "ch05/gpt_train.py": [*TINY_GPT, "--max-steps", "1"],
    "ch06/gpt_class_finetune.py": ["--weights", "random", *TINY_GPT, "--max-examples", "20", "--epochs", "1"],
    "ch07/gpt_instruction_finetuning.py": ["--weights", "random", *TINY_GPT, "--max-examples", "20",
                                          "--epochs", "1"],
    "benchmarks/bench_attention.py": ["--quick"],
    "benchmarks/bench_generate.py": ["--quick"],
    "benchmarks/bench_train.py": ["--quick"],
}


@pytest.mark.parametrize("script", OUTPUT_DIR_CASES)
def test_lost__unwritable_output_folder_is_refused_before_the_work(script, unwritable_dir):
    started = torch.get_num_threads()
    result = run(script, [*OUTPUT_DIR_CASES[script], "--output-dir", str(unwritable_dir / "out"), "--device", "cpu"])
    torch.set_num_threads(started)
    assert_refused(result, "--output-dir")
    assert "Training" not in result[1] and "훈련" not in result[1]  # refused before any training


def test_lost__unwritable_tensorboard_folder_is_refused_before_training(unwritable_dir, tmp_path):
    assert_refused(run("ch05/gpt_train.py", [*TINY_GPT, "--output-dir", str(tmp_path / "run"), "--tensorboard",
                                             str(unwritable_dir / "tb"), "--device", "cpu"]), "--tensorboard")
    assert not (tmp_path / "run" / "model.pth").exists()


@pytest.mark.parametrize("problem", ["unreadable", "folder", "not_utf8"])
def test_traceback__training_text_that_cannot_be_read(problem, unreadable, tmp_path):
    path = {"unreadable": unreadable, "folder": tmp_path / "texts.txt", "not_utf8": tmp_path / "latin1.txt"}[problem]
    if problem == "folder":
        path.mkdir()
    if problem == "not_utf8":
        path.write_bytes("Caf\xe9 cr\xe8me ".encode("latin-1") * 500)
    assert_refused(run("ch05/gpt_train.py", [*TINY_GPT, "--data", str(path), "--output-dir", str(tmp_path / "run"),
                                             "--device", "cpu"]), "--data")


def test_traceback__instruction_data_that_cannot_be_read(unreadable, tmp_path):
    assert_refused(run("ch07/gpt_instruction_finetuning.py", [
        "--weights", "random", *TINY_GPT, "--data-file", str(unreadable), "--output-dir", str(tmp_path / "out"),
        "--device", "cpu"]), "--data-file")


def test_traceback__instruction_data_that_is_not_json(tmp_path):
    bad = tmp_path / "data.json"
    bad.write_text('[{"instruction": "half', encoding="utf-8")
    assert_refused(run("ch07/gpt_instruction_finetuning.py", [
        "--weights", "random", *TINY_GPT, "--data-file", str(bad), "--output-dir", str(tmp_path / "out"),
        "--device", "cpu"]), "--data-file")


def test_traceback__spam_data_folder_with_an_unreadable_file(unreadable, tmp_path):
    folder = tmp_path / "data" / "sms_spam_collection"
    folder.mkdir(parents=True)
    (folder / "SMSSpamCollection").symlink_to(unreadable)
    assert_refused(run("ch06/gpt_class_finetune.py", [
        "--weights", "random", *TINY_GPT, "--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out"),
        "--device", "cpu"]))


def test_traceback__unreadable_resume_checkpoint(unreadable, tmp_path):
    assert_refused(run("ch05/gpt_train.py", [*TINY_GPT, "--output-dir", str(tmp_path / "run"), "--resume",
                                             str(unreadable), "--device", "cpu"]), "--resume", "permission denied")


@pytest.mark.parametrize("script, args", [
    ("ch04/gpt.py", ["--context-length", "16", "--max-new-tokens", "17", "--model-size", "gpt2-small"]),
    ("ch05/gpt_generate.py", ["--weights", "{model}", "--max-new-tokens", "1000000"]),
    ("ch07/chat.py", ["--weights", "{model}", "--max-new-tokens", "1000000"]),
])
def test_hang__max_new_tokens_beyond_the_context_is_refused(script, args, tmp_path):
    from buildllm.checkpoints import save_model
    from buildllm.model import GPTModel

    model = tmp_path / "model.pth"
    save_model(GPTModel({"vocab_size": 50257, "context_length": 16, "emb_dim": 8, "n_heads": 2, "n_layers": 1,
                         "drop_rate": 0.0, "qkv_bias": False}), model,
               meta={"tokenizer": "gpt2", "prompt_style": "alpaca"})
    assert_refused(run(script, [a.format(model=model) for a in args] + ["--device", "cpu"]),
                   "--max-new-tokens", "context")
