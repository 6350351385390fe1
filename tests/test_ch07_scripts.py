"""Chapter 7 scripts end to end: fine-tuning, judge evaluation, chat, download; run as a learner would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, load_script, run_script
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


def write_entries(path, n):
    """`n` entries whose response names its index ("response 7"), so a fake judge can score each one by content."""
    entries = [{"instruction": f"Task {i}.", "input": "", "output": f"reference {i}", "model_response": f"response {i}"}
               for i in range(n)]
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def score_by_content(body):
    """The fake judge's answer: the index named in the response, so entry i must end up with score i."""
    prompt = body["messages"][0]["content"]
    return prompt.split("The assistant's answer:\nresponse ", 1)[1].split("\n", 1)[0]


def saved_scores(path):
    saved = json.loads(path.read_text(encoding="utf-8"))
    return saved, {e["index"]: e["judge_score"] for e in saved["entries"]}


def test_evaluate_against_fake_ollama(tiny_run, tmp_path):
    out, _ = tiny_run
    scores = tmp_path / "scores.json"
    with FakeJudgeServer(answers=["80", "60", "Score: 40", "20"]) as server:
        proc = run_script([EVALUATE, "--file", str(out / "instruction-data-with-response.json"),
                           "--url", server.url, "--output", str(scores)])
    assert "Offline metrics on 4 responses" in proc.stdout
    assert "Entry 0: score 80" in proc.stdout and "Entry 2: score 40" in proc.stdout
    assert "Average judge score: 50.00 over 4 of 4 entries" in proc.stdout and "weak" not in proc.stdout.lower()
    saved = json.loads(scores.read_text(encoding="utf-8"))
    assert saved["complete"] is True and saved["average"] == 50.0 and saved["weak_judge"] is False
    assert [e["judge_score"] for e in saved["entries"]] == [80, 60, 40, 20]
    assert saved["entries"][2]["judge_answers"] == ["Score: 40"] and saved["offline_metrics"]["n"] == 4


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
    assert "ollama serve" in proc.stderr and "change the server's address: --url" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_evaluate_model_not_pulled(tiny_run):
    out, _ = tiny_run
    with FakeJudgeServer(models=["mistral:latest"]) as server:
        proc = run_script([EVALUATE, "--file", str(out / "instruction-data-with-response.json"),
                           "--url", server.url], check=False)
    assert proc.returncode == 1 and "ollama pull llama3" in proc.stderr and "--model" in proc.stderr


def test_evaluate_file_without_responses_names_entry(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}]), encoding="utf-8")
    proc = run_script([EVALUATE, "--file", str(path)], check=False)
    assert proc.returncode == 2 and "Entry 0 has no 'model_response' field" in proc.stderr


# Fault injection: every case ends with a clear message, exit status 1 or 2, and no score lost.
# Most run the script's main() in this process (a subprocess costs a Python start-up each); kill -9 needs one.


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def evaluate(capsys):
    """evaluate([...], check=True) -> Result: ollama_evaluate.main in this process, output captured."""
    module = load_script(EVALUATE, "ollama_evaluate")

    def call(args, check=True):
        capsys.readouterr()
        code = module.main([str(a) for a in args])
        out, err = capsys.readouterr()
        if check:
            assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
        return Result(code, out, err)

    return call


def test_fault_unwritable_output_is_refused_before_the_first_request(tmp_path, evaluate):
    entries = write_entries(tmp_path / "r.json", 3)
    (tmp_path / "a-file").write_text("x")
    with FakeJudgeServer() as server:
        proc = evaluate(["--file", str(entries), "--url", server.url,
                           "--output", str(tmp_path / "a-file" / "scores.json")], check=False)
    assert proc.returncode == 2 and "--output: Cannot write to" in proc.stderr and "Traceback" not in proc.stderr
    assert server.requests == []  # nothing was asked (and so nothing scored and lost)


def test_fault_existing_output_is_never_overwritten_silently(tmp_path, evaluate):
    entries = write_entries(tmp_path / "r.json", 3)
    scores = tmp_path / "scores.json"
    scores.write_text('{"earlier": "run"}', encoding="utf-8")
    with FakeJudgeServer() as server:
        proc = evaluate(["--file", str(entries), "--url", server.url, "--output", str(scores)],
                          check=False)
        assert proc.returncode == 2 and "--resume" in proc.stderr and "--overwrite" in proc.stderr
        assert scores.read_text(encoding="utf-8") == '{"earlier": "run"}' and server.requests == []
        proc = evaluate(["--file", str(entries), "--url", server.url, "--output", str(scores),
                           "--resume"], check=False)
        assert proc.returncode == 2 and "not a scores file written by this script" in proc.stderr
        evaluate(["--file", str(entries), "--url", server.url, "--output", str(scores), "--overwrite"])
    assert json.loads(scores.read_text(encoding="utf-8"))["complete"] is True


def test_fault_connection_resets_are_retried_and_every_score_kept(tmp_path, evaluate):
    entries = write_entries(tmp_path / "r.json", 4)
    scores = tmp_path / "scores.json"
    with FakeJudgeServer(mode="reset", faults=2, fault_after=1, answer_for=score_by_content) as server:
        proc = evaluate(["--file", str(entries), "--url", server.url, "--output", str(scores),
                           "--backoff", "0.01"])
    assert len(server.requests) == 6  # 4 entries + 2 resets retried
    saved, by_index = saved_scores(scores)
    assert saved["complete"] and by_index == {0: 0, 1: 1, 2: 2, 3: 3}
    assert "Average judge score: 1.50 over 4 of 4" in proc.stdout


