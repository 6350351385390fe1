"""buildllm.device: choosing the device, the CPU threads, and naming the device in benchmark tables."""

from __future__ import annotations

import pytest
import torch

from buildllm.device import describe_device, get_device, set_seed, setup_device


def test_get_device_cpu_and_bad_names():
    assert get_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="Unknown device 'tpu'"):
        get_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_says_what_to_use():
    # get_device also serves notebooks, so it names the value, not a command-line flag (scripts add the flag).
    with pytest.raises(RuntimeError, match=r"Device 'cuda' was requested but PyTorch sees no CUDA GPU; use 'auto' or 'cpu'"):
        get_device("cuda")


def test_setup_device_sets_threads_and_restores():
    before = torch.get_num_threads()
    try:
        assert setup_device("cpu", threads=1) == torch.device("cpu")
        assert torch.get_num_threads() == 1
        assert describe_device(torch.device("cpu")) == "cpu, 1 threads"
    finally:
        torch.set_num_threads(before)
    # Scripts refuse --threads 0 while parsing (buildllm.cli.positive_int); this guards direct callers.
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        setup_device("cpu", threads=0)


def test_set_seed_repeats_random_numbers():
    set_seed(7)
    a = torch.rand(3)
    set_seed(7)
    assert torch.equal(a, torch.rand(3))
