"""Low-rank adaptation, LoRA (appendix E): fine-tune a few small matrices instead of the whole model.

A frozen weight matrix W (in_dim x out_dim as used in ``x @ W``) gets a trainable
update that is a product of two thin matrices::

    x @ (W + scale * A @ B)  =  x @ W  +  scale * (x @ A @ B)
    A: (in_dim, rank)   B: (rank, out_dim)   scale = alpha / rank

B starts at zero, so at the start the adapted model computes exactly what the
base model computes; training moves only A and B. After training, `merge_lora`
folds ``scale * A @ B`` into W, and the model is a plain GPT again (no extra cost
at inference).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class LoRALayer(nn.Module):
    """The low-rank update: x -> (alpha / rank) * x @ A @ B, with B initialized to zero."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank} (the book uses 16).")
        self.A = nn.Parameter(torch.empty(in_dim, rank))
        # Same initialization nn.Linear gives its weight, so x @ A starts at a sensible scale.
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(rank, out_dim))  # zero: no change to the model at the start
        self.rank = rank
        self.alpha = alpha
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in_dim) -> (..., rank) -> (..., out_dim)
        return self.scale * (x @ self.A @ self.B)

    def delta_weight(self) -> torch.Tensor:
        """Return the update as a matrix in nn.Linear's layout: (out_dim, in_dim)."""
        return (self.scale * (self.A @ self.B)).T


class LinearWithLoRA(nn.Module):
    """A (frozen) `nn.Linear` plus a trainable `LoRALayer`: linear(x) + lora(x)."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha).to(
            device=linear.weight.device, dtype=linear.weight.dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.lora(x)  # (..., out_features)


def replace_linear_with_lora(model: nn.Module, rank: int, alpha: float) -> nn.Module:
    """Wrap every `nn.Linear` inside `model` (recursively, in place) in `LinearWithLoRA`; return `model`.

    As in the book, freeze the model *before* calling this, so that only the new
    A and B matrices are trainable: ``for p in model.parameters(): p.requires_grad = False``.
    """
    for name, module in model.named_children():
        if isinstance(module, nn.Linear):
            setattr(model, name, LinearWithLoRA(module, rank, alpha))
        elif not isinstance(module, LinearWithLoRA):  # never wrap a layer twice
            replace_linear_with_lora(module, rank, alpha)
    return model


def freeze_and_add_lora(model: nn.Module, rank: int, alpha: float) -> int:
    """Freeze all of `model`, then add LoRA to every `nn.Linear`; return the number of trainable parameters."""
    for param in model.parameters():
        param.requires_grad = False
    replace_linear_with_lora(model, rank, alpha)
    return count_trainable_parameters(model)


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold each LoRA update into its base weight (W + scale * A @ B) and put back plain `nn.Linear` layers."""
    for name, module in model.named_children():
        if isinstance(module, LinearWithLoRA):
            linear = module.linear
            linear.weight += module.lora.delta_weight().to(linear.weight.dtype)  # (out_features, in_features)
            setattr(model, name, linear)
        else:
            merge_lora(module)
    return model


def count_trainable_parameters(model: nn.Module) -> int:
    """Return the number of parameters with `requires_grad=True`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_lora_parameters(model: nn.Module) -> int:
    """Return the number of parameters in the model's LoRA A and B matrices."""
    return sum(p.numel() for m in model.modules() if isinstance(m, LoRALayer) for p in m.parameters())
