"""Attention mechanisms of chapter 3, from a single self-attention head to multi-head attention.

Each class is one step of the chapter:

- `SelfAttention_v1`: trainable query/key/value matrices as raw parameters;
- `SelfAttention_v2`: the same with `nn.Linear` layers (better initialization);
- `CausalAttention`: adds the causal mask (no looking ahead) and dropout;
- `MultiHeadAttentionWrapper`: several `CausalAttention` heads, concatenated;
- `MultiHeadAttention`: all heads in one set of matrices, split by reshaping.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SelfAttention_v1(nn.Module):
    """Scaled dot-product self-attention with weight matrices stored as `nn.Parameter`."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (num_tokens, d_in)
        queries = x @ self.W_query  # (num_tokens, d_out)
        keys = x @ self.W_key
        values = x @ self.W_value
        attn_scores = queries @ keys.T  # (num_tokens, num_tokens)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        return attn_weights @ values  # (num_tokens, d_out)


class SelfAttention_v2(nn.Module):
    """Scaled dot-product self-attention with `nn.Linear` projections."""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (num_tokens, d_in)
        queries = self.W_query(x)
        keys = self.W_key(x)
        values = self.W_value(x)
        attn_scores = queries @ keys.T
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        return attn_weights @ values


def _check_length(num_tokens: int, context_length: int) -> None:
    if num_tokens > context_length:
        raise ValueError(
            f"The input has {num_tokens} tokens, more than context_length={context_length}. "
            f"Crop the input to its last {context_length} tokens or build the module with a larger "
            f"context_length."
        )


class CausalAttention(nn.Module):
    """Single-head self-attention where each token attends only to itself and earlier tokens."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, qkv_bias: bool = False):
        super().__init__()
        self.d_out = d_out
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        # 1 above the diagonal = a future position. A buffer moves with the module to the device.
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, num_tokens, d_in = x.shape  # (b, num_tokens, d_in)
        _check_length(num_tokens, self.mask.shape[0])
        queries = self.W_query(x)  # (b, num_tokens, d_out)
        keys = self.W_key(x)
        values = self.W_value(x)

        attn_scores = queries @ keys.transpose(1, 2)  # (b, num_tokens, num_tokens)
        attn_scores = attn_scores.masked_fill(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)
        return attn_weights @ values  # (b, num_tokens, d_out)


class MultiHeadAttentionWrapper(nn.Module):
    """`num_heads` independent `CausalAttention` heads; outputs concatenated (d_out * num_heads)."""

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int, qkv_bias: bool = False
    ):
        super().__init__()
        self.heads = nn.ModuleList(
            [CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(x) for head in self.heads], dim=-1)  # (b, num_tokens, num_heads * d_out)


class MultiHeadAttention(nn.Module):
    """Causal multi-head attention: one projection for all heads, split into `num_heads` parts.

    ``fast=True`` computes the same thing through PyTorch's fused kernels (one QKV
    product and `F.scaled_dot_product_attention`), with the same parameters. With a
    `buildllm.kv_cache.LayerKVCache`, the new tokens also attend to the cached ones.
    """

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int, qkv_bias: bool = False,
        *, fast: bool = False,
    ):
        super().__init__()
        if num_heads < 1 or d_out % num_heads != 0:
            raise ValueError(
                f"d_out ({d_out}) must be divisible by num_heads ({num_heads}): each head gets "
                f"d_out // num_heads dimensions. Choose e.g. num_heads in "
                f"{[h for h in range(1, min(d_out, 64) + 1) if d_out % h == 0]}."
            )
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.fast = fast
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # mixes the heads' outputs
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x: torch.Tensor, kv_cache=None) -> torch.Tensor:
        b, num_tokens, d_in = x.shape
        if kv_cache is None:
            _check_length(num_tokens, self.mask.shape[0])
        if self.fast:
            return self._fast_forward(x, kv_cache)

        keys = self.W_key(x)  # (b, num_tokens, d_out)
        queries = self.W_query(x)
        values = self.W_value(x)

        # Split the last dimension into heads: (b, num_tokens, num_heads, head_dim),
        # then put heads first so each head is a separate batch of matrices.
        keys = keys.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        queries = queries.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = values.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        # now: (b, num_heads, num_tokens, head_dim)

        if kv_cache is None:
            mask_bool = self.mask.bool()[:num_tokens, :num_tokens]  # (num_tokens, num_tokens)
        else:
            keys, values = kv_cache.update(keys, values)  # all keys so far: (b, num_heads, cached + num_tokens, head_dim)
            mask_bool = kv_cache.mask  # (b or 1, 1, num_tokens, cached + num_tokens)

        attn_scores = queries @ keys.transpose(2, 3)  # (b, num_heads, num_tokens, num_keys)
        attn_scores = attn_scores.masked_fill(mask_bool, -torch.inf)
        attn_weights = torch.softmax(attn_scores / self.head_dim**0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)

        context_vec = (attn_weights @ values).transpose(1, 2)  # (b, num_tokens, num_heads, head_dim)
        context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)  # heads side by side
        return self.out_proj(context_vec)  # (b, num_tokens, d_out)

    def _fast_forward(self, x: torch.Tensor, kv_cache=None) -> torch.Tensor:
        """The same attention with one QKV matrix product and PyTorch's fused scaled_dot_product_attention."""
        b, num_tokens, _ = x.shape
        weight = torch.cat([self.W_query.weight, self.W_key.weight, self.W_value.weight])  # (3*d_out, d_in)
        bias = None
        if self.W_query.bias is not None:
            bias = torch.cat([self.W_query.bias, self.W_key.bias, self.W_value.bias])
        qkv = F.linear(x, weight, bias)  # (b, num_tokens, 3 * d_out)
        qkv = qkv.view(b, num_tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        queries, keys, values = qkv.unbind(0)  # each (b, num_heads, num_tokens, head_dim)
        attn_mask, is_causal = None, True
        if kv_cache is not None:
            keys, values = kv_cache.update(keys, values)
            attn_mask, is_causal = ~kv_cache.mask, False  # SDPA's boolean mask: True = may attend
        context = F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=attn_mask, is_causal=is_causal,
            dropout_p=self.dropout.p if self.training else 0.0,
        )
        context = context.transpose(1, 2).reshape(b, num_tokens, self.d_out)
        return self.out_proj(context)
