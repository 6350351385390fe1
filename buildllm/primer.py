"""The PyTorch primer's toy network and data (appendix A), shared by its notebooks and both DDP scripts.

The data is the appendix's tiny two-class problem: five training points and two
test points in 2-d, class 0 in the upper left and class 1 in the lower right.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .distributed import DistInfo, all_reduce_mean, make_distributed_loader, print0, rank_print, wrap_ddp


def toy_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the appendix's toy data: X_train (5, 2), y_train (5,), X_test (2, 2), y_test (2,)."""
    X_train = torch.tensor([[-1.2, 3.1], [-0.9, 2.9], [-0.5, 2.6], [2.3, -1.1], [2.7, -1.5]])
    y_train = torch.tensor([0, 0, 0, 1, 1])
    X_test = torch.tensor([[-0.8, 2.8], [2.6, -1.6]])
    y_test = torch.tensor([0, 1])
    return X_train, y_train, X_test, y_test


class ToyDataset(Dataset):
    """A map-style dataset over a feature tensor X and a label tensor y of the same length."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor):
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels; give one label per row.")
        self.features = X
        self.labels = y

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[index], self.labels[index]

    def __len__(self) -> int:
        return self.labels.shape[0]


class NeuralNetwork(nn.Module):
    """A multilayer perceptron: num_inputs -> 30 -> 20 -> num_outputs with ReLU between the layers."""

    def __init__(self, num_inputs: int, num_outputs: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(num_inputs, 30),   # 1st hidden layer
            nn.ReLU(),
            nn.Linear(30, 20),           # 2nd hidden layer
            nn.ReLU(),
            nn.Linear(20, num_outputs),  # output layer: one logit per class
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (batch, num_inputs) -> (batch, num_outputs)


@torch.no_grad()
def compute_accuracy(model: nn.Module, dataloader: DataLoader, device: str | torch.device = "cpu") -> float:
    """Return the fraction of examples in `dataloader` whose highest logit is the true label."""
    model.eval()
    correct, total = 0, 0
    for features, labels in dataloader:
        features, labels = features.to(device), labels.to(device)
        predictions = torch.argmax(model(features), dim=1)
        correct += (predictions == labels).sum().item()
        total += len(labels)
    if total == 0:
        raise ValueError("The dataloader yielded no examples; check its batch_size and drop_last settings.")
    return correct / total


def train_epoch(model: nn.Module, dataloader: DataLoader, optimizer: torch.optim.Optimizer,
                device: str | torch.device = "cpu", on_batch: Callable[[int, float], None] | None = None) -> float:
    """Run one epoch of the typical training loop; return the mean training loss of its batches."""
    model.train()
    losses = []
    for batch_idx, (features, labels) in enumerate(dataloader):
        features, labels = features.to(device), labels.to(device)
        logits = model(features)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()  # under DDP, the gradients are averaged across processes here
        optimizer.step()
        losses.append(loss.item())
        if on_batch is not None:
            on_batch(batch_idx, loss.item())
    if not losses:
        raise ValueError("The dataloader yielded no batches; lower batch_size or use drop_last=False.")
    return sum(losses) / len(losses)


def train_toy_ddp(info: DistInfo, num_epochs: int = 3, seed: int = 123, batch_size: int = 2,
                  lr: float = 0.5) -> tuple[float, float]:
    """Train NeuralNetwork(2, 2) on the toy data in an initialized process group; return (train, test) accuracy."""
    torch.manual_seed(seed)  # the same initial weights on every rank (DDP also copies rank 0's weights)
    X_train, y_train, X_test, y_test = toy_data()
    train_ds, test_ds = ToyDataset(X_train, y_train), ToyDataset(X_test, y_test)
    # Each rank reads its own share of the training set, shuffled identically on all ranks.
    train_loader = make_distributed_loader(train_ds, batch_size=batch_size, shuffle=True, seed=seed, drop_last=True)

    model = NeuralNetwork(num_inputs=2, num_outputs=2).to(info.device)
    model = wrap_ddp(model, info.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    for epoch in range(num_epochs):
        train_loader.sampler.set_epoch(epoch)

        def show(batch_idx: int, loss: float) -> None:
            rank_print(f"에포크 {epoch + 1}/{num_epochs}, 배치 {batch_idx + 1}/{len(train_loader)} "
                       f"(배치 크기 {batch_size}): 손실 {loss:.4f}", flush=True)

        mean_loss = train_epoch(model, train_loader, optimizer, info.device, on_batch=show)
        # Every rank must take part in the all-reduce, even though only rank 0 prints.
        mean_loss = all_reduce_mean(mean_loss)
        print0(f"에포크 {epoch + 1}/{num_epochs} 끝: 프로세스 {info.world_size}개의 평균 훈련 손실 {mean_loss:.4f}",
               flush=True)

    # All copies hold identical weights, so each rank can evaluate the (tiny) full sets itself. We use the
    # unwrapped model (model.module): its forward pass involves no communication between the ranks.
    train_acc = compute_accuracy(model.module, DataLoader(train_ds, batch_size=batch_size), info.device)
    test_acc = compute_accuracy(model.module, DataLoader(test_ds, batch_size=batch_size), info.device)
    return train_acc, test_acc
