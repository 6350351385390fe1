"""ch05/gpt_train.py under torchrun: 2 CPU processes (Gloo) train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DistributedSampler

from conftest import REPO, run_script

from buildllm.distributed import TORCHRUN_VARS, find_free_port
from buildllm.model import GPTModel
from buildllm.checkpoints import load_model
from buildllm.trainer import EpochShuffleSampler

pytestmark = pytest.mark.script

TRAIN = str(REPO / "ch05" / "gpt_train.py")
# No dropout: then the losses depend only on the weights and the data, not on random masks.
TINY = ["--emb-dim", "32", "--n-layers", "1", "--n-heads", "2", "--context-length", "16", "--drop-rate", "0.0",
        "--epochs", "1", "--eval-freq", "2", "--eval-iter", "2"]
TIMEOUT = 300  # seconds; a hang fails the test instead of blocking the suite


def torchrun(args: list[str], cwd, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=nproc ch05/gpt_train.py ARGS` in its own process group, killed after TIMEOUT."""
    env = {k: v for k, v in os.environ.items() if k not in (*TORCHRUN_VARS, "LOCAL_WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master-addr=127.0.0.1",
           f"--master-port={find_free_port()}", TRAIN, *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun {' '.join(args)} did not finish within {TIMEOUT} s (a DDP hang?)")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every worker it started
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.parametrize("num_replicas", [2, 3])
def test_the_shares_of_the_processes_make_up_the_single_process_batches(num_replicas):
    """Rank r takes every num_replicas-th index: the j-th batches of all ranks = the j-th batch of one process."""
    data, b = list(range(23)), 2
    single = EpochShuffleSampler(data, seed=5)
    single.set_epoch(3)
    order = list(single)
    shares = []
    for rank in range(num_replicas):
        sampler = EpochShuffleSampler(data, seed=5, num_replicas=num_replicas, rank=rank)
        sampler.set_epoch(3)
        shares.append(list(sampler))
        assert len(sampler) == len(shares[-1]) == 23 // num_replicas
        # The same split as PyTorch's DistributedSampler (same seed + epoch) when it drops the remainder.
        torch_sampler = DistributedSampler(data, num_replicas=num_replicas, rank=rank, seed=5, drop_last=True)
        torch_sampler.set_epoch(3)
        assert shares[-1] == list(torch_sampler)
    global_batch = b * num_replicas
    for j in range(len(shares[0]) // b):
        together = sorted(i for share in shares for i in share[j * b:(j + 1) * b])
        assert together == sorted(order[j * global_batch:(j + 1) * global_batch])


def test_bad_shares_are_refused():
    with pytest.raises(ValueError, match="0 <= rank < num_replicas"):
        EpochShuffleSampler(range(10), num_replicas=2, rank=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process with batch 4 for 4 steps; 2 processes with batch 2 each for 2 steps, then resumed to 4 steps."""
    cwd = tmp_path_factory.mktemp("ddp")
    run_script([TRAIN, *TINY, "--batch-size", "4", "--max-steps", "4", "--output-dir", "single"], cwd=cwd)
    first = _ok(torchrun([*TINY, "--batch-size", "2", "--max-steps", "2", "--output-dir", "ddp"], cwd))
    first_metrics = json.loads((cwd / "ddp" / "metrics.json").read_text())
    resumed = _ok(torchrun([*TINY, "--batch-size", "2", "--max-steps", "4", "--output-dir", "ddp",
                            "--resume", "ddp/checkpoint.pth"], cwd))
    single = json.loads((cwd / "single" / "metrics.json").read_text())
    ddp = json.loads((cwd / "ddp" / "metrics.json").read_text())
    return cwd, single, first, first_metrics, resumed, ddp


def test_two_processes_give_the_losses_of_one_with_the_same_global_batch(runs):
    _, single, _, first_metrics, _, ddp = runs
    assert (ddp["world_size"], ddp["global_batch_size"], single["global_batch_size"]) == (2, 4, 4)
    assert len(first_metrics["step_losses"]) == 2 and len(ddp["step_losses"]) == len(single["step_losses"]) == 4
    assert first_metrics["step_losses"] == pytest.approx(single["step_losses"][:2], abs=1e-4)
    assert ddp["step_losses"] == pytest.approx(single["step_losses"], abs=1e-4)  # steps 3-4 after the resume
    # Evaluation: each process takes its share of the same batches; the average equals one process's loss.
    assert ddp["final_train_loss"] == pytest.approx(single["final_train_loss"], abs=1e-4)
    assert ddp["final_val_loss"] == pytest.approx(single["final_val_loss"], abs=1e-4)
    assert ddp["tokens_seen"] == single["tokens_seen"] == 4 * 4 * 16


def test_gradient_accumulation_under_torchrun(runs, tmp_path):
    """2 processes x batch 1 x 2 accumulation steps (gradients all-reduced once per step): the same global batch."""
    _, single, *_ = runs
    _ok(torchrun([*TINY, "--batch-size", "1", "--grad-accum-steps", "2", "--max-steps", "4", "--output-dir", "acc"],
                 tmp_path))
    accumulated = json.loads((tmp_path / "acc" / "metrics.json").read_text())
    assert accumulated["global_batch_size"] == 4
    assert accumulated["step_losses"] == pytest.approx(single["step_losses"], abs=1e-4)


def test_only_rank_0_prints_and_resume_works_under_torchrun(runs):
    cwd, _, first, _, resumed, ddp = runs
    assert first.stdout.count("에포크 1/1 | 스텝     0 | 훈련 손실") == 1
    assert "FutureWarning" not in first.stderr  # DDP is wrapped with the current option names
    assert first.stdout.count("Final train loss") == 1
    assert "x 2 processes: 72 steps per epoch of 4 sequences" in first.stdout
    assert resumed.stdout.count("Resuming from ddp/checkpoint.pth: epoch 1, step 2.") == 1
    assert "different settings" not in resumed.stderr
    assert (ddp["global_steps"], ddp["steps_this_run"]) == (4, 2)
    for name in ("model.pth", "checkpoint.pth", "loss.png", "metrics.json"):
        assert (cwd / "ddp" / name).stat().st_size > 0, name
    payload = torch.load(cwd / "ddp" / "checkpoint.pth", weights_only=True)
    assert len(payload["rng_states_by_rank"]) == 2  # each process's random state, for an exact resume
    assert payload["extra"]["world_size"] == 2


def test_the_saved_model_loads_in_one_process(runs):
    cwd, *_ = runs
    model = load_model(cwd / "ddp" / "model.pth")  # no "module." prefixes: the unwrapped model was saved
    single = load_model(cwd / "single" / "model.pth")
    assert isinstance(model, GPTModel) and model.cfg == single.cfg
    x = torch.tensor([[464, 1110, 318, 257, 1332]])
    torch.testing.assert_close(model.eval()(x), single.eval()(x), atol=1e-3, rtol=0)


def test_a_batch_too_large_for_the_shares_fails_cleanly(tmp_path):
    """Every process exits with the message (no hang at a barrier), and torchrun reports the failure."""
    proc = torchrun([*TINY, "--batch-size", "200", "--output-dir", "out"], tmp_path)
    assert proc.returncode != 0
    assert "split over 2 processes each gets 144, fewer than the per-process batch_size=200" in proc.stderr
    assert not (tmp_path / "out" / "model.pth").exists()
