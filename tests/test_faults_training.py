"""Fault injection for training runs: kill -9 of ch05/gpt_train.py during training and during a checkpoint write.

The killed run is resumed with ``--resume``; its losses must equal those of a run that
was never stopped, and no half-written checkpoint may be left where it could be taken for
a valid one. Names follow issue 15's classes: ``test_lost__*`` (work lost or a run
overwritten) and ``test_silent__*`` (a resumed run that quietly differs).

The killed process runs the real script under a small wrapper that pauses inside the
save function (after the first checkpoint, or halfway through writing the second one),
so the kill lands there every time instead of by luck of timing. Only the killed runs are
separate processes; the others run the script's `main` in this process (one thread, as the
killed ones), which keeps the file fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from buildllm.checkpoints import load_checkpoint
from buildllm.model import GPTModel
from conftest import REPO, load_script

pytestmark = pytest.mark.script

TRAIN = str(REPO / "ch05" / "gpt_train.py")
TINY = ["--emb-dim", "16", "--n-layers", "1", "--n-heads", "2", "--context-length", "16", "--batch-size", "4",
        "--epochs", "1", "--eval-freq", "3", "--eval-iter", "1", "--max-steps", "6", "--checkpoint-every", "2",
        "--device", "cpu"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # the same arithmetic in every run, and fast

WRAPPER = r"""
import pathlib, runpy, sys, time
import torch
import buildllm.checkpoints as checkpoints
from buildllm.files import atomic_write

mode, marker, script, *args = sys.argv[1:]
real_save = checkpoints.atomic_torch_save
calls = 0

def save(obj, path):
    global calls
    calls += 1
    if mode == "during-write" and calls == 2:  # the second checkpoint: stop halfway through writing it
        with atomic_write(path, "wb") as f:
            torch.save(obj, f)
            f.flush()
            pathlib.Path(marker).write_text("writing")
            time.sleep(300)
    result = real_save(obj, path)
    if mode == "after-checkpoint" and calls == 1:  # training goes on after this; we stop it here
        pathlib.Path(marker).write_text("saved")
        time.sleep(300)
    return result

checkpoints.atomic_torch_save = save
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""


def kill_when_marked(mode: str, out: Path, cwd: Path) -> None:
    """Start the training under WRAPPER, wait for its marker, kill -9 it."""
    marker = cwd / f"{mode}.marker"
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, mode, str(marker), TRAIN, *TINY, "--output-dir",
                             str(out)], cwd=cwd, env={**os.environ, **ONE_THREAD}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the training ended before it could be killed:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def train(args: list[str]) -> tuple[int, str, str]:
    """Run gpt_train.py's main(args) in this process with one thread; return (status, stdout, stderr)."""
    module = load_script(TRAIN, "faults_gpt_train")
    saved_env, threads = dict(os.environ), torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = module.main([*TINY, *args])
    finally:
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(saved_env)  # the script sets MPLBACKEND, which must not reach later notebook runs
    return status, out.getvalue(), err.getvalue()


def model_for(out: Path) -> GPTModel:
    config = torch.load(out / "checkpoint.pth", weights_only=True)["config"]
    return GPTModel(config)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    """The metrics of a run that was never stopped."""
    out = tmp_path_factory.mktemp("straight") / "run"
    status, stdout, stderr = train(["--output-dir", str(out)])
    assert status == 0, stderr
    return {**json.loads((out / "metrics.json").read_text()), "folder": out}


@pytest.mark.parametrize("mode, step_on_disk", [("after-checkpoint", 2), ("during-write", 2)])
def test_lost__kill_9_then_resume_gives_the_uninterrupted_losses(mode, step_on_disk, straight, tmp_path):
    out = tmp_path / "run"
    kill_when_marked(mode, out, tmp_path)

    # What the kill left: the last complete checkpoint, and at most a temporary file that does not look like one.
    state, _ = load_checkpoint(out / "checkpoint.pth", model_for(out), restore_rng=False)
    assert state.global_step == step_on_disk
    leftovers = sorted(p.name for p in out.iterdir())
    assert not (out / "model.pth").exists() and not (out / "metrics.json").exists()
    if mode == "during-write":
        temp = [name for name in leftovers if name.startswith(".checkpoint.pth.") and name.endswith(".tmp")]
        assert len(temp) == 1, leftovers  # the half-written checkpoint: hidden, named as temporary

    # Starting again without --resume is refused: the killed run is not overwritten.
    status, _, stderr = train(["--output-dir", str(out)])
    assert status == 2 and "already holds a run" in stderr and "Traceback" not in stderr

    status, stdout, stderr = train(["--output-dir", str(out), "--resume", str(out / "checkpoint.pth")])
    assert status == 0, stderr
    assert f"step {step_on_disk}" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step_losses"] == straight["step_losses"]  # every step's loss, bit for bit
    assert metrics["final_val_loss"] == straight["final_val_loss"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # the stale temporary file was cleaned up


def test_silent__truncated_checkpoint_is_refused_not_resumed(straight, tmp_path):
    data = (straight["folder"] / "checkpoint.pth").read_bytes()
    broken = tmp_path / "checkpoint.pth"
    broken.write_bytes(data[: len(data) // 3])
    status, _, stderr = train(["--output-dir", str(tmp_path / "run"), "--resume", str(broken)])
    assert status == 2 and "Traceback" not in stderr
    assert "truncated or corrupt" in stderr and "checkpoint.pth" in stderr
    assert broken.read_bytes() == data[: len(data) // 3]  # left for the user to inspect
