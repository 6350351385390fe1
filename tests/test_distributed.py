"""Appendix A: buildllm.distributed and buildllm.primer, tested in one process (no workers started)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from buildllm import distributed as D
from buildllm.primer import NeuralNetwork, ToyDataset, compute_accuracy, toy_data, train_epoch


def _range_dataset(n: int) -> ToyDataset:
    return ToyDataset(torch.arange(n), torch.arange(n))


def _indices(loader) -> list[int]:
    return [int(i) for features, _ in loader for i in features]


# ---------------------------------------------------------------- make_distributed_loader

@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 5, 7, 8])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_sample_seen_and_equal_batches(world_size, n, batch_size, shuffle):
    """drop_last=False: the ranks together see every sample, each rank ceil(n/world) samples, equal batch counts."""
    ds = _range_dataset(n)
    loaders = [D.make_distributed_loader(ds, batch_size, shuffle=shuffle, seed=1, num_replicas=world_size, rank=r)
               for r in range(world_size)]
    per_rank = [_indices(loader) for loader in loaders]
    assert set().union(*per_rank) == set(range(n))
    per_rank_samples = -(-n // world_size)  # ceil
    assert all(len(idx) == per_rank_samples for idx in per_rank)
    batch_counts = [len(list(loader)) for loader in loaders]
    assert batch_counts == [len(loaders[0])] * world_size
    assert batch_counts[0] == -(-per_rank_samples // batch_size) >= 1


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 5, 8, 9])
def test_drop_last_keeps_at_least_one_equal_batch(world_size, n):
    """drop_last=True: never zero batches, and the same number on every rank."""
    batch_size = 2
    ds = _range_dataset(n)
    per_rank_samples = -(-n // world_size)
    if per_rank_samples < batch_size:
        with pytest.warns(UserWarning, match="keeping the short batch"):
            loaders = [D.make_distributed_loader(ds, batch_size, drop_last=True, num_replicas=world_size, rank=r)
                       for r in range(world_size)]
    else:
        loaders = [D.make_distributed_loader(ds, batch_size, drop_last=True, num_replicas=world_size, rank=r)
                   for r in range(world_size)]
    counts = [len(list(loader)) for loader in loaders]
    assert counts == [counts[0]] * world_size
    assert counts[0] == max(1, per_rank_samples // batch_size)


def test_index_split_pads_by_repetition():
    """5 samples without shuffling: the short ranks are padded with samples from the start of the order."""
    ds = _range_dataset(5)

    def split(world_size: int) -> list[list[int]]:
        return [list(D.make_distributed_loader(ds, 2, shuffle=False, num_replicas=world_size, rank=r).sampler)
                for r in range(world_size)]

    assert split(1) == [[0, 1, 2, 3, 4]]
    assert split(2) == [[0, 2, 4], [1, 3, 0]]
    assert split(3) == [[0, 3], [1, 4], [2, 0]]


def test_shuffle_is_seeded_and_changes_with_set_epoch():
    """The same seeded permutation on every rank, a different one after set_epoch."""
    ds = _range_dataset(5)
    loaders = [D.make_distributed_loader(ds, 2, shuffle=True, seed=123, num_replicas=2, rank=r) for r in range(2)]
    assert [list(loader.sampler) for loader in loaders] == [[2, 1, 4], [0, 3, 2]]
    for loader in loaders:
        loader.sampler.set_epoch(1)
    assert [list(loader.sampler) for loader in loaders] == [[4, 3, 2], [1, 0, 4]]


def test_loader_defaults_to_single_process():
    loader = D.make_distributed_loader(_range_dataset(5), 2, shuffle=False)
    assert _indices(loader) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(batch_size=0), "batch_size must be at least 1"),
    (dict(batch_size=2, num_replicas=2, rank=2), "0 <= rank < num_replicas"),
    (dict(batch_size=2, num_replicas=0, rank=0), "num_replicas >= 1"),
])
def test_loader_bad_input(kwargs, phrase):
    with pytest.raises(ValueError, match=phrase):
        D.make_distributed_loader(_range_dataset(5), **kwargs)


def test_loader_empty_dataset():
    with pytest.raises(ValueError, match="dataset is empty"):
        D.make_distributed_loader(_range_dataset(0), 2)


# ---------------------------------------------------------------- torchrun environment

GOOD_ENV = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def _set_env(monkeypatch, env: dict) -> None:
    for name in [*D.TORCHRUN_VARS, "LOCAL_WORLD_SIZE"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_read_torchrun_env_ok(monkeypatch):
    _set_env(monkeypatch, {**GOOD_ENV, "LOCAL_WORLD_SIZE": "2"})
    assert D.is_torchrun_launch()
    assert D.read_torchrun_env() == (1, 1, 2)


def test_not_a_torchrun_launch(monkeypatch):
    _set_env(monkeypatch, {})
    assert not D.is_torchrun_launch()


@pytest.mark.parametrize("env, phrase", [
    ({}, "RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set"),
    ({k: v for k, v in GOOD_ENV.items() if k != "WORLD_SIZE"}, "WORLD_SIZE not set"),
    ({**GOOD_ENV, "WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ({**GOOD_ENV, "RANK": "2"}, "RANK=2 must be between 0 and WORLD_SIZE-1=1"),
    ({**GOOD_ENV, "RANK": "-1"}, "RANK=-1 must be between"),
    ({**GOOD_ENV, "WORLD_SIZE": "0", "RANK": "0", "LOCAL_RANK": "0"}, "WORLD_SIZE=0 must be at least 1"),
    ({**GOOD_ENV, "RANK": "0", "LOCAL_RANK": "1"}, "LOCAL_RANK=1 must be between 0 and RANK=0"),
    ({**GOOD_ENV, "LOCAL_WORLD_SIZE": "1"}, "smaller than LOCAL_WORLD_SIZE=1"),
])
def test_setup_from_env_bad_environment(monkeypatch, env, phrase):
    """Missing or inconsistent variables: a clear error that says to launch with torchrun; no group is joined."""
    _set_env(monkeypatch, env)
    with pytest.raises(D.DistributedLaunchError) as info:
        D.setup_from_env(script="train.py")
    assert phrase in str(info.value)
    assert "torchrun --nproc_per_node=2 train.py" in str(info.value)
    assert not D.is_distributed()


# ---------------------------------------------------------------- ports, backends, devices

def test_check_port_free_reports_busy_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(D.PortInUseError) as info:
            D.check_port_free(port, "127.0.0.1")
    message = str(info.value)
    assert f"Port {port} on 127.0.0.1 is already in use" in message
    assert "already in use" in message and f"e.g. {port + 1}" in message


def test_check_port_free_accepts_free_port():
    D.check_port_free(D.find_free_port(), "127.0.0.1")  # raises if busy


@pytest.mark.parametrize("port", [0, 70000])
def test_check_port_out_of_range(port):
    with pytest.raises(ValueError, match="out of range"):
        D.check_port_free(port)


def test_backend_and_device_on_cpu():
    assert D.get_backend("cpu") == "gloo"
    assert D.device_for_rank(3, "cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="MPS has no DDP backend"):
        D.device_for_rank(0, "mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_gpu():
    assert D.get_backend("auto") == "gloo"
    assert D.device_for_rank(0, "auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        D.device_for_rank(0, "cuda")


def test_ddp_setup_bad_rank():
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        D.ddp_setup(2, 2)


# ---------------------------------------------------------------- helpers outside and inside a process group

def test_helpers_without_process_group(capsys):
    assert not D.is_distributed()
    assert (D.get_rank(), D.get_world_size(), D.is_main_process()) == (0, 1, True)
    assert D.all_reduce_mean(2.5) == 2.5
    D.print0("hello")
    D.rank_print("hi")
    D.cleanup()  # no group: nothing to do
    assert capsys.readouterr().out == "hello\nhi\n"


def test_helpers_in_single_process_group(capsys):
    """A real Gloo group of one process: rank 0 of 1, averages are unchanged, prints carry the rank."""
    port = D.find_free_port()
    info = D.ddp_setup(0, 1, master_addr="127.0.0.1", master_port=port, device="cpu")
    try:
        assert info == D.DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
        assert D.is_distributed() and torch.distributed.get_backend() == "gloo"
        assert (D.get_rank(), D.get_world_size(), D.is_main_process()) == (0, 1, True)
        assert D.all_reduce_mean(3.0) == 3.0
        mean = D.all_reduce_mean(torch.tensor([1.0, 2.0]))
        assert torch.equal(mean, torch.tensor([1.0, 2.0]))
        D.rank_print("x")
        assert capsys.readouterr().out == "[rank 0] x\n"
    finally:
        D.cleanup()
    assert not D.is_distributed()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through Linux's /proc")
def test_cleanup_really_releases_the_group():
    """After DDP and cleanup(), Gloo's worker threads are gone: the group is not left for interpreter exit."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    def gloo_threads() -> int:
        names = []
        for comm in Path("/proc/self/task").glob("*/comm"):
            try:
                names.append(comm.read_text().strip())
            except OSError:  # a thread that ended meanwhile
                pass
        return sum(name.startswith("pt_gloo") for name in names)

    before = gloo_threads()
    D.ddp_setup(0, 1, master_addr="127.0.0.1", master_port=D.find_free_port(), device="cpu")
    try:
        model = DDP(NeuralNetwork(2, 2))
        model(torch.ones(1, 2)).sum().backward()
        assert gloo_threads() > before
        del model
    finally:
        D.cleanup()
    assert gloo_threads() == before


