"""ch06/gpt_class_finetune.py end to end, as a learner runs it from a terminal (tiny models, offline)."""

from __future__ import annotations

import json

import pytest
import torch

from buildllm.checkpoints import save_model
from buildllm.classification import load_classifier
from buildllm.model import GPT_CONFIG_124M, GPTModel
from conftest import REPO, run_script

SCRIPT = str(REPO / "ch06" / "gpt_class_finetune.py")
CLASSIFY = str(REPO / "ch06" / "classify.py")
TINY_ARGS = ["--emb-dim", "16", "--n-layers", "1", "--n-heads", "2", "--max-examples", "40", "--epochs", "1",
             "--batch-size", "4", "--eval-freq", "5", "--eval-iter", "1", "--device", "cpu"]

pytestmark = pytest.mark.script


def test_help():
    out = run_script([SCRIPT, "--help"]).stdout
    for flag in ("--weights", "--trainable", "--lora-rank", "--max-length", "--device", "--epochs", "--seed"):
        assert flag in out
    assert "default: gpt2-small" in out and "default: 5e-05" in out
    assert "(default: None)" not in out and out.count("(default: gpt2-small)") == 2  # each default shown once
    classify_help = run_script([CLASSIFY, "--help"]).stdout
    assert "--weights" in classify_help and "TEXT" in classify_help


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run from a foreign working directory; returns (output dir, process)."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    proc = run_script([SCRIPT, "--weights", "random", *TINY_ARGS, "--output-dir", "out"], cwd=cwd)
    return cwd / "out", proc


def test_training_writes_model_plots_and_results(trained):
    out, proc = trained
    for name in ("model.pth", "loss-plot.png", "loss-plot.pdf", "accuracy-plot.png", "accuracy-plot.pdf",
                 "results.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
        assert 0.0 <= results[key] <= 1.0
    # 40 balanced messages -> 28 train (7 batches of 4), 4 validation, 8 test.
    assert results["examples_seen"] == 28
    assert len(results["train_accs_estimated"]) == 1 and len(results["train_losses"]) == 2  # steps 0 and 5
    assert results["settings"]["lr"] == 5e-5 and results["settings"]["weight_decay"] == 0.1
    final = [line for line in proc.stdout.splitlines() if line.startswith("Accuracy on the whole sets")]
    assert final == [f"Accuracy on the whole sets: train {results['train_accuracy']:.2%}, validation "
                     f"{results['val_accuracy']:.2%}, test {results['test_accuracy']:.2%}"]
    assert "Training accuracy" not in proc.stdout  # the per-epoch lines say they are estimates on --eval-iter batches
    model, meta = load_classifier(out / "model.pth")
    assert model.cfg["emb_dim"] == 16 and model.out_head.weight.shape == (2, 16)
    assert meta["max_length"] == results["max_length"] and meta["tokenizer"] == "gpt2"


def test_classify_with_saved_model(trained, tmp_path):
    out, _ = trained
    proc = run_script([CLASSIFY, "--weights", str(out / "model.pth"),
                       "You are a winner! Call now to claim your prize.", "--device", "cpu"], cwd=tmp_path)
    assert proc.stdout.strip() in ("spam", "not spam")
    two = run_script([CLASSIFY, "--weights", str(out / "model.pth"), "one", "two"], cwd=tmp_path).stdout.splitlines()
    assert len(two) == 2 and two[0].endswith("\tone")
    bad = run_script([CLASSIFY, "--weights", str(out / "missing.pth"), "x"], cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "No model file at" in bad.stderr and "Traceback" not in bad.stderr


def test_lora_from_a_saved_language_model(tmp_path):
    """--weights PATH (a ch05-style model.pth) with --lora-rank: LoRA is merged before saving."""
    cfg = {**GPT_CONFIG_124M, "emb_dim": 16, "n_layers": 1, "n_heads": 2, "context_length": 256, "qkv_bias": True}
    torch.manual_seed(0)
    save_model(GPTModel(cfg), tmp_path / "pretrained.pth")
    proc = run_script([SCRIPT, "--weights", str(tmp_path / "pretrained.pth"), "--lora-rank", "2", "--lora-alpha",
                       "4", *TINY_ARGS, "--output-dir", str(tmp_path / "lora")])
    results = json.loads((tmp_path / "lora" / "results.json").read_text())
    # Rank 2 on 6 linear layers (16 -> 16 x4, 16 -> 64, 64 -> 16) and the head (16 -> 2).
    assert results["trainable_parameters"] == 4 * 2 * 32 + 2 * 2 * 80 + 2 * 18 == 612
    assert "LoRA rank 2, alpha 4" in proc.stdout
    model, _ = load_classifier(tmp_path / "lora" / "model.pth")  # merged: a plain GPT classifier
    assert not any("lora" in name for name in model.state_dict())


def test_gpt2_weights_offline_says_what_to_do(tmp_path):
    """No GPT-2 files and no network (a dead proxy stands in for it): a message, not a traceback."""
    dead_proxy = {var: "http://127.0.0.1:9" for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY")}
    proc = run_script([SCRIPT, "--weights", "gpt2-small", "--models-dir", str(tmp_path / "gpt2"), *TINY_ARGS,
                       "--output-dir", str(tmp_path / "out")], check=False,
                      env={**dead_proxy, "no_proxy": "", "NO_PROXY": ""})
    assert proc.returncode == 2
    assert "gpt2-small" in proc.stderr and "no network connection" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--weights", "no/such/model.pth"], "neither a known name nor an existing file"),
        (["--weights", "random", "--max-length", "2000"], "Pass --max-length 1024"),
        (["--weights", "random", "--lr", "-1"], "argument --lr: must be a finite number > 0"),
        (["--weights", "random", "--device", "gpu"], "argument --device: choose auto, cpu, cuda"),
    ],
)
def test_bad_input_is_a_message(tmp_path, args, phrase):
    proc = run_script([SCRIPT, *TINY_ARGS, *args, "--output-dir", str(tmp_path)], check=False)
    assert proc.returncode == 2
    assert phrase in proc.stderr
    assert "Traceback" not in proc.stderr
