"""Turning logits into text (chapters 4 and 5): greedy decoding, temperature, top-k, end-of-text.

Beyond the book (bonus material): top-p (nucleus) sampling, a CTRL-style repetition
penalty, beam search, and ``use_cache=True``, which keeps the keys and values of
earlier tokens in a `buildllm.kv_cache.KVCache` (same tokens, fewer FLOPs). Every
generate function picks its tokens with the one helper `pick_next_token`, and every
model of the package (`GPTModel`, the Llama-style models) works with all of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch

from .kv_cache import KVCache
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
def generate_text_simple(
    model, idx: torch.Tensor, max_new_tokens: int, context_size: int, *, use_cache: bool = False
) -> torch.Tensor:
    """Append `max_new_tokens` greedily chosen tokens to `idx` (b, num_tokens); return (b, num_tokens + new).

    ``use_cache=True`` gives the same tokens through the KV cache (see `generate`).
    """
    if use_cache:
        return generate(model, idx, max_new_tokens, context_size, use_cache=True)
    _warn_if_cropped(idx, context_size)
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]  # the model only accepts context_size tokens
        logits = model(idx_cond)  # (b, n, vocab_size)
        logits = logits[:, -1, :]  # only the last position predicts the next token: (b, vocab_size)
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (b, 1)
        idx = torch.cat((idx, idx_next), dim=1)  # (b, n + 1)
    return idx


def check_sampling_args(
    temperature: float,
    top_k: int | None,
    vocab_size: int | None = None,
    *,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
) -> None:
    """Raise ValueError for temperature < 0, top_k outside [1, vocab_size], top_p outside (0, 1], penalty <= 0."""
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(
            f"top_p must be in (0, 1]: the share of probability mass to sample from (e.g. 0.9; "
            f"1 or None keeps every token), got {top_p}."
        )
    if not repetition_penalty > 0.0:
        raise ValueError(
            f"repetition_penalty must be > 0 (1.0 = no penalty; values above 1, e.g. 1.2, make repeats "
            f"less likely), got {repetition_penalty}."
        )
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
def generate_tokens(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_size: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    *,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    use_cache: bool = False,
    attention_mask: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token IDs (b, 1) after `idx` (b, num_tokens), one step at a time (the loop of `generate`).

    ``use_cache=True`` keeps the keys and values of earlier tokens in a `KVCache`:
    the prompt runs once (prefill), then each step feeds only the newest token (same
    tokens, far fewer FLOPs). Once the sequence fills the context, the window of the
    last `context_size` tokens shifts by one each step and every cached position
    would change, so from then on each step recomputes the window (exactly the
    uncached result, no speed-up). `attention_mask` (b, num_tokens; 1 = real token,
    0 = left padding) lets prompts of different lengths share a batch (see
    `buildllm.kv_cache.left_pad`).
    """
    check_sampling_args(temperature, top_k, top_p=top_p, repetition_penalty=repetition_penalty)
    _warn_if_cropped(idx, context_size)
    mask = attention_mask
    cache = None
    for step in range(max_new_tokens):
        if use_cache and cache is not None and idx.shape[1] <= context_size:
            logits = model(idx[:, -1:], kv_cache=cache)  # decode: only the newest token
        elif use_cache or mask is not None:
            # prefill (or a full window): a fresh cache over everything the model may see, only as
            # long as this generation can fill it (a model's context may be far longer)
            window = idx[:, -context_size:]
            cache = KVCache(min(context_size, window.shape[1] + max_new_tokens - step),
                            None if mask is None else mask[:, -context_size:])
            logits = model(window, kv_cache=cache)
        else:
            logits = model(idx[:, -context_size:])  # the book: the whole (cropped) sequence each step
        logits = logits[:, -1, :]  # only the last position predicts the next token: (b, vocab_size)
        if top_k is not None:
            check_sampling_args(temperature, top_k, logits.shape[-1])
        idx_next = pick_next_token(logits, temperature, top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                                   token_ids=idx, attention_mask=mask)  # (b, 1)
        yield idx_next
        idx = torch.cat((idx, idx_next), dim=1)
        if mask is not None:
            mask = torch.cat((mask, torch.ones_like(idx_next)), dim=1)


