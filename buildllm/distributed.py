"""Distributed data-parallel (DDP) training helpers (appendix A, also used by ch05/gpt_train.py).

DDP runs one process per device. Every process holds a full copy of the model,
reads its own slice of each epoch's data, and after ``backward()`` the processes
average their gradients (an all-reduce), so every copy takes the same optimizer
step and the copies stay identical.

Two ways to start the processes:

* ``torch.multiprocessing.spawn`` (appendix-A/DDP-script.py): the script starts
  its workers itself and calls :func:`ddp_setup` in each of them.
* ``torchrun`` (appendix-A/DDP-script-torchrun.py, ch05/gpt_train.py): torchrun
  starts the workers and sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
  MASTER_PORT; each worker calls :func:`setup_from_env`.

Typical use under torchrun (a script that also runs as a single process checks
``is_torchrun_launch()`` first)::

    info = setup_from_env()                       # DistInfo: rank, local_rank, world_size, device
    loader = make_distributed_loader(dataset, batch_size=8, shuffle=True, seed=123, drop_last=True)
    model = wrap_ddp(model.to(info.device), info.device)
    for epoch in range(num_epochs):
        loader.sampler.set_epoch(epoch)           # a new shuffle each epoch, the same one on every rank
        ...
        print0(f"epoch {epoch}: loss {all_reduce_mean(loss.item()):.3f}")
    cleanup()

``make_distributed_loader``, ``all_reduce_mean``, ``print0`` and ``is_main_process``
also work without a process group (one process, rank 0), so the same training
code runs with and without torchrun.

Backends: NCCL on CUDA GPUs (Linux), Gloo otherwise (CPU, and Windows, where
NCCL does not exist). On Windows with PyTorch 2.4 and later versions built
without libuv, the rendezvous store fails with "use_libuv was requested but
PyTorch was build without libuv support"; set the environment variable
``USE_LIBUV=0`` (``set USE_LIBUV=0`` in cmd, ``$env:USE_LIBUV=0`` in PowerShell)
before launching. :func:`ddp_setup` sets it for you on Windows.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

DEFAULT_MASTER_PORT = 12345
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TORCHRUN_HINT = (
    "Launch this script with torchrun, for example:\n"
    "    torchrun --nproc_per_node=2 {script}\n"
    "(or `python -m torch.distributed.run --nproc_per_node=2 {script}`); "
    "torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT for every process."
)


class DistributedLaunchError(RuntimeError):
    """The process was not started the way DDP needs (missing or inconsistent torchrun variables)."""


class PortInUseError(RuntimeError):
    """The rendezvous port is already taken by another program (often an earlier DDP run)."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: global rank, rank on its machine, number of processes, device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device