# ---------------------------------------------------------------- primer: toy network and data

def test_parameter_counts():
    """The appendix's figures: 2,213 trainable parameters for (50, 3); 752 for (2, 2) (exercise A.3)."""
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert count(NeuralNetwork(50, 3)) == 2213
    assert count(NeuralNetwork(2, 2)) == 752


def test_toy_data_and_dataset():
    X_train, y_train, X_test, y_test = toy_data()
    assert X_train.shape == (5, 2) and X_test.shape == (2, 2)
    assert y_train.tolist() == [0, 0, 0, 1, 1] and y_test.tolist() == [0, 1]
    ds = ToyDataset(X_train, y_train)
    assert len(ds) == 5
    features, label = ds[3]
    assert features.tolist() == pytest.approx([2.3, -1.1]) and label.item() == 1
    with pytest.raises(ValueError, match="one label per row"):
        ToyDataset(X_train, y_test)


def test_single_process_training_is_exact():
    """The typical training loop, seeded: the same losses every run, and every toy point right afterwards."""
    X_train, y_train, X_test, y_test = toy_data()
    train_ds = ToyDataset(X_train, y_train)
    torch.manual_seed(123)
    model = NeuralNetwork(2, 2)
    loader = DataLoader(train_ds, batch_size=2, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(123))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = [train_epoch(model, loader, optimizer) for _ in range(3)]
    assert losses == pytest.approx([0.4708519, 0.3395805, 0.0182948], abs=1e-6)
    assert compute_accuracy(model, DataLoader(train_ds, batch_size=2)) == 1.0
    assert compute_accuracy(model, DataLoader(ToyDataset(X_test, y_test), batch_size=2)) == 1.0


def test_empty_loaders_raise():
    model = NeuralNetwork(2, 2)
    X_train, y_train, _, _ = toy_data()
    empty = DataLoader(ToyDataset(X_train, y_train), batch_size=8, drop_last=True)
    with pytest.raises(ValueError, match="no examples"):
        compute_accuracy(model, empty)
    with pytest.raises(ValueError, match="no batches"):
        train_epoch(model, empty, torch.optim.SGD(model.parameters(), lr=0.1))
