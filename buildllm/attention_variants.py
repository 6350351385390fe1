"""Six ways to compute the same causal multi-head attention (bonus material of chapter 3).

All six take the same arguments as the chapter's `MultiHeadAttention` and, given
the same weights (`copy_weights`), compute the same function:

    wrapper       MultiHeadAttentionWrapper: one CausalAttention per head, concatenated, then out_proj
    ours          MultiHeadAttention (chapter 3): one projection per Q/K/V, heads split by reshaping
    combined-qkv  one (d_in -> 3 * d_out) projection instead of three
    einsum        the projections and both attention products as torch.einsum
    sdpa          MultiHeadAttention(fast=True): one QKV product and F.scaled_dot_product_attention
    torch-mha     torch.nn.MultiheadAttention with a causal mask

`ch03/efficient-attention.ipynb` compares them and `benchmarks/bench_attention.py`
times them; `build_implementations` gives each one the weights of one seeded module.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from .attention import MultiHeadAttention, MultiHeadAttentionWrapper


class WrapperWithProjection(nn.Module):
    """`MultiHeadAttentionWrapper` followed by an output projection, so it does the same work as `MultiHeadAttention`."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        self.heads = MultiHeadAttentionWrapper(d_in, d_out // num_heads, context_length, dropout, num_heads, qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.heads(x))  # (b, num_tokens, d_out)


class MultiHeadAttentionCombinedQKV(nn.Module):
    """Multi-head attention with one linear layer producing queries, keys and values together."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)  # rows: queries, then keys, then values
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, num_tokens, _ = x.shape
        qkv = self.qkv(x)  # (b, num_tokens, 3 * d_out)
        qkv = qkv.view(b, num_tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        queries, keys, values = qkv.unbind(0)  # each (b, num_heads, num_tokens, head_dim)
        scores = queries @ keys.transpose(-2, -1)  # (b, num_heads, num_tokens, num_tokens)
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], -torch.inf)
        weights = self.dropout(torch.softmax(scores / self.head_dim**0.5, dim=-1))
        context = (weights @ values).transpose(1, 2).reshape(b, num_tokens, self.d_out)
        return self.out_proj(context)


class MultiHeadAttentionEinsum(nn.Module):
    """Multi-head attention written with `torch.einsum`: index letters instead of transposes."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), 1))

    def _project(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        # b = batch, t = token, i = input feature, o = output feature
        out = torch.einsum("bti,oi->bto", x, layer.weight)
        if layer.bias is not None:
            out = out + layer.bias
        return out.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim)  # (b, t, h, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, num_tokens, _ = x.shape
        queries = self._project(self.W_query, x)
        keys = self._project(self.W_key, x)
        values = self._project(self.W_value, x)
        scores = torch.einsum("bqhd,bkhd->bhqk", queries, keys)  # q = query token, k = key token
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], -torch.inf)
        weights = self.dropout(torch.softmax(scores / self.head_dim**0.5, dim=-1))
        context = torch.einsum("bhqk,bkhd->bqhd", weights, values).reshape(b, num_tokens, self.d_out)
        return self.out_proj(context)


class PyTorchMultiheadAttention(nn.Module):
    """`torch.nn.MultiheadAttention` as causal self-attention (needs d_in == d_out)."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        if d_in != d_out:
            raise ValueError(f"torch.nn.MultiheadAttention here needs d_in == d_out, got {d_in} and {d_out}.")
        # bias=True also gives out_proj its bias, like ours; without qkv_bias the input biases stay zero.
        self.mha = nn.MultiheadAttention(d_out, num_heads, dropout=dropout, bias=True, batch_first=True)
        if not qkv_bias:
            self.mha.in_proj_bias.requires_grad_(False)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        num_tokens = x.shape[1]
        # attn_mask: True = may not attend. is_causal=True tells PyTorch the mask is causal, so it can use
        # a fused kernel; need_weights=False skips returning the (averaged) attention weights.
        out, _ = self.mha(x, x, x, attn_mask=self.mask[:num_tokens, :num_tokens], is_causal=True,
                          need_weights=False)
        return out


IMPLEMENTATIONS = {
    "wrapper": WrapperWithProjection,
    "ours": MultiHeadAttention,
    "combined-qkv": MultiHeadAttentionCombinedQKV,
    "einsum": MultiHeadAttentionEinsum,
    "sdpa": partial(MultiHeadAttention, fast=True),
    "torch-mha": PyTorchMultiheadAttention,
}


@torch.no_grad()
def copy_weights(source: MultiHeadAttention, target: nn.Module) -> None:
    """Give `target` (any implementation above) the weights of `source`, so both compute the same function."""
    wq, wk, wv = source.W_query.weight, source.W_key.weight, source.W_value.weight  # each (d_out, d_in)
    biases = [source.W_query.bias, source.W_key.bias, source.W_value.bias]
    has_bias = biases[0] is not None
    if isinstance(target, WrapperWithProjection):
        hd = source.head_dim
        for h, head in enumerate(target.heads.heads):  # head h owns rows h*hd .. (h+1)*hd of each matrix
            for mine, theirs, bias in zip((head.W_query, head.W_key, head.W_value), (wq, wk, wv), biases):
                mine.weight.copy_(theirs[h * hd:(h + 1) * hd])
                if has_bias:
                    mine.bias.copy_(bias[h * hd:(h + 1) * hd])
        out_proj = target.out_proj
    elif isinstance(target, MultiHeadAttentionCombinedQKV):
        target.qkv.weight.copy_(torch.cat([wq, wk, wv]))
        if has_bias:
            target.qkv.bias.copy_(torch.cat(biases))
        out_proj = target.out_proj
    elif isinstance(target, PyTorchMultiheadAttention):
        target.mha.in_proj_weight.copy_(torch.cat([wq, wk, wv]))
        target.mha.in_proj_bias.copy_(torch.cat(biases) if has_bias else torch.zeros_like(target.mha.in_proj_bias))
        out_proj = target.mha.out_proj
    else:  # ours (plain or fast) and einsum keep the book's names
        target.load_state_dict(source.state_dict(), strict=False)
        return
    out_proj.weight.copy_(source.out_proj.weight)
    out_proj.bias.copy_(source.out_proj.bias)


def build_implementations(d_in: int, d_out: int, context_length: int, num_heads: int, names=None,
                          qkv_bias: bool = False, seed: int = 123) -> dict[str, nn.Module]:
    """One module per implementation in `names` (default all), all with the weights of one seeded `MultiHeadAttention`."""
    names = list(IMPLEMENTATIONS) if names is None else list(names)
    unknown = [n for n in names if n not in IMPLEMENTATIONS]
    if unknown:
        raise ValueError(f"Unknown implementation(s) {unknown}; choose from {list(IMPLEMENTATIONS)}.")
    torch.manual_seed(seed)
    reference = MultiHeadAttention(d_in, d_out, context_length, 0.0, num_heads, qkv_bias)
    modules = {}
    for name in names:
        module = IMPLEMENTATIONS[name](d_in, d_out, context_length, 0.0, num_heads, qkv_bias)
        copy_weights(reference, module)
        modules[name] = module
    return modules


@torch.no_grad()
def max_differences(modules: dict[str, nn.Module], x: torch.Tensor, reference: str = "ours") -> dict[str, float]:
    """Largest absolute difference between each module's output and the `reference` module's output on `x`."""
    expected = modules[reference](x).float()
    return {name: (m(x).float() - expected).abs().max().item() for name, m in modules.items()}