def get_backend(device: str | torch.device = "auto") -> str:
    """Return "nccl" for CUDA devices (when NCCL is available), "gloo" otherwise."""
    device_type = torch.device(device).type if str(device) != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda" and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def device_for_rank(local_rank: int, device: str = "auto") -> torch.device:
    """Return the device one process uses: cuda:local_rank with GPUs (device "auto" or "cuda"), else cpu."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"DDP device must be 'auto', 'cpu' or 'cuda', not {device!r} (MPS has no DDP backend).")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but PyTorch sees no CUDA GPU; use 'auto' or 'cpu'.")
    n_gpus = torch.cuda.device_count()
    if local_rank >= n_gpus:
        raise DistributedLaunchError(
            f"Process with local rank {local_rank} needs GPU {local_rank}, but this machine has only {n_gpus} "
            f"GPU(s). Start at most {n_gpus} processes per machine (torchrun's nproc_per_node), "
            "or train on the CPU.")
    return torch.device("cuda", local_rank)


def check_port_free(port: int, host: str = "localhost") -> None:
    """Raise PortInUseError, with a suggestion, if another program already listens on `host`:`port`."""
    if not 0 < port < 65536:
        raise ValueError(f"Port {port} is out of range; pick one between 1024 and 65535, e.g. 29501.")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if os.name != "nt":  # ignore sockets of a finished run in TIME_WAIT, as the rendezvous server does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)) or "in use" in str(exc):
            raise PortInUseError(
                f"Port {port} on {host} is already in use (another DDP run still going?). Choose a free port, "
                f"e.g. {port + 1} (with torchrun: its master port or rendezvous endpoint).") from exc
        # Any other error (e.g. `host` is another machine's address): leave the check to the rendezvous.
    finally:
        sock.close()


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now (the operating system picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _import_dynamo_before_joining() -> None:
    """Import torch._dynamo before the process group exists (works around a shutdown crash)."""
    # DistributedDataParallel imports torch._dynamo when it is first created. If that first import happens
    # after init_process_group, PyTorch (seen with 2.13 on CPU/Gloo) keeps references to the group that
    # destroy_process_group() cannot drop; the group is then torn down while the interpreter exits, which
    # now and then kills a finished process with "terminate called without an active exception".
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # builds or Python versions without torch.compile support: nothing to work around
        pass


def ddp_setup(rank: int, world_size: int, master_addr: str = "localhost",
              master_port: int = DEFAULT_MASTER_PORT, device: str = "auto") -> DistInfo:
    """Join the process group as process `rank` of `world_size` (for torch.multiprocessing.spawn workers)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"Need 0 <= rank < world_size and world_size >= 1, got rank={rank}, "
                         f"world_size={world_size}.")
    os.environ["MASTER_ADDR"] = master_addr
    os.environ["MASTER_PORT"] = str(master_port)
    if os.name == "nt":
        os.environ.setdefault("USE_LIBUV", "0")  # Windows builds of PyTorch may lack libuv
    run_device = device_for_rank(rank, device)
    if run_device.type == "cuda":
        torch.cuda.set_device(run_device)
    _import_dynamo_before_joining()
    dist.init_process_group(backend=get_backend(run_device), rank=rank, world_size=world_size)
    return DistInfo(rank=rank, local_rank=rank, world_size=world_size, device=run_device)


def is_torchrun_launch() -> bool:
    """True when torchrun's variables are present, i.e. the script should call setup_from_env()."""
    return any(name in os.environ for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))


def read_torchrun_env(script: str = "your_script.py") -> tuple[int, int, int]:
    """Return (rank, local_rank, world_size) from torchrun's variables; raise DistributedLaunchError if wrong."""
    hint = TORCHRUN_HINT.format(script=script)
    missing = [name for name in TORCHRUN_VARS if not os.environ.get(name)]
    if missing:
        raise DistributedLaunchError(
            f"Environment variable(s) {', '.join(missing)} not set: this process was not started by torchrun.\n"
            + hint)
    values = {}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"):
        try:
            values[name] = int(os.environ[name])
        except ValueError:
            raise DistributedLaunchError(
                f"{name}={os.environ[name]!r} is not an integer.\n" + hint) from None
    rank, local_rank, world_size = values["RANK"], values["LOCAL_RANK"], values["WORLD_SIZE"]
    problems = []
    if world_size < 1:
        problems.append(f"WORLD_SIZE={world_size} must be at least 1")
    if not 0 <= rank < max(world_size, 1):
        problems.append(f"RANK={rank} must be between 0 and WORLD_SIZE-1={world_size - 1}")
    if not 0 <= local_rank <= max(rank, 0):
        problems.append(f"LOCAL_RANK={local_rank} must be between 0 and RANK={rank}")
    local_world = os.environ.get("LOCAL_WORLD_SIZE")
    if local_world and local_world.isdigit() and local_rank >= int(local_world):
        problems.append(f"LOCAL_RANK={local_rank} must be smaller than LOCAL_WORLD_SIZE={local_world}")
    if problems:
        raise DistributedLaunchError("Inconsistent torchrun variables: " + "; ".join(problems) + ".\n" + hint)
    return rank, local_rank, world_size


def setup_from_env(device: str = "auto", script: str = "your_script.py") -> DistInfo:
    """Join the process group described by torchrun's environment variables; return this process's DistInfo."""
    rank, local_rank, world_size = read_torchrun_env(script)
    if os.name == "nt":
        os.environ.setdefault("USE_LIBUV", "0")
    run_device = device_for_rank(local_rank, device)
    if run_device.type == "cuda":
        torch.cuda.set_device(run_device)
    _import_dynamo_before_joining()
    # init_method "env://" (the default) reads MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE.
    dist.init_process_group(backend=get_backend(run_device))
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=run_device)