@torch.no_grad()
def generate(model, idx: torch.Tensor, max_new_tokens: int, context_size: int, temperature: float = 0.0,
             top_k: int | None = None, eos_id: int | None = None, **options) -> torch.Tensor:
    """Generate up to `max_new_tokens` tokens after `idx` (b, num_tokens) with temperature and top-k.

    ``temperature=0`` is greedy decoding. With `eos_id`, a row that produces it is
    finished: later positions of that row are filled with `eos_id`, and generation
    stops as soon as every row is finished (the final all-finished step is not
    appended, so a batch of one stops just before its end token, as in the book).

    Beyond the book, `options` are those of `generate_tokens`: `top_p` (nucleus
    sampling) and `repetition_penalty` (see `pick_next_token`; their defaults change
    nothing), `use_cache` and `attention_mask`.
    """
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    steps = generate_tokens(model, idx, max_new_tokens, context_size, temperature, top_k, **options)
    for idx_next in steps:
        if eos_id is not None:
            idx_next = idx_next.masked_fill(finished.unsqueeze(1), eos_id)
            finished = finished | (idx_next.squeeze(1) == eos_id)
            if bool(finished.all()):
                break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


# --- Decoding strategies beyond the book -------------------------------------------------


def apply_repetition_penalty(
    logits: torch.Tensor, token_ids: torch.Tensor, penalty: float, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """CTRL-style penalty on logits (b, vocab) of tokens in `token_ids` (b, n): positive / penalty, negative * penalty.

    With ``penalty > 1`` both make an already-used token less likely, however often it
    appeared (Keskar et al., 2019, "CTRL"). ``penalty = 1`` changes nothing; below 1 it
    rewards repeats. `attention_mask` (b, n), 1 = real token, keeps left padding out.
    """
    if penalty == 1.0:
        return logits
    weights = torch.ones_like(token_ids) if attention_mask is None else attention_mask.to(token_ids.dtype)
    counts = torch.zeros(logits.shape, dtype=token_ids.dtype, device=logits.device)
    seen = counts.scatter_add_(-1, token_ids, weights) > 0  # (b, vocab): True for tokens already used
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the fewest most likely tokens whose probabilities (..., vocab) sum to at least `top_p`; renormalize.

    This is nucleus sampling (Holtzman et al., 2019): unlike top-k, the number of
    tokens kept adapts to the distribution: few when the model is sure, many when not.
    """
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)  # (..., vocab), most likely first
    cumulative = sorted_probs.cumsum(dim=-1)
    mass_before = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], dim=-1)
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)  # the tokens above already reach top_p
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)  # back to vocabulary order
    return kept / kept.sum(dim=-1, keepdim=True)


def pick_next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    *,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    token_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Choose the next token (b, 1) from the last logits (b, vocab): the decoding step of every generate function.

    Order: repetition penalty (on the tokens so far, `token_ids` (b, n)) -> top-k ->
    temperature -> top-p -> sample; with ``temperature=0`` the argmax (top-p changes
    nothing then: the most likely token is always kept). With the defaults this is
    exactly the book's step: top-k, softmax(logits / T), multinomial (or argmax).
    """
    if repetition_penalty != 1.0:
        if token_ids is None:
            raise ValueError("repetition_penalty needs token_ids, the (b, num_tokens) tokens of the sequence so far.")
        logits = apply_repetition_penalty(logits, token_ids, repetition_penalty, attention_mask)
    if top_k is not None:
        top_logits, _ = torch.topk(logits, top_k)
        min_val = top_logits[:, -1:]  # the k-th largest logit of each row: (b, 1)
        logits = logits.masked_fill(logits < min_val, -torch.inf)
    if temperature > 0.0:
        probs = softmax_with_temperature(logits, temperature)  # (b, vocab_size)
        if top_p is not None and top_p < 1.0:
            probs = top_p_filter(probs, top_p)
        return torch.multinomial(probs, num_samples=1)  # (b, 1)
    return torch.argmax(logits, dim=-1, keepdim=True)


@torch.no_grad()
def sequence_log_prob(model, token_ids: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """Sum of the log-probabilities of the tokens after the first `prompt_length` of `token_ids` (b, n): (b,)."""
    if not 1 <= prompt_length <= token_ids.shape[1]:
        raise ValueError(f"prompt_length must be between 1 and the sequence length {token_ids.shape[1]}, "
                         f"got {prompt_length}.")
    logits = model(token_ids[:, :-1])  # position i predicts token i + 1: (b, n - 1, vocab)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    token_log_probs = log_probs.gather(-1, token_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (b, n - 1)
    return token_log_probs[:, prompt_length - 1 :].sum(dim=-1)


@torch.no_grad()
def generate_beam_search(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_size: int,
    num_beams: int,
    length_penalty: float = 1.0,
    eos_id: int | None = None,
) -> torch.Tensor:
    """Beam search for one prompt `idx` (1, n): keep the `num_beams` best partial sequences; return the best (1, n + new).

    Each step extends every beam by every token and keeps the `num_beams` candidates
    with the highest summed log-probability. A candidate ending in `eos_id` is set
    aside as finished (without the end token, as `generate` leaves it out); the
    search stops once `num_beams` are finished (like Hugging Face's
    ``early_stopping=True``) or after `max_new_tokens`. The winner has the highest
    score / length**length_penalty (length = generated tokens, the end token
    included): 0 ranks by total log-probability (favours short answers), 1 by the
    average per token. ``num_beams=1`` is greedy decoding. No KV cache: every step
    runs the model on all beams (a batch of `num_beams`).
    """
    if idx.dim() != 2 or idx.shape[0] != 1:
        raise ValueError(
            f"generate_beam_search takes one prompt, idx of shape (1, num_tokens); got {tuple(idx.shape)}. "
            f"For several prompts call it once per row: generate_beam_search(model, idx[i:i+1], ...)."
        )
    if num_beams < 1:
        raise ValueError(f"num_beams must be at least 1 (1 = greedy decoding), got {num_beams}.")
    _warn_if_cropped(idx, context_size)
    beams = idx  # (k, n): the live beams, k = 1 at the start
    scores = torch.zeros(1, device=idx.device)  # (k,) summed log-probabilities of each beam's new tokens
    finished: list[tuple[float, torch.Tensor]] = []  # (normalized score, tokens without the end token)
    for step in range(1, max_new_tokens + 1):
        logits = model(beams[:, -context_size:])[:, -1, :]  # (k, vocab)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        vocab = log_probs.shape[-1]
        candidates = (scores[:, None] + log_probs).flatten()  # (k * vocab): every beam extended by every token
        # 2 * num_beams candidates: even if num_beams of them end the text, num_beams others go on.
        top_scores, top_flat = torch.topk(candidates, min(2 * num_beams, candidates.numel()))
        new_beams, new_scores = [], []
        for score, flat in zip(top_scores.tolist(), top_flat.tolist()):
            beam, token = divmod(flat, vocab)
            if eos_id is not None and token == eos_id:
                finished.append((score / step**length_penalty, beams[beam]))
            else:
                new_beams.append(torch.cat([beams[beam], beams.new_tensor([token])]))
                new_scores.append(score)
            if len(new_beams) == num_beams:
                break
        if len(finished) >= num_beams or not new_beams:
            break
        beams = torch.stack(new_beams)  # (k, n + step)
        scores = torch.tensor(new_scores, device=idx.device)
    else:  # max_new_tokens reached: the live beams compete with the finished ones
        steps = beams.shape[1] - idx.shape[1]
        finished += [(s / max(steps, 1) ** length_penalty, b) for s, b in zip(scores.tolist(), beams)]
    best = max(finished, key=lambda item: item[0])[1]
    return best.unsqueeze(0)  # (1, num_tokens + new)
