"""Turning logits into text (chapters 4 and 5): greedy decoding, temperature, top-k, end-of-text."""

from __future__ import annotations

import warnings

import torch

from .tokenizer import ENDOFTEXT


def text_to_token_ids(text: str, tokenizer) -> torch.Tensor:
    """Encode `text` into a (1, num_tokens) tensor of token IDs (``<|endoftext|>`` allowed)."""
    encoded = tokenizer.encode(text, allowed_special={ENDOFTEXT})
    return torch.tensor(encoded).unsqueeze(0)  # add the batch dimension


def token_ids_to_text(token_ids: torch.Tensor, tokenizer) -> str:
    """Decode a (1, num_tokens) or (num_tokens,) tensor of token IDs into text."""
    flat = token_ids.squeeze(0) if token_ids.dim() > 1 else token_ids
    return tokenizer.decode(flat.tolist())


def _warn_if_cropped(idx: torch.Tensor, context_size: int) -> None:
    if idx.shape[1] > context_size:
        warnings.warn(
            f"The prompt has {idx.shape[1]} tokens, more than the context size {context_size}: "
            f"the model sees only the last {context_size} tokens.",
            stacklevel=3,
        )


@torch.no_grad()
def generate_text_simple(model, idx: torch.Tensor, max_new_tokens: int, context_size: int) -> torch.Tensor:
    """Append `max_new_tokens` greedily chosen tokens to `idx` (b, num_tokens); return (b, num_tokens + new)."""
    _warn_if_cropped(idx, context_size)
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]  # the model only accepts context_size tokens
        logits = model(idx_cond)  # (b, n, vocab_size)
        logits = logits[:, -1, :]  # only the last position predicts the next token: (b, vocab_size)
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (b, 1)
        idx = torch.cat((idx, idx_next), dim=1)  # (b, n + 1)
    return idx


def check_sampling_args(temperature: float, top_k: int | None, vocab_size: int | None = None) -> None:
    """Raise ValueError for a negative temperature or a top_k outside [1, vocab_size]."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy decoding), got {temperature}.")
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1 (or None for no top-k filtering), got {top_k}.")
        if vocab_size is not None and top_k > vocab_size:
            raise ValueError(f"top_k={top_k} is larger than the vocabulary ({vocab_size} tokens).")


def softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax of `logits / temperature`: T > 1 flattens the distribution, T < 1 sharpens it."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for scaling (use argmax for T = 0), got {temperature}.")
    return torch.softmax(logits / temperature, dim=-1)


@torch.no_grad()
def generate(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_size: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    eos_id: int | None = None,
) -> torch.Tensor:
    """Generate up to `max_new_tokens` tokens after `idx` (b, num_tokens) with temperature and top-k.

    ``temperature=0`` is greedy decoding. With `eos_id`, a row that produces it is
    finished: later positions of that row are filled with `eos_id`, and generation
    stops as soon as every row is finished (the final all-finished step is not
    appended, so a batch of one stops just before its end token, as in the book).
    """
    check_sampling_args(temperature, top_k)
    _warn_if_cropped(idx, context_size)
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        logits = model(idx[:, -context_size:])[:, -1, :]  # (b, vocab_size)
        if top_k is not None:
            check_sampling_args(temperature, top_k, logits.shape[-1])
            top_logits, _ = torch.topk(logits, top_k)
            min_val = top_logits[:, -1:]  # the k-th largest logit of each row: (b, 1)
            logits = logits.masked_fill(logits < min_val, -torch.inf)
        if temperature > 0.0:
            probs = softmax_with_temperature(logits, temperature)  # (b, vocab_size)
            idx_next = torch.multinomial(probs, num_samples=1)  # (b, 1)
        else:
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        if eos_id is not None:
            idx_next = idx_next.masked_fill(finished.unsqueeze(1), eos_id)
            finished = finished | (idx_next.squeeze(1) == eos_id)
            if bool(finished.all()):
                break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx
