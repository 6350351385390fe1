"""Mixture of Experts (chapter 4, bonus): many feed forward layers, and a router that picks a few per token.

In chapter 4's block every token passes through the same feed forward layer. A
mixture-of-experts (MoE) layer keeps `num_experts` of them ("experts", here the
SwiGLU of `buildllm.llama.FeedForward`) and a small linear *router* that scores
them for each token; only the `top_k` best-scoring experts run, and their outputs
are mixed with the router's (renormalized) probabilities::

    x (N tokens, emb_dim) --router--> probabilities (N, num_experts)
      --top-k--> for every token: k expert indices and k weights summing to 1
      --experts--> out[t] = sum over the k picks of  weight * expert_e(x[t])

The model holds ``num_experts`` times the feed forward parameters but computes with
only ``top_k`` of them per token: more knowledge for the same compute per token.

Two ways to compute the same thing (tested equal):

- `MoEFeedForward.forward_loop`: one expert at a time over the tokens that chose it
  (easy to read; what this module teaches);
- `MoEFeedForward.forward_batched`: every token is copied into a buffer per expert,
  all experts run in one batched matrix product (`torch.bmm`), and the results are
  gathered back (no Python loop over experts).

Training needs one more thing: left alone, the router tends to favour a few experts,
which then get all the training, so the others never improve (routing collapse).
`load_balancing_loss` (Switch Transformer's auxiliary loss) penalizes that; every
forward stores it in ``aux_loss``, and `moe_aux_loss(model)` collects it for the
training loss. `expert_usage(model)` says which experts the last forward used.

Parameters are stored stacked, one tensor per weight for all experts (expert e's
gate projection is ``fc1[e]``, shape (hidden_dim, emb_dim) as in `nn.Linear`), and
named as Hugging Face's published Qwen3-MoE checkpoints name them (`hf_names`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .llama import SiLU

__all__ = ["MoEFeedForward", "load_balancing_loss", "moe_layers", "moe_aux_loss", "expert_usage",
           "set_moe_implementation", "parameter_counts", "MOE_IMPLEMENTATIONS"]

MOE_IMPLEMENTATIONS = ("loop", "batched")


def load_balancing_loss(probs: Tensor, top_idx: Tensor, num_experts: int) -> Tensor:
    """Switch Transformer's auxiliary loss: num_experts * sum_e f_e * P_e (1.0 when routing is perfectly even).

    `probs` (N, num_experts): the router's probabilities; `top_idx` (N, k): the chosen experts.
    f_e is the share of the N*k picks that went to expert e (no gradient: counting is not
    differentiable), P_e the mean probability the router gave expert e (with gradient). The
    product is smallest when both are even, so its gradient pushes probability away from busy
    experts. (transformers' ``load_balancing_loss_func`` counts picks per token instead of per
    pick: its value is k times this one.)
    """
    picks = torch.bincount(top_idx.reshape(-1), minlength=num_experts).float()  # (num_experts,)
    share = picks / top_idx.numel()  # f_e, sums to 1
    mean_prob = probs.float().mean(dim=0)  # P_e, sums to 1
    return num_experts * (share * mean_prob).sum()


class MoEFeedForward(nn.Module):
    """A mixture of `num_experts` SwiGLU feed forward layers; a linear router sends each token to `top_k` of them.

    ``norm_topk_prob=True`` rescales the k chosen probabilities to sum to 1 (Qwen3-MoE,
    Mixtral); False keeps them as the softmax gave them. ``implementation`` is "loop"
    (default; ``fast=True`` picks "batched"); both give the same result. After every
    forward: ``aux_loss`` (the load-balancing loss of this batch, with gradient) and
    ``expert_counts`` (num_experts,): how many tokens picked each expert.
    """

    def __init__(self, emb_dim: int, hidden_dim: int, num_experts: int, top_k: int, *, norm_topk_prob: bool = True,
                 dtype: torch.dtype | None = None, fast: bool = False, implementation: str | None = None):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be between 1 and num_experts ({num_experts}), got {top_k}.")
        self.num_experts = num_experts
        self.top_k = top_k
        self.norm_topk_prob = norm_topk_prob
        self.implementation = implementation or ("batched" if fast else "loop")
        if self.implementation not in MOE_IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {MOE_IMPLEMENTATIONS}, got {self.implementation!r}.")
        self.gate = nn.Linear(emb_dim, num_experts, bias=False, dtype=dtype)  # the router: one score per expert
        # The experts' weights, stacked: fc1[e] is expert e's gate projection (hidden_dim, emb_dim), like nn.Linear's.
        self.fc1 = nn.Parameter(torch.empty(num_experts, hidden_dim, emb_dim, dtype=dtype))  # gate
        self.fc2 = nn.Parameter(torch.empty(num_experts, hidden_dim, emb_dim, dtype=dtype))  # up (values)
        self.fc3 = nn.Parameter(torch.empty(num_experts, emb_dim, hidden_dim, dtype=dtype))  # down
        self.silu = SiLU(fast=fast)
        self.reset_parameters()
        self.aux_loss: Tensor | None = None
        self.expert_counts: Tensor | None = None

    def reset_parameters(self) -> None:
        """Initialize every expert as `nn.Linear` initializes its weight: uniform in +-1/sqrt(fan_in)."""
        if self.fc1.device.type == "meta":
            return
        for weight in (self.fc1, self.fc2, self.fc3):
            bound = 1 / math.sqrt(weight.shape[-1])
            nn.init.uniform_(weight, -bound, bound)

    def hf_names(self, prefix: str) -> list[tuple[str, Tensor]]:
        """(Hugging Face name, tensor) as published Qwen3-MoE checkpoints store them: the router, then expert by expert.

        Each expert's tensors are views into the stacked parameters (copying into them fills the stack).
        """
        names = [(prefix + "mlp.gate.weight", self.gate.weight)]
        for e in range(self.num_experts):
            names += [(f"{prefix}mlp.experts.{e}.gate_proj.weight", self.fc1[e]),
                      (f"{prefix}mlp.experts.{e}.up_proj.weight", self.fc2[e]),
                      (f"{prefix}mlp.experts.{e}.down_proj.weight", self.fc3[e])]
        return names

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Score the experts for every token of `x` (N, emb_dim); return (probs (N, E), weights (N, k), indices (N, k))."""
        logits = self.gate(x)  # (N, num_experts): one score per expert
        probs = torch.softmax(logits.float(), dim=-1)  # float32 even in a bfloat16 model (as the reference does)
        top_probs, top_idx = torch.topk(probs, self.top_k, dim=-1)  # (N, k) each, best first
        if self.norm_topk_prob:
            top_probs = top_probs / top_probs.sum(dim=-1, keepdim=True)  # the k weights sum to 1
        return probs, top_probs.to(x.dtype), top_idx

    def expert(self, e: int, x: Tensor) -> Tensor:
        """Expert `e` alone: SwiGLU fc3(silu(fc1 x) * fc2 x) on tokens `x` (n, emb_dim) -> (n, emb_dim)."""
        return F.linear(self.silu(F.linear(x, self.fc1[e])) * F.linear(x, self.fc2[e]), self.fc3[e])

    def forward_loop(self, x: Tensor, weights: Tensor, top_idx: Tensor) -> Tensor:
        """Mix the experts' outputs, one expert at a time over the tokens that picked it. x: (N, emb_dim)."""
        out = torch.zeros_like(x)  # (N, emb_dim)
        for e in range(self.num_experts):
            token, slot = torch.where(top_idx == e)  # the tokens that picked expert e, and as which of their k picks
            if token.numel() == 0:
                continue  # nobody chose this expert: it costs nothing
            y = self.expert(e, x[token])  # (n_e, emb_dim)
            out.index_add_(0, token, y * weights[token, slot, None])  # add weight * output to each token's row
        return out

    def forward_batched(self, x: Tensor, weights: Tensor, top_idx: Tensor) -> Tensor:
        """The same mixture without a loop over experts: dispatch into per-expert buffers, one bmm, gather back."""
        num_tokens, k = top_idx.shape
        expert_of = top_idx.reshape(-1)  # (N*k,) the expert of every (token, pick)
        order = torch.argsort(expert_of, stable=True)  # picks grouped by expert
        expert_sorted = expert_of[order]  # (N*k,)
        token_sorted = order // k  # the token of each sorted pick
        counts = torch.bincount(expert_of, minlength=self.num_experts)  # (E,) tokens per expert
        capacity = int(counts.max())  # rows per expert buffer: the busiest expert's count (nothing is dropped)
        first = torch.cumsum(counts, 0) - counts  # (E,) where each expert's picks start in the sorted order
        row = expert_sorted * capacity + (torch.arange(expert_of.numel(), device=x.device) - first[expert_sorted])
        # Dispatch: buffer[e, i] is the i-th token that picked expert e; unused rows stay zero.
        buffer = x.new_zeros(self.num_experts * capacity, x.shape[-1]).index_copy(0, row, x[token_sorted])
        buffer = buffer.view(self.num_experts, capacity, -1)  # (E, C, emb_dim)
        hidden = self.silu(torch.bmm(buffer, self.fc1.transpose(1, 2))) * torch.bmm(buffer, self.fc2.transpose(1, 2))
        y = torch.bmm(hidden, self.fc3.transpose(1, 2)).reshape(-1, x.shape[-1])  # (E*C, emb_dim)
        # Combine: every pick's output, times its weight, added to its token's row.
        picked = y[row] * weights.reshape(-1)[order, None]  # (N*k, emb_dim)
        return torch.zeros_like(x).index_add_(0, token_sorted, picked)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape  # (b, n, emb_dim)
        x = x.reshape(-1, shape[-1])  # (N = b*n, emb_dim): routing is per token, the sequence does not matter
        probs, weights, top_idx = self.route(x)
        self.aux_loss = load_balancing_loss(probs, top_idx, self.num_experts)
        self.expert_counts = torch.bincount(top_idx.reshape(-1), minlength=self.num_experts).detach()
        mix = self.forward_batched if self.implementation == "batched" else self.forward_loop
        return mix(x, weights, top_idx).view(shape)


