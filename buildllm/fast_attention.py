"""An opt-in fast attention path (bonus material of chapter 3), a drop-in for `MultiHeadAttention`.

`MultiHeadAttentionSDPA` keeps the very same parameters (`W_query`, `W_key`,
`W_value`, `out_proj`, so the same state dict) but computes:

- the three projections as one matrix multiplication (the weights concatenated
  to (3 * d_out, d_in)), instead of three;
- attention with `torch.nn.functional.scaled_dot_product_attention`, which picks a
  fused kernel (FlashAttention / memory-efficient attention on GPUs) and never
  materializes the (num_tokens, num_tokens) weights where it can avoid it.

`use_fast_attention(model)` swaps it into every block of a `GPTModel`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention import MultiHeadAttention, _check_length


class MultiHeadAttentionSDPA(MultiHeadAttention):
    """`MultiHeadAttention` with a fused QKV projection and PyTorch's scaled_dot_product_attention."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, num_tokens, _ = x.shape
        _check_length(num_tokens, self.mask.shape[0])
        weight = torch.cat([self.W_query.weight, self.W_key.weight, self.W_value.weight])  # (3*d_out, d_in)
        bias = None
        if self.W_query.bias is not None:
            bias = torch.cat([self.W_query.bias, self.W_key.bias, self.W_value.bias])
        qkv = F.linear(x, weight, bias)  # (b, num_tokens, 3 * d_out)
        qkv = qkv.view(b, num_tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        queries, keys, values = qkv.unbind(0)  # each (b, num_heads, num_tokens, head_dim)
        context = F.scaled_dot_product_attention(
            queries, keys, values, dropout_p=self.dropout.p if self.training else 0.0, is_causal=True
        )
        context = context.transpose(1, 2).reshape(b, num_tokens, self.d_out)
        return self.out_proj(context)

    @classmethod
    def from_plain(cls, att: MultiHeadAttention) -> "MultiHeadAttentionSDPA":
        """Return a fast module that shares `att`'s parameters and buffers (no copy)."""
        fast = cls.__new__(cls)
        fast.__dict__.update(att.__dict__)  # same submodules, parameters, buffers, settings
        return fast


def use_fast_attention(model):
    """Replace every block's `MultiHeadAttention` in `model` by `MultiHeadAttentionSDPA`, sharing weights; return model."""
    for block in model.trf_blocks:
        if type(block.att) is MultiHeadAttention:
            block.att = MultiHeadAttentionSDPA.from_plain(block.att)
    return model
