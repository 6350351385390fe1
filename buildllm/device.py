"""Choosing the compute device and seeding random number generators (all chapters)."""

from __future__ import annotations

import random

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def get_device(name: str = "auto") -> torch.device:
    """Return the torch device for `name`: "auto" picks cuda, then mps, then cpu."""
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise ValueError(f"Unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N).")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"Device {name!r} was requested but PyTorch sees no CUDA GPU; use 'auto' or 'cpu'.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("Device 'mps' was requested but MPS is not available; use 'auto' or 'cpu'.")
    return torch.device(name)


def setup_device(name: str = "auto", threads: int | None = None) -> torch.device:
    """`get_device(name)`, after setting PyTorch's CPU threads to `threads` (None: PyTorch's own choice)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}.")
        torch.set_num_threads(threads)
    return get_device(name)


def describe_device(device: torch.device) -> str:
    """A short name of `device` for tables and plot titles: the GPU's name, or e.g. "cpu, 2 threads"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}, {torch.get_num_threads()} threads"


def set_seed(seed: int) -> None:
    """Seed Python's and PyTorch's random number generators (CPU and all GPUs)."""
    random.seed(seed)
    torch.manual_seed(seed)