# --- The MoE layers of a whole model -------------------------------------------------------------------


def moe_layers(model: nn.Module) -> list[MoEFeedForward]:
    """Every `MoEFeedForward` in `model`, in order."""
    return [m for m in model.modules() if isinstance(m, MoEFeedForward)]


def moe_aux_loss(model: nn.Module) -> Tensor:
    """The mean load-balancing loss of the model's MoE layers in its last forward (add coef * this to the loss)."""
    losses = [m.aux_loss for m in moe_layers(model) if m.aux_loss is not None]
    if not losses:
        raise ValueError("The model has no MoE layer that ran a forward pass yet: run the model first.")
    return torch.stack(losses).mean()


def expert_usage(model: nn.Module) -> Tensor:
    """(MoE layers, num_experts): the share of the last forward's picks each expert got (each row sums to 1)."""
    counts = [m.expert_counts for m in moe_layers(model) if m.expert_counts is not None]
    if not counts:
        raise ValueError("The model has no MoE layer that ran a forward pass yet: run the model first.")
    counts = torch.stack(counts).float()
    return counts / counts.sum(dim=1, keepdim=True)


def set_moe_implementation(model: nn.Module, implementation: str) -> int:
    """Make every MoE layer of `model` use `implementation` ("loop" or "batched"); return how many there are."""
    if implementation not in MOE_IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {MOE_IMPLEMENTATIONS}, got {implementation!r}.")
    layers = moe_layers(model)
    for layer in layers:
        layer.implementation = implementation
    return len(layers)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """{"total": all parameters, "active": those one token computes with (top_k of each MoE layer's experts)}.

    Tied weights count once. An expert's parameters are fc1[e], fc2[e], fc3[e]; a token
    uses top_k experts in every MoE layer (and the router, attention, norms, embedding).
    """
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    idle = 0
    for layer in moe_layers(model):
        per_expert = sum(w[0].numel() for w in (layer.fc1, layer.fc2, layer.fc3))
        idle += (layer.num_experts - layer.top_k) * per_expert
    return {"total": total, "active": total - idle}