@pytest.mark.parametrize("mode, flag", [("reset", None), ("drip_body", "--timeout"), ("garbage", "--backend")])
def test_fault_judge_fails_mid_run_then_resume_loses_nothing(tmp_path, mode, flag, evaluate):
    """Two entries scored, then the server resets every connection / drips bytes / sends HTML: exit 1 with the
    reason; the two scores are on disk; --resume against a working server asks only for the other three."""
    entries = write_entries(tmp_path / "r.json", 5)
    scores = tmp_path / "scores.json"
    with FakeJudgeServer(mode=mode, fault_after=2, delay=0.2, answer_for=score_by_content) as server:
        proc = evaluate(["--file", str(entries), "--url", server.url, "--output", str(scores),
                           "--timeout", "1", "--connection-retries", "1", "--backoff", "0.01"], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "The 2 entries scored so far are saved" in proc.stderr and "--resume" in proc.stderr
    if flag:
        assert flag in proc.stderr
    saved, by_index = saved_scores(scores)
    assert saved["complete"] is False and by_index == {0: 0, 1: 1}
    with FakeJudgeServer(answer_for=score_by_content) as server:
        proc = evaluate(["--file", str(entries), "--url", server.url, "--output", str(scores),
                           "--resume"])
    assert len(server.requests) == 3 and "2 of 5 entries already scored" in proc.stdout
    saved, by_index = saved_scores(scores)
    assert saved["complete"] and by_index == {i: i for i in range(5)} and saved["average"] == 2.0


def test_fault_resume_refuses_another_judge_or_other_entries(tmp_path, evaluate):
    entries = write_entries(tmp_path / "r.json", 3)
    scores = tmp_path / "scores.json"
    with FakeJudgeServer(answer_for=score_by_content) as server:
        evaluate(["--file", str(entries), "--url", server.url, "--output", str(scores)])
        proc = evaluate(["--file", str(entries), "--url", server.url, "--output", str(scores),
                           "--resume", "--model", "llama3:latest"], check=False)
        assert proc.returncode == 2 and "scored by another judge" in proc.stderr
        proc = evaluate(["--file", str(entries), "--url", server.url, "--output", str(scores),
                           "--resume", "--limit", "2"], check=False)
        assert proc.returncode == 2 and "scores for other entries" in proc.stderr


def test_fault_kill_9_while_scoring_and_writing_loses_nothing(tmp_path):
    """kill -9 three times while scores are being written (the file is rewritten after every entry);
    each time the file is complete JSON holding only correct scores, and --resume finishes the job."""
    n = 60
    entries = write_entries(tmp_path / "r.json", n)
    scores = tmp_path / "scores.json"
    args = [sys.executable, EVALUATE, "--file", str(entries), "--output", str(scores)]
    kept = 0
    with FakeJudgeServer(mode="slow", delay=0.02, answer_for=score_by_content) as server:
        for round_ in range(3):
            proc = subprocess.Popen([*args, "--url", server.url, *(["--resume"] if round_ else [])],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if len(json.loads(scores.read_text(encoding="utf-8"))["entries"]) >= kept + 5:
                        break
                except (OSError, ValueError):
                    pass  # not written yet
                time.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            saved, by_index = saved_scores(scores)  # always parses: never half-written
            assert saved["complete"] is False and by_index == {i: i for i in by_index}
            assert len(by_index) >= kept + 5
            kept = len(by_index)
        requests_before = len(server.requests)
        proc = run_script([EVALUATE, "--file", str(entries), "--output", str(scores), "--url", server.url,
                           "--resume"])
    saved, by_index = saved_scores(scores)
    assert saved["complete"] and by_index == {i: i for i in range(n)}
    assert len(server.requests) - requests_before == n - kept  # only the missing entries were asked again
    assert list(tmp_path.glob(".scores.json.*")) == []  # temporary files of killed writes are cleaned up


def test_evaluate_with_the_local_weak_judge(tmp_path, evaluate):
    """--judge PATH: a model file on this computer judges (a random instruction-tuned stand-in here)."""
    import torch

    from buildllm.checkpoints import save_model
    from buildllm.model import GPT_CONFIG_124M, GPTModel

    torch.manual_seed(0)
    model_file = tmp_path / "judge.pth"
    save_model(GPTModel({**GPT_CONFIG_124M, "emb_dim": 16, "n_layers": 1, "n_heads": 2, "context_length": 256}),
               model_file, meta={"task": "instruction-tuned model", "tokenizer": "gpt2", "prompt_style": "alpaca"})
    entries = write_entries(tmp_path / "r.json", 3)
    proc = evaluate(["--file", str(entries), "--judge", str(model_file),
                       "--output", str(tmp_path / "scores.json"), "--url", free_port_url()])
    assert "a weak judge" in proc.stdout and "Caution: a weak judge" in proc.stdout
    assert "Weak judge -- Average judge score:" in proc.stdout and "over 3 of 3 entries" in proc.stdout
    saved = json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))
    assert saved["weak_judge"] is True and all(0 <= e["judge_score"] <= 100 for e in saved["entries"])
    proc = evaluate(["--file", str(entries), "--judge", str(tmp_path / "nope.pth")], check=False)
    assert proc.returncode == 1 and "cannot be loaded" in proc.stderr and "--judge" in proc.stderr


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
