"""A key/value cache for fast generation (bonus material of chapters 4-5).

Without a cache, every new token re-runs the model over the whole sequence,
recomputing keys and values that did not change. With a cache:

1. *prefill*: one forward pass over the prompt stores each layer's keys and
   values in pre-allocated tensors of shape (b, num_heads, context_length, head_dim);
2. *decode*: each step feeds only the newest token; its query attends to all
   cached keys/values, and its own key/value is written into the next slot.

The cached forward pass below reuses the modules (and weights) of a plain
`GPTModel`; the teaching model itself is unchanged.

Context-length policy: once the sequence fills the context, the uncached model
sees a sliding window of the last ``context_length`` tokens, whose positions all
shift by one each step. Cached keys carry their old positions, so we cannot slide
the cache: from then on each step recomputes the window (no speed-up, but exactly
the same tokens as the uncached path).

Batches whose prompts have different lengths are left-padded; an attention mask
keeps every token from attending to padding, and positions start at each row's
first real token, so each row generates exactly what it would generate alone.
"""

from __future__ import annotations

import torch

from .generation import check_sampling_args, pick_next_token


class KVCache:
    """Pre-allocated keys and values for every layer: each (b, num_heads, max_len, head_dim)."""

    def __init__(self, model, batch_size: int, device=None, dtype=None):
        cfg = model.cfg
        att = model.trf_blocks[0].att
        param = next(model.parameters())
        self.max_len = cfg["context_length"]
        shape = (batch_size, att.num_heads, self.max_len, att.head_dim)
        device = device or param.device
        dtype = dtype or param.dtype
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg["n_layers"])]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg["n_layers"])]
        self.length = 0  # how many positions are filled


def _cached_attention(att, x, cache: KVCache, layer: int, key_padding: torch.Tensor | None) -> torch.Tensor:
    """`MultiHeadAttention.forward` for new tokens `x` (b, n, d) that also attend to the cached tokens."""
    b, n, _ = x.shape
    start = cache.length

    def heads(t):  # (b, n, d_out) -> (b, num_heads, n, head_dim)
        return t.view(b, n, att.num_heads, att.head_dim).transpose(1, 2)

    cache.keys[layer][:, :, start : start + n] = heads(att.W_key(x))
    cache.values[layer][:, :, start : start + n] = heads(att.W_value(x))
    keys = cache.keys[layer][:, :, : start + n]  # (b, num_heads, start + n, head_dim)
    values = cache.values[layer][:, :, : start + n]
    queries = heads(att.W_query(x))  # (b, num_heads, n, head_dim)

    attn_scores = queries @ keys.transpose(2, 3)  # (b, num_heads, n, start + n)
    # New token i sits at position start + i and may see positions 0 .. start + i.
    mask = att.mask.bool()[start : start + n, : start + n]  # (n, start + n)
    if key_padding is not None:  # (b, start + n), True where the key is padding
        # No token attends to padding, except a padding token to itself: a query row
        # with every key masked would give NaN, and NaN would leak through the cache.
        query_pos = torch.arange(start, start + n, device=x.device)[:, None]
        is_self = query_pos == torch.arange(start + n, device=x.device)[None, :]  # (n, start + n)
        mask = mask | (key_padding[:, None, None, : start + n] & ~is_self)
    attn_scores = attn_scores.masked_fill(mask, -torch.inf)
    attn_weights = torch.softmax(attn_scores / att.head_dim**0.5, dim=-1)
    attn_weights = att.dropout(attn_weights)
    context = (attn_weights @ values).transpose(1, 2).reshape(b, n, att.d_out)
    return att.out_proj(context)


def forward_with_cache(
    model, idx: torch.Tensor, cache: KVCache, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Run `model` on the new tokens `idx` (b, n) after the `cache.length` cached ones; return logits (b, n, vocab).

    `attention_mask` (b, cache.length + n) is 1 for real tokens and 0 for left padding.
    """
    b, n = idx.shape
    start = cache.length
    if start + n > cache.max_len:
        raise ValueError(f"The cache holds {cache.max_len} positions; {start} used, {n} more requested.")
    if attention_mask is None:
        positions = torch.arange(start, start + n, device=idx.device).expand(b, n)
        key_padding = None
    else:
        # Position of a token = number of real tokens before it in its row.
        positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)[:, start : start + n]
        key_padding = attention_mask == 0
    x = model.tok_emb(idx) + model.pos_emb(positions)  # (b, n, emb_dim)
    x = model.drop_emb(x)
    for layer, block in enumerate(model.trf_blocks):
        shortcut = x
        x = block.drop_shortcut(_cached_attention(block.att, block.norm1(x), cache, layer, key_padding)) + shortcut
        shortcut = x
        x = block.drop_shortcut(block.ff(block.norm2(x))) + shortcut
    cache.length = start + n
    return model.out_head(model.final_norm(x))


def left_pad(prompts: list[list[int]], pad_id: int = 50256) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists to one (b, max_len) tensor; return it and the attention mask (1 = real token)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("Every prompt needs at least one token.")
    width = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        idx[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    return idx, mask


@torch.no_grad()
def generate_cached(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    eos_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
    *,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
) -> torch.Tensor:
    """Like `buildllm.generation.generate`, with a KV cache: prefill once, then one token per step.

    Tokens are picked by the same `buildllm.generation.pick_next_token`, so top-p and the
    repetition penalty work here too (padding does not count as an earlier token).
    """
    check_sampling_args(temperature, top_k, model.cfg["vocab_size"], top_p=top_p,
                        repetition_penalty=repetition_penalty)
    context_size = min(context_size or model.cfg["context_length"], model.cfg["context_length"])
    mask = attention_mask
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    cache = None
    for _ in range(max_new_tokens):
        if idx.shape[1] > context_size:  # window is full: recompute it (see the module docstring)
            cache = KVCache(model, idx.shape[0])
            window_mask = None if mask is None else mask[:, -context_size:]
            logits = forward_with_cache(model, idx[:, -context_size:], cache, window_mask)
        elif cache is None:  # prefill: the whole prompt in one pass
            cache = KVCache(model, idx.shape[0])
            logits = forward_with_cache(model, idx, cache, mask)
        else:  # decode: only the newest token
            logits = forward_with_cache(model, idx[:, -1:], cache, mask)
        idx_next = pick_next_token(logits[:, -1, :], temperature, top_k, top_p=top_p,
                                   repetition_penalty=repetition_penalty, token_ids=idx, attention_mask=mask)
        if eos_id is not None:
            idx_next = idx_next.masked_fill(finished.unsqueeze(1), eos_id)
            finished = finished | (idx_next.squeeze(1) == eos_id)
            if bool(finished.all()):
                break
        idx = torch.cat((idx, idx_next), dim=1)
        if mask is not None:
            mask = torch.cat((mask, torch.ones_like(idx_next)), dim=1)
    return idx
