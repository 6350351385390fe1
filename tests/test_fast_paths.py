"""The opt-in fast paths give the same results as the plain teaching model."""

from __future__ import annotations

import copy

import pytest
import torch

from buildllm.fast_attention import MultiHeadAttentionSDPA, use_fast_attention
from buildllm.generation import generate, generate_text_simple
from buildllm.kv_cache import KVCache, forward_with_cache, generate_cached, left_pad
from buildllm.model import GPT_CONFIG_124M, GPTModel

SMALL = {**GPT_CONFIG_124M, "vocab_size": 97, "emb_dim": 48, "n_heads": 3, "n_layers": 2,
         "context_length": 37, "drop_rate": 0.0}


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return GPTModel(cfg).eval()


@pytest.fixture(scope="module")
def model_124m():
    return _model({**GPT_CONFIG_124M, "drop_rate": 0.0}, seed=123)


def test_cached_prefill_logits_equal_plain_forward():
    model = _model(SMALL)
    idx = torch.randint(0, 97, (2, 11))
    cache = KVCache(model, batch_size=2)
    logits = forward_with_cache(model, idx, cache)
    torch.testing.assert_close(logits, model(idx), atol=1e-5, rtol=0)
    # then one token at a time: the last position matches the plain model on the longer input
    nxt = torch.randint(0, 97, (2, 1))
    step = forward_with_cache(model, nxt, cache)
    torch.testing.assert_close(step[:, -1], model(torch.cat([idx, nxt], 1))[:, -1], atol=1e-5, rtol=0)
    assert cache.length == 12


def test_cached_greedy_generation_identical_124m(model_124m):
    """200 new tokens, several prompts, batch of 2: cached == uncached token for token."""
    torch.manual_seed(1)
    idx = torch.randint(0, 50257, (2, 6))
    uncached = generate_text_simple(model_124m, idx, max_new_tokens=200, context_size=1024)
    cached = generate_cached(model_124m, idx, max_new_tokens=200, context_size=1024)
    assert torch.equal(cached, uncached)


def test_cached_batch_with_different_prompt_lengths():
    model = _model({**GPT_CONFIG_124M, "emb_dim": 96, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0})
    prompts = [[15496, 11, 314, 716], [464], [40, 367, 2885, 1464, 1807, 3619, 402]]
    idx, mask = left_pad(prompts)
    out = generate_cached(model, idx, max_new_tokens=60, attention_mask=mask)
    for row, prompt in enumerate(prompts):
        alone = generate_text_simple(model, torch.tensor([prompt]), 60, 1024)[0, len(prompt):]
        assert torch.equal(out[row, idx.shape[1]:], alone)


@pytest.mark.parametrize("padded", [False, True])
def test_cached_generation_past_the_context_length(padded):
    """Once the window is full the cache recomputes it: still the uncached tokens."""
    model = _model(SMALL)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]] if padded else [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    idx, mask = left_pad(prompts, pad_id=0)
    out = generate_cached(model, idx, 50, 37, attention_mask=mask if padded else None)
    for row, prompt in enumerate(prompts):
        alone = generate(model, torch.tensor([prompt]), 50, 37)[0, len(prompt):]
        assert torch.equal(out[row, idx.shape[1]:], alone)


def test_cached_sampling_matches_uncached_for_same_seed():
    model = _model(SMALL)
    idx = torch.tensor([[5, 6, 7]])
    torch.manual_seed(42)
    a = generate(model, idx, 20, 37, temperature=1.3, top_k=10)
    torch.manual_seed(42)
    b = generate_cached(model, idx, 20, 37, temperature=1.3, top_k=10)
    assert torch.equal(a, b)


def test_cached_eos_stops_each_row():
    model = _model(SMALL)
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    plain = generate(model, idx, 25, 37)
    eos = int(plain[0, 5])  # a token the first row produces
    a = generate(model, idx, 25, 37, eos_id=eos)
    b = generate_cached(model, idx, 25, 37, eos_id=eos)
    assert torch.equal(a, b)


def test_left_pad_rejects_empty_prompt():
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[1, 2], []])


@pytest.mark.parametrize("cfg", [
    {**SMALL, "qkv_bias": True},
    {**SMALL, "n_heads": 1, "emb_dim": 16, "n_layers": 3},
    {**GPT_CONFIG_124M, "drop_rate": 0.0, "n_layers": 2},
])
def test_fast_attention_logits_equal_plain(cfg):
    model = _model(cfg)
    fast = use_fast_attention(copy.deepcopy(model)).eval()
    assert all(isinstance(b.att, MultiHeadAttentionSDPA) for b in fast.trf_blocks)
    assert list(model.state_dict()) == list(fast.state_dict())
    idx = torch.randint(0, cfg["vocab_size"], (2, min(cfg["context_length"], 64)))
    torch.testing.assert_close(fast(idx), model(idx), atol=1e-5, rtol=0)


def test_fast_attention_loads_a_plain_state_dict_and_shares_weights():
    plain = _model(SMALL)
    fast = use_fast_attention(GPTModel(SMALL)).eval()
    fast.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 97, (1, 20))
    torch.testing.assert_close(fast(idx), plain(idx), atol=1e-5, rtol=0)
    same = use_fast_attention(plain)
    assert same.trf_blocks[0].att.W_query.weight is plain.trf_blocks[0].att.W_query.weight


def test_fast_attention_gradients_equal_plain():
    model = _model({**SMALL, "qkv_bias": True})
    fast = use_fast_attention(copy.deepcopy(model))
    idx = torch.randint(0, 97, (2, 16))
    model(idx).square().mean().backward()
    fast(idx).square().mean().backward()
    for (name, p), q in zip(model.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_fast_attention_too_long_input_is_a_clear_error():
    fast = use_fast_attention(_model(SMALL))
    with pytest.raises(ValueError, match="context_length=37"):
        fast.trf_blocks[0].att(torch.zeros(1, 38, 48))
