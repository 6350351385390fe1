"""Chapter 7 scripts end to end: fine-tuning, judge evaluation, chat, download; run as a learner would."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, run_script
from test_judge import FakeJudgeServer, free_port_url

FINETUNE = str(REPO / "ch07" / "gpt_instruction_finetuning.py")
EVALUATE = str(REPO / "ch07" / "ollama_evaluate.py")
CHAT = str(REPO / "ch07" / "chat.py")
DOWNLOAD = str(REPO / "ch07" / "gpt_download.py")

TINY = ["--weights", "random", "--emb-dim", "32", "--n-layers", "1", "--n-heads", "2", "--context-length", "128",
        "--max-examples", "40", "--max-new-tokens", "5", "--eval-freq", "2", "--eval-iter", "1", "--device", "cpu"]
# Any download attempt goes to a closed local port: the tests never fetch GPT-2 weights.
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny fine-tuning run from a folder outside the repository; returns (output dir, stdout)."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    proc = run_script([FINETUNE, *TINY, "--output-dir", "out"], cwd=cwd)
    return cwd / "out", proc.stdout


@pytest.mark.parametrize("script", [FINETUNE, EVALUATE, CHAT, DOWNLOAD], ids=lambda s: s.rsplit("/", 1)[-1])
def test_help(script):
    proc = run_script([script, "--help"])
    assert proc.stdout.startswith("usage:")


def test_help_shows_book_defaults():
    out = run_script([FINETUNE, "--help"]).stdout
    for text in ["gpt2-medium", "--epochs EPOCHS", "(default: 2)", "(default: 5e-05)", "(default: 0.1)",
                 "(default: 8)", "(default: 1024)", "(default: 256)", "(default: 123)", "(default: auto)"]:
        assert text in out, text


def test_tiny_finetuning_run_writes_model_plot_responses(tiny_run, data_dir):
    out, stdout = tiny_run
    for name in ["model.pth", "loss-plot.png", "loss-plot.pdf", "instruction-data-with-response.json",
                 "metrics.json"]:
        assert (out / name).is_file(), name
    assert "Data: 40 entries -> 34 train, 2 validation, 4 test (prompt style: alpaca)" in stdout
    assert "Entries longer than 128 tokens (truncated in training): 0 train, 0 validation, 0 test" in stdout
    assert "Offline metrics on 4 responses:" in stdout and "Training took" in stdout
    # The sample after each epoch honours --max-new-tokens 5, as the test responses do.
    sample = next(line for line in stdout.splitlines() if line.startswith("  샘플: "))
    assert sample.endswith(sample.split("### Response:")[-1]) and len(sample.split("### Response:")[-1]) < 60

    from buildllm.datasets import load_json

    responses = json.loads((out / "instruction-data-with-response.json").read_text(encoding="utf-8"))
    data = load_json("instruction-data")
    assert [{k: e[k] for k in ("instruction", "input", "output")} for e in responses] == data[34:38]
    assert all(isinstance(e["model_response"], str) for e in responses)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["offline_metrics"]["n"] == 4 and metrics["settings"]["max_examples"] == 40
    # 34 training entries, batch 8, drop_last: 4 steps per epoch, evaluated at steps 0, 2, 4, 6
    assert len(metrics["train_losses"]) == len(metrics["val_losses"]) == 4

    from buildllm.checkpoints import read_model_file

    model, meta = read_model_file(out / "model.pth")
    assert model.cfg["emb_dim"] == 32 and model.cfg["context_length"] == 128
    assert meta["prompt_style"] == "alpaca" and meta["tokenizer"] == "gpt2"


def test_lora_phi3_masked_truncated_run(tmp_path):
    proc = run_script([FINETUNE, *TINY, "--epochs", "1", "--prompt-style", "phi3", "--mask-instructions",
                       "--lora-rank", "4", "--lora-alpha", "8", "--allowed-max-length", "40",
                       "--output-dir", str(tmp_path)])
    assert "LoRA rank 4, alpha 8" in proc.stdout and "prompt style: phi3" in proc.stdout
    assert "Prompt tokens are masked out of the loss" in proc.stdout
    # In the Phi-3 format, 6 of the 34 training, 2 of the 2 validation and 1 of the 4 test texts exceed 40 tokens.
    assert "Entries longer than 40 tokens (truncated in training): 6 train, 2 validation, 1 test" in proc.stdout

    from buildllm.checkpoints import load_model

    load_model(tmp_path / "model.pth")  # LoRA merged: loads as a plain GPTModel


def test_weights_unavailable_is_a_clean_error(tmp_path):
    proc = run_script([FINETUNE, "--weights", "gpt2-small", "--models-dir", str(tmp_path / "gpt2"),
                       "--max-examples", "40"], env=NO_NETWORK, check=False)
    assert proc.returncode == 2
    assert "gpt2-small" in proc.stderr and "no network connection" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_weights_path(tmp_path):
    proc = run_script([FINETUNE, "--weights", str(tmp_path / "nope.pth")], check=False)
    assert proc.returncode == 2 and "neither a known name nor an existing file" in proc.stderr


def test_data_file_with_missing_field_names_entry(tmp_path):
    data = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": ""}]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    proc = run_script([FINETUNE, *TINY, "--data-file", str(path)], check=False)
    assert proc.returncode == 2
    assert "Entry 1 has no 'output' field" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_settings_are_rejected():
    proc = run_script([FINETUNE, *TINY, "--max-examples", "5"], check=False)
    assert proc.returncode == 2 and "--max-examples must be at least 20" in proc.stderr
    proc = run_script([FINETUNE, *TINY, "--batch-size", "64"], check=False)
    assert proc.returncode == 2 and "fewer than --batch-size 64" in proc.stderr


# --------------------------------------------------------------------------- ollama_evaluate.py


def test_evaluate_against_fake_ollama(tiny_run, tmp_path):
    out, _ = tiny_run
    scores = tmp_path / "scores.json"
    with FakeJudgeServer(answers=["80", "60", "Score: 40", "20"]) as server:
        proc = run_script([EVALUATE, "--file", str(out / "instruction-data-with-response.json"),
                           "--url", server.url, "--output", str(scores)])
    assert "Offline metrics on 4 responses" in proc.stdout
    assert "Entry 0: score 80" in proc.stdout and "Entry 2: score 40" in proc.stdout
    assert "Average judge score: 50.00 over 4 of 4 entries" in proc.stdout
    saved = json.loads(scores.read_text(encoding="utf-8"))
    assert saved["average"] == 50.0 and [e["judge_score"] for e in saved["entries"]] == [80, 60, 40, 20]


def test_evaluate_counts_answers_that_are_not_numbers(tiny_run):
    out, _ = tiny_run
    with FakeJudgeServer(answers=["good", "70", "great", "bad", "worse", "101", "10", "7 or 8"]) as server:
        proc = run_script([EVALUATE, "--file", str(out / "instruction-data-with-response.json"),
                           "--url", server.url, "--retries", "2"])
    # entry 0: good, 70 | entry 1: great, bad, worse (unscored) | entry 2: 101, 10 | entry 3: "7 or 8" x3
    assert "Entry 1: no score (not_a_number; the judge said 'worse')" in proc.stdout
    assert "Average judge score: 40.00 over 2 of 4 entries. Unscored entries: 2." in proc.stdout
    assert "Invalid answers: 7 not a number, 1 out of range (retries: 6)." in proc.stdout


def test_evaluate_judge_unreachable_still_prints_offline_metrics(tiny_run):
    out, _ = tiny_run
    proc = run_script([EVALUATE, "--file", str(out / "instruction-data-with-response.json"),
                       "--url", free_port_url(), "--timeout", "5"], check=False)
    assert proc.returncode == 1
    assert "Offline metrics on 4 responses" in proc.stdout
    assert "ollama serve" in proc.stderr and "Traceback" not in proc.stderr


def test_evaluate_model_not_pulled(tiny_run):
    out, _ = tiny_run
    with FakeJudgeServer(models=["mistral:latest"]) as server:
        proc = run_script([EVALUATE, "--file", str(out / "instruction-data-with-response.json"),
                           "--url", server.url], check=False)
    assert proc.returncode == 1 and "ollama pull llama3" in proc.stderr


def test_evaluate_file_without_responses_names_entry(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}]), encoding="utf-8")
    proc = run_script([EVALUATE, "--file", str(path)], check=False)
    assert proc.returncode == 2 and "Entry 0 has no 'model_response' field" in proc.stderr


# --------------------------------------------------------------------------- chat.py and gpt_download.py


def test_chat_with_piped_stdin(tiny_run, tmp_path):
    out, _ = tiny_run
    piped = "Rewrite the sentence using a simile.\n/reset\n\n/what\nName a color.\n/quit\nNever read.\n"
    proc = run_script([CHAT, "--weights", str(out / "model.pth"), "--max-new-tokens", "4"], cwd=tmp_path,
                      input=piped)
    assert "You: Rewrite the sentence using a simile.\nModel: " in proc.stdout
    assert "(conversation reset)" in proc.stdout and "Unknown command '/what'" in proc.stdout
    assert "You: Name a color." in proc.stdout and "Never read." not in proc.stdout
    assert proc.stdout.count("Model: ") == 2


def test_chat_ends_at_end_of_input(tiny_run):
    out, _ = tiny_run
    proc = run_script([CHAT, "--weights", str(out / "model.pth"), "--max-new-tokens", "2", "--temperature", "1",
                       "--top-k", "5"], input="Hello")
    assert proc.stdout.count("Model: ") == 1


def test_chat_missing_model_file(tmp_path):
    proc = run_script([CHAT, "--weights", str(tmp_path / "model.pth")], input="", check=False)
    assert proc.returncode == 2 and "neither a known name nor an existing file" in proc.stderr


def test_chat_refuses_a_model_that_was_never_instruction_tuned(tmp_path):
    """A chapter 5 model.pth only continues text: chat says so and what to use instead."""
    import torch

    from buildllm.checkpoints import save_model
    from buildllm.model import GPT_CONFIG_124M, GPTModel

    torch.manual_seed(0)
    save_model(GPTModel({**GPT_CONFIG_124M, "emb_dim": 16, "n_layers": 1, "n_heads": 2, "context_length": 64}),
               tmp_path / "model.pth", meta={"task": "pretrained language model", "tokenizer": "gpt2"})
    proc = run_script([CHAT, "--weights", str(tmp_path / "model.pth")], input="Hi\n", check=False)
    assert proc.returncode == 2 and "was not instruction-tuned" in proc.stderr
    assert "smollm2-135m-instruct" in proc.stderr and "Traceback" not in proc.stderr


def test_download_offline_is_a_clean_error(tmp_path):
    proc = run_script([DOWNLOAD, "--models-dir", str(tmp_path), "--retries", "1"], env=NO_NETWORK, check=False)
    assert proc.returncode == 2
    assert "model.safetensors" in proc.stderr and "Traceback" not in proc.stderr
