"""A key/value cache for fast generation (bonus material of chapters 4-5), used by every model's forward.

Without a cache, every new token re-runs the model over the whole sequence,
recomputing keys and values that did not change. With a cache::

    cache = KVCache(max_len=model.cfg["context_length"])
    logits = model(prompt_ids, kv_cache=cache)     # prefill: the whole prompt, keys/values stored
    logits = model(next_id, kv_cache=cache)        # decode: one new token attends to all stored ones

The model passes ``cache.layer(i)`` to block i; its attention stores the new keys
and values with `LayerKVCache.update` and gets back all keys and values so far,
together with the mask of this step (`LayerKVCache.mask`). The model asks the
cache for the new tokens' positions first (`KVCache.start_step`) and moves it on
afterwards (`KVCache.advance`). Storage is allocated at the first update, with the
shape of the keys it receives, so the same cache serves `GPTModel` (one key per
query head) and the Llama-style models (fewer key/value heads).

Batches of prompts with different lengths are left-padded: pass their
``attention_mask`` (b, prompt_len), 1 for real tokens and 0 for padding. No token
attends to padding, and positions count real tokens only, so each row generates
exactly what it would generate alone.
"""

from __future__ import annotations

import torch


class LayerKVCache:
    """The stored keys and values of one layer (a view of its `KVCache`)."""

    def __init__(self, parent: "KVCache"):
        self.parent = parent
        self.keys: torch.Tensor | None = None  # (b, num_kv_heads, max_len, head_dim)
        self.values: torch.Tensor | None = None

    def update(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new `keys`/`values` (b, heads, n, head_dim); return all so far: (b, heads, start + n, head_dim)."""
        start, n = self.parent.length, keys.shape[2]
        if self.keys is None:
            b, heads, _, head_dim = keys.shape
            shape = (b, heads, self.parent.max_len, head_dim)
            self.keys = keys.new_zeros(shape)
            self.values = values.new_zeros(shape[:3] + (values.shape[-1],))
        self.keys[:, :, start : start + n] = keys
        self.values[:, :, start : start + n] = values
        return self.keys[:, :, : start + n], self.values[:, :, : start + n]

    @property
    def mask(self) -> torch.Tensor:
        """This step's mask (b or 1, 1, n, start + n): True where a new token must not attend."""
        return self.parent.step_mask


class KVCache:
    """Keys and values of every layer for up to `max_len` positions, filled from left to right."""

    def __init__(self, max_len: int, attention_mask: torch.Tensor | None = None):
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1 (usually the model's context_length), got {max_len}.")
        self.max_len = max_len
        self.length = 0  # positions filled so far
        self.layers: dict[int, LayerKVCache] = {}
        # Left padding of the first step (the prompt): 1 = real token, 0 = padding.
        self.prompt_mask = attention_mask
        self.key_padding: torch.Tensor | None = None  # (b, max_len), True where a key is padding
        self.next_position: torch.Tensor | None = None  # (b,) position of each row's next token
        self.step_mask: torch.Tensor | None = None

    def layer(self, index: int) -> LayerKVCache:
        """The cache of layer `index` (created on first use)."""
        if index not in self.layers:
            self.layers[index] = LayerKVCache(self)
        return self.layers[index]

    def start_step(self, num_tokens: int, device: torch.device | str) -> torch.Tensor:
        """Prepare a forward pass over `num_tokens` new tokens; return their positions (b or 1, num_tokens)."""
        start = self.length
        if start + num_tokens > self.max_len:
            raise ValueError(
                f"The cache holds {self.max_len} positions; {start} are used and {num_tokens} more were "
                f"given. Start a new cache over the last {self.max_len} tokens instead."
            )
        query_pos = torch.arange(start, start + num_tokens, device=device)  # (n,)
        key_pos = torch.arange(start + num_tokens, device=device)  # (start + n,)
        mask = key_pos[None, :] > query_pos[:, None]  # (n, start + n): True above the diagonal = the future

        if self.prompt_mask is not None and start == 0:
            prompt_mask = self.prompt_mask.to(device)
            if prompt_mask.shape[1] != num_tokens:
                raise ValueError(f"attention_mask covers {prompt_mask.shape[1]} tokens, but the first step "
                                 f"has {num_tokens}: give the mask of the prompt.")
            self.key_padding = torch.zeros(prompt_mask.shape[0], self.max_len, dtype=torch.bool, device=device)
            self.key_padding[:, :num_tokens] = prompt_mask == 0
            # Position of a token = number of real tokens before it in its row.
            positions = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)  # (b, n)
            self.next_position = prompt_mask.sum(dim=1)  # (b,)
        elif self.key_padding is not None:
            positions = self.next_position[:, None] + torch.arange(num_tokens, device=device)  # (b, n)
            self.next_position = self.next_position + num_tokens
        else:
            positions = query_pos[None, :]  # (1, n): the same for every row

        if self.key_padding is None:
            self.step_mask = mask[None, None]  # (1, 1, n, start + n)
        else:
            # No token attends to padding, except a padding token to itself: a row of the
            # scores with every key masked would give NaN, and NaN would spread through the cache.
            is_self = key_pos[None, :] == query_pos[:, None]  # (n, start + n)
            padding = self.key_padding[:, None, None, : start + num_tokens]  # (b, 1, 1, start + n)
            self.step_mask = mask[None, None] | (padding & ~is_self[None, None])  # (b, 1, n, start + n)
        return positions

    def advance(self, num_tokens: int) -> None:
        """Mark `num_tokens` more positions as filled (the model calls this after its layers)."""
        self.length += num_tokens


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
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
