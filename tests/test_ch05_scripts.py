"""Chapter 5's scripts run end to end from another folder, as a learner runs them from a terminal."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import REPO, load_script, run_script

pytestmark = pytest.mark.script

TRAIN = str(REPO / "ch05" / "gpt_train.py")
GENERATE = str(REPO / "ch05" / "gpt_generate.py")
DOWNLOAD = str(REPO / "ch05" / "gpt_download.py")
TINY = ["--emb-dim", "32", "--n-layers", "1", "--n-heads", "2", "--context-length", "32", "--batch-size", "4",
        "--epochs", "1", "--eval-freq", "2", "--eval-iter", "1"]
# Every download goes to a closed local port: a machine without network, whatever this one has.
NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


@pytest.mark.parametrize(("script", "flag"), [(TRAIN, "--resume"), (GENERATE, "--chat"),
                                             (DOWNLOAD, "--models-dir")])
def test_help(script, flag, tmp_path):
    out = run_script([script, "--help"], cwd=tmp_path).stdout
    assert out.startswith("usage:")
    assert flag in out


def test_train_defaults_are_the_books():
    args = load_script(TRAIN, "gpt_train").build_parser().parse_args([])
    assert (args.data, args.epochs, args.lr, args.weight_decay, args.batch_size, args.context_length) == (
        "the-verdict", 10, 4e-4, 0.1, 2, 256)
    assert (args.model_size, args.drop_rate, args.train_ratio, args.seed, args.eval_freq, args.eval_iter) == (
        "gpt2-small", 0.1, 0.9, 123, 5, 5)
    assert (args.start_context, args.device, args.output_dir) == ("Every effort moves you", "auto", "runs/ch05")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run of 3 steps, started from another folder; then resumed to 5 steps."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    first = run_script([TRAIN, *TINY, "--max-steps", "3", "--output-dir", "run", "--tensorboard", "tb"], cwd=cwd)
    metrics_first = json.loads((cwd / "run" / "metrics.json").read_text())
    refused = run_script([TRAIN, *TINY, "--max-steps", "5", "--output-dir", "run"], cwd=cwd, check=False)
    resumed = run_script([TRAIN, *TINY, "--max-steps", "5", "--output-dir", "run",
                          "--resume", str(cwd / "run" / "checkpoint.pth")], cwd=cwd)
    return cwd, first, metrics_first, resumed, refused


def test_an_existing_run_is_never_overwritten_silently(trained, tmp_path):
    cwd, *_, refused = trained
    assert refused.returncode == 2 and "already holds a run" in refused.stderr and "--resume" in refused.stderr
    assert "Traceback" not in refused.stderr
    # --overwrite replaces it on purpose; a fresh folder needs neither.
    run_script([TRAIN, *TINY, "--max-steps", "1", "--output-dir", "other"], cwd=tmp_path)
    again = run_script([TRAIN, *TINY, "--max-steps", "1", "--output-dir", "other", "--overwrite",
                        "--no-checkpoint"], cwd=tmp_path)
    assert "Saved model.pth, loss.png" in again.stdout
    assert not (tmp_path / "other" / "checkpoint.pth").exists() or "checkpoint.pth," not in again.stdout


def test_train_writes_every_output(trained):
    cwd, first, metrics, *_ = trained
    assert "에포크 1/1 | 스텝     0 | 훈련 손실" in first.stdout
    assert "에포크 1/1 | 스텝     2 |" in first.stdout
    for name in ("model.pth", "checkpoint.pth", "loss.png", "loss.pdf", "metrics.json"):
        assert (cwd / "run" / name).stat().st_size > 0, name
    assert metrics["global_steps"] == metrics["steps_this_run"] == 3
    assert metrics["tokens_seen"] == 3 * 4 * 32
    assert metrics["config"]["emb_dim"] == 32 and metrics["config"]["context_length"] == 32
    for key in ("final_train_loss", "final_val_loss", "wall_time_s", "tokens_per_s"):
        assert metrics[key] > 0, key
    saved = torch.load(cwd / "run" / "model.pth", weights_only=True)
    assert set(saved) == {"format", "architecture", "config", "model_state_dict", "meta"}
    assert saved["meta"]["tokenizer"] == "gpt2" and saved["architecture"] == "gpt"
    assert any(p.name.startswith("events.out.tfevents") for p in (cwd / "tb").iterdir())  # --tensorboard tb


def test_resume_continues_like_an_uninterrupted_run(trained, tmp_path):
    cwd, _, _, resumed, _ = trained
    assert "Resuming from" in resumed.stdout and "step 3" in resumed.stdout
    metrics = json.loads((cwd / "run" / "metrics.json").read_text())
    assert (metrics["global_steps"], metrics["steps_this_run"]) == (5, 2)
    run_script([TRAIN, *TINY, "--max-steps", "5", "--output-dir", "straight"], cwd=tmp_path)
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert metrics["final_train_loss"] == straight["final_train_loss"]
    assert metrics["final_val_loss"] == straight["final_val_loss"]


def test_resume_with_another_architecture_names_the_mismatch(trained):
    cwd, *_ = trained
    proc = run_script([TRAIN, *TINY[2:], "--emb-dim", "48", "--output-dir", "other",
                       "--resume", str(cwd / "run" / "checkpoint.pth")], cwd=cwd, check=False)
    assert proc.returncode == 2
    assert "different architecture (emb_dim 32 vs 48" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_generate_from_the_trained_checkpoint_crops_a_long_prompt(trained):
    cwd, *_ = trained
    long_prompt = "Every effort moves you " * 10  # 40 tokens; the tiny model's context is 32
    proc = run_script([GENERATE, "--weights", str(cwd / "run" / "model.pth"), "--prompt", long_prompt,
                       "--max-new-tokens", "4", "--temperature", "0"], cwd=cwd)
    assert proc.stdout.startswith(long_prompt)
    assert "more than the context size 32" in proc.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--temperature", "-1"], "argument --temperature: must be a temperature between 0"),
     (["--temperature", "inf"], "argument --temperature: must be a temperature between 0"),
     (["--top-k", "0"], "argument --top-k: must be a whole number >= 1"),
     (["--top-k", "60000"], "--top-k 60000 is larger than the vocabulary"),
     (["--chat"], "was not instruction-tuned")],
)
def test_generate_rejects_bad_sampling_settings(trained, flags, message):
    cwd, *_ = trained
    proc = run_script([GENERATE, "--weights", str(cwd / "run" / "model.pth"), *flags], cwd=cwd, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_generate_without_weights_or_network_explains_and_exits(tmp_path):
    proc = run_script([GENERATE, "--weights", "gpt2-small", "--models-dir", "empty"],
                      cwd=tmp_path, env=NO_NETWORK, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"Looked in: {(tmp_path / 'empty' / 'gpt2' / '124M').resolve()}" in proc.stderr
    assert "https://huggingface.co/openai-community/gpt2/resolve/main/model.safetensors" in proc.stderr


def test_download_without_network_explains_and_exits(tmp_path):
    proc = run_script([DOWNLOAD, "--weights", "124M", "--source", "openai", "--models-dir", "models", "--retries",
                       "1"], cwd=tmp_path, env=NO_NETWORK, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "not available" in proc.stderr and "model.ckpt.data-00000-of-00001" in proc.stderr
    assert "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/hparams.json" in proc.stderr
    assert not any((tmp_path / "models" / "gpt2" / "124M").glob("*"))  # nothing half-written left behind


def test_train_with_a_missing_text_file(tmp_path):
    proc = run_script([TRAIN, "--data", "nowhere.txt"], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "--data nowhere.txt: no such file" in proc.stderr
