"""ch06/gpt_class_finetune.py end to end, as a learner runs it from a terminal (tiny models, offline)."""

from __future__ import annotations

import json

import pytest
import torch

from buildllm.classification import load_classifier
from buildllm.model import GPT_CONFIG_124M, GPTModel
from buildllm.training import save_model
from conftest import REPO, run_script

SCRIPT = str(REPO / "ch06" / "gpt_class_finetune.py")
TINY_ARGS = ["--emb-dim", "16", "--n-layers", "1", "--n-heads", "2", "--max-examples", "40", "--epochs", "1",
             "--batch-size", "4", "--eval-freq", "5", "--eval-iter", "1", "--device", "cpu"]

pytestmark = pytest.mark.script


def test_help():
    out = run_script([SCRIPT, "--help"]).stdout
    for flag in ("--weights", "--trainable", "--lora-rank", "--max-length", "--classify", "--device"):
        assert flag in out
    assert "default: gpt2-small" in out and "default: 5e-05" in out


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
    assert len(results["train_accs"]) == 1 and len(results["train_losses"]) == 2  # steps 0 and 5
    assert results["settings"]["lr"] == 5e-5 and results["settings"]["weight_decay"] == 0.1
    assert "Test accuracy:" in proc.stdout
    model = load_classifier(out / "model.pth")
    assert model.cfg["emb_dim"] == 16 and model.out_head.weight.shape == (2, 16)
    assert model.cfg["max_length"] == results["max_length"]


def test_classify_with_saved_model(trained, tmp_path):
    out, _ = trained
    proc = run_script([SCRIPT, "--model", str(out / "model.pth"), "--classify",
                       "You are a winner! Call now to claim your prize.", "--device", "cpu"], cwd=tmp_path)
    assert proc.stdout.strip() in ("spam", "not spam")


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
    model = load_classifier(tmp_path / "lora" / "model.pth")  # merged: a plain GPT classifier
    assert not any("lora" in name for name in model.state_dict())


def test_gpt2_weights_offline_says_what_to_do(tmp_path):
    """No GPT-2 files and no network (a dead proxy stands in for it): a message, not a traceback."""
    dead_proxy = {var: "http://127.0.0.1:9" for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY")}
    proc = run_script([SCRIPT, "--weights", "gpt2-small", "--models-dir", str(tmp_path / "gpt2"), *TINY_ARGS,
                       "--output-dir", str(tmp_path / "out")], check=False,
                      env={**dead_proxy, "no_proxy": "", "NO_PROXY": ""})
    assert proc.returncode == 2
    assert "--weights random" in proc.stderr and "gpt2-small" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--weights", "no/such/model.pth"], "neither a GPT-2 size"),
        (["--weights", "random", "--max-length", "2000"], "Pass --max-length 1024"),
        (["--classify", "hello"], "--classify needs --model PATH"),
    ],
)
def test_bad_input_is_a_message(tmp_path, args, phrase):
    proc = run_script([SCRIPT, *TINY_ARGS, *args, "--output-dir", str(tmp_path)], check=False)
    assert proc.returncode == 2
    assert phrase in proc.stderr
    assert "Traceback" not in proc.stderr