def is_distributed() -> bool:
    """True inside an initialized process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes in the job (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0, the process that prints, plots and saves checkpoints."""
    return get_rank() == 0


def print0(*args, **kwargs) -> None:
    """print() on rank 0 only, so a message appears once instead of once per process."""
    if is_main_process():
        print(*args, **kwargs)


def rank_print(*args, sep: str = " ", end: str = "\n", file=None, flush: bool = True) -> None:
    """print() on every rank, prefixed with "[rank r]" when distributed (one write, so lines do not interleave)."""
    text = sep.join(str(arg) for arg in args)
    if is_distributed():
        text = f"[rank {get_rank()}] {text}"
    file = file or sys.stdout
    file.write(text + end)
    if flush:
        file.flush()


def cleanup() -> None:
    """Wait for every rank, then leave the process group (safe to call when none was joined).

    Call it once at the end of a successful run. The barrier keeps a fast rank from
    tearing down its connections while a slower one still uses them. After an
    exception, do not call it (the other ranks may never reach the barrier): let the
    process exit, and the launcher stops the others.
    """
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Wrap `model` (already on `device`) in DistributedDataParallel, without re-sending its buffers every step.

    Our models' only buffers are constant causal masks, identical in every process:
    they are synced once when DDP starts, not before every forward pass. (PyTorch
    2.13 renamed the option: ``forward_sync_buffers``; older versions call it
    ``broadcast_buffers`` and warn about it in newer ones.)
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    options = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in options else {"broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=device_ids, **no_sync)


def all_reduce_mean(value: float | torch.Tensor) -> float | torch.Tensor:
    """Average `value` over all ranks (every rank must call it); returns a float for a float, else a tensor."""
    if not is_distributed():
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    if torch.is_tensor(value):
        reduced = value.detach().clone().to(device)
    else:
        reduced = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    reduced /= get_world_size()
    if torch.is_tensor(value):
        return reduced.to(value.device)
    return reduced.item()


def make_distributed_loader(dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                            drop_last: bool = False, num_replicas: int | None = None, rank: int | None = None,
                            **loader_kwargs) -> DataLoader:
    """Return a DataLoader that gives this rank its share of `dataset`; every rank gets the same number of batches.

    How the data is split (the choice that keeps collectives from hanging):

    * The DistributedSampler always pads: when ``len(dataset)`` is not a multiple
      of the number of processes, it repeats samples from the start of the
      (shuffled) order, so every rank gets ``ceil(len(dataset) / num_replicas)``
      samples and every sample is used (a few twice per epoch).
    * ``drop_last`` applies per rank, as in a plain DataLoader: the last
      incomplete batch of each rank is dropped. Because all ranks hold the same
      number of samples, they all get the same number of batches.
    * If a rank's share is smaller than ``batch_size`` and ``drop_last=True``
      (a tiny dataset or many processes), dropping would leave every rank with no
      batch at all; then the short batch is kept and a warning says so.

    ``num_replicas`` and ``rank`` default to the running process group (1 and 0
    without one). Call ``loader.sampler.set_epoch(epoch)`` at the start of each
    epoch so that each epoch is shuffled differently (and identically on all ranks).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if len(dataset) == 0:
        raise ValueError("The dataset is empty: there is nothing to split across processes.")
    num_replicas = get_world_size() if num_replicas is None else num_replicas
    rank = get_rank() if rank is None else rank
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"Need num_replicas >= 1 and 0 <= rank < num_replicas, got num_replicas={num_replicas}, "
                         f"rank={rank}.")
    sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                                 drop_last=False)
    if drop_last and sampler.num_samples < batch_size:
        warnings.warn(
            f"Each of the {num_replicas} processes gets only {sampler.num_samples} sample(s) of {len(dataset)}, "
            f"fewer than batch_size={batch_size}; keeping the short batch instead of dropping it, so that every "
            "process still has one batch per epoch.", stacklevel=2)
        drop_last = False
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **loader_kwargs)
