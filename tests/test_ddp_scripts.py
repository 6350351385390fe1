"""Appendix A: the DDP scripts end to end on the CPU (Gloo), started with mp.spawn and with torchrun."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from conftest import REPO, run_script

from buildllm.distributed import TORCHRUN_VARS, find_free_port

pytestmark = pytest.mark.script

SPAWN = "appendix-A/DDP-script.py"
TORCHRUN = "appendix-A/DDP-script-torchrun.py"
TIMEOUT = 180  # seconds; a hang fails the test instead of blocking the suite


def _clean_env(**extra: str) -> dict:
    """The test environment without torchrun's variables (so nothing leaks in), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in (*TORCHRUN_VARS, "LOCAL_WORLD_SIZE")}
    return {**env, **extra}


def _run_group(*commands: list[str], timeout: int = TIMEOUT) -> list[subprocess.CompletedProcess]:
    """Run commands side by side, each in its own process group; kill every group if any runs past `timeout`."""
    procs = [subprocess.Popen(cmd, cwd=REPO, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True) for cmd in commands]
    results = []
    try:
        for cmd, proc in zip(commands, procs):
            out, err = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{commands} did not finish within {timeout} s (a DDP hang?)")
    finally:
        for proc in procs:  # the launcher and every worker it started
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return results


def _check_training_output(proc: subprocess.CompletedProcess, world_size: int, epochs: int = 3) -> None:
    """Finished, accuracy 1.00 printed once (rank 0 only), every rank trained the same number of batches."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    out = proc.stdout
    assert out.count("훈련 정확도 1.00, 테스트 정확도 1.00") == 1, out
    assert f"프로세스 {world_size}개, 백엔드 gloo" in out
    assert "FutureWarning" not in proc.stderr  # DDP is wrapped with the current option names
    if world_size > 1:
        batches = [len(re.findall(rf"^\[rank {r}\] 에포크", out, re.M)) for r in range(world_size)]
        assert batches == [batches[0]] * world_size and batches[0] >= epochs, out
    # all_reduce_mean: the printed mean of the last epoch is the average of the ranks' losses.
    last = f"에포크 {epochs}/{epochs}"
    rank_losses = [float(x) for x in re.findall(rf"{last}, 배치 .* 손실 ([0-9.]+)", out)]
    mean = float(re.search(rf"{last} 끝: 프로세스 {world_size}개의 평균 훈련 손실 ([0-9.]+)", out).group(1))
    if world_size > 1:  # one batch per rank with these settings
        assert len(rank_losses) == world_size
        assert mean == pytest.approx(sum(rank_losses) / world_size, abs=2e-4)


def _torchrun(nproc: int, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master-addr=127.0.0.1",
            f"--master-port={port}", *extra, TORCHRUN]


def test_torchrun_two_processes():
    """torchrun --nproc_per_node=2 appendix-A/DDP-script-torchrun.py trains to accuracy 1.0."""
    (proc,) = _run_group(_torchrun(2, find_free_port()))
    _check_training_output(proc, world_size=2)


def test_torchrun_two_nodes_on_one_machine():
    """The docstring's multi-node command (--nnodes=2, --node-rank 0 and 1), both "machines" on localhost."""
    port = find_free_port()
    node0, node1 = _run_group(_torchrun(1, port, "--nnodes=2", "--node-rank=0"),
                              _torchrun(1, port, "--nnodes=2", "--node-rank=1"))
    assert node1.returncode == 0, node1.stderr[-3000:]
    assert "[rank 1]" in node1.stdout and "정확도" not in node1.stdout  # rank 1 lives on node 1, prints no results
    both = subprocess.CompletedProcess(node0.args, node0.returncode, node0.stdout + node1.stdout, node0.stderr)
    _check_training_output(both, world_size=2)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_spawn_script(world_size):
    """python appendix-A/DDP-script.py --world-size N: no hang, no empty rank, accuracy 1.0 (3 > number of batches)."""
    (proc,) = _run_group([sys.executable, SPAWN, "--world-size", str(world_size), "--master-addr", "127.0.0.1",
                          "--master-port", str(find_free_port())])
    _check_training_output(proc, world_size=world_size)


@pytest.mark.parametrize("script", [SPAWN, TORCHRUN])
def test_help(script):
    proc = run_script([script, "--help"])
    assert "--epochs" in proc.stdout and "--seed" in proc.stdout


def test_spawn_bad_world_size():
    proc = run_script([SPAWN, "--world-size", "0"], check=False)
    assert proc.returncode == 2
    assert "argument --world-size: must be a whole number >= 1, got 0" in proc.stderr


def test_spawn_port_in_use():
    """A busy rendezvous port: a clear message naming --master-port and --rdzv-endpoint, no workers started."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_script([SPAWN, "--master-addr", "127.0.0.1", "--master-port", str(port)], check=False,
                          timeout=TIMEOUT)
    assert proc.returncode == 2
    assert f"Port {port} on 127.0.0.1 is already in use" in proc.stderr
    assert "--master-port" in proc.stderr and "--rdzv-endpoint" in proc.stderr
    assert "정확도" not in proc.stdout


@pytest.mark.parametrize("env, phrase", [
    ({}, "not started by torchrun"),
    ({"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
     "RANK=2 must be between 0 and WORLD_SIZE-1=1"),
])
def test_torchrun_script_without_torchrun(env, phrase):
    """Run directly with torchrun's variables missing or inconsistent: non-zero exit and how to launch it.

    (Every other bad combination is checked in-process in test_distributed.py.)"""
    proc = subprocess.run([sys.executable, TORCHRUN], cwd=REPO, env=_clean_env(**env), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 2
    assert phrase in proc.stderr
    assert "torchrun --nproc_per_node=2 appendix-A/DDP-script-torchrun.py" in proc.stderr
