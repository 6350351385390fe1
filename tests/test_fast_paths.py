"""The opt-in fast paths (KV cache, ``"fast": True``) give the same results as the plain teaching model."""

from __future__ import annotations

import pytest
import torch

from buildllm.generation import generate, generate_text_simple
from buildllm.kv_cache import KVCache, left_pad
from buildllm.model import GPT_CONFIG_124M, GPTModel
from generation_checks import assert_padded_batch_matches_alone

SMALL = {**GPT_CONFIG_124M, "vocab_size": 97, "emb_dim": 48, "n_heads": 3, "n_layers": 2,
         "context_length": 37, "drop_rate": 0.0}


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return GPTModel(cfg).eval()


def _twins(cfg, seed=0):
    """The plain model and the fast one with the same weights."""
    plain = _model(cfg, seed)
    fast = GPTModel({**cfg, "fast": True}).eval()
    fast.load_state_dict(plain.state_dict())
    return plain, fast


@pytest.fixture(scope="module")
def model_124m():
    return _model({**GPT_CONFIG_124M, "drop_rate": 0.0}, seed=123)


@pytest.mark.parametrize("fast", [False, True])
def test_cached_prefill_and_decode_logits_equal_plain_forward(fast):
    plain, fast_model = _twins(SMALL)
    model = fast_model if fast else plain
    idx = torch.randint(0, 97, (2, 11))
    cache = KVCache(max_len=37)
    logits = model(idx, kv_cache=cache)
    torch.testing.assert_close(logits, plain(idx), atol=1e-5, rtol=0)
    # then one token at a time: the last position matches the plain model on the longer input
    nxt = torch.randint(0, 97, (2, 1))
    step = model(nxt, kv_cache=cache)
    torch.testing.assert_close(step[:, -1], plain(torch.cat([idx, nxt], 1))[:, -1], atol=1e-5, rtol=0)
    assert cache.length == 12


def test_cache_refuses_more_than_it_holds():
    model = _model(SMALL)
    cache = KVCache(max_len=10)
    model(torch.zeros(1, 8, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="holds 10 positions; 8 are used"):
        model(torch.zeros(1, 3, dtype=torch.long), kv_cache=cache)


def test_cached_greedy_generation_identical_124m(model_124m):
    """60 new tokens, batch of 2, at GPT-2 small size: cached == uncached token for token."""
    torch.manual_seed(1)
    idx = torch.randint(0, 50257, (2, 6))
    uncached = generate_text_simple(model_124m, idx, max_new_tokens=60, context_size=1024)
    cached = generate_text_simple(model_124m, idx, max_new_tokens=60, context_size=1024, use_cache=True)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("fast", [False, True])
def test_cached_batch_with_different_prompt_lengths(fast):
    model = _model({**GPT_CONFIG_124M, "emb_dim": 96, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0, "fast": fast})
    prompts = [[15496, 11, 314, 716], [464], [40, 367, 2885, 1464, 1807, 3619, 402]]
    idx, mask, out = assert_padded_batch_matches_alone(model, prompts, 60, 1024, pad_id=50256)
    assert torch.equal(out, generate(model, idx, 60, 1024, attention_mask=mask))  # the same without the cache


@pytest.mark.parametrize("padded", [False, True])
def test_cached_generation_past_the_context_length(padded):
    """Once the window is full the cache recomputes it: still the uncached tokens."""
    model = _model(SMALL)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]] if padded else [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    idx, mask = left_pad(prompts, pad_id=0)
    out = generate(model, idx, 50, 37, attention_mask=mask if padded else None, use_cache=True)
    for row, prompt in enumerate(prompts):
        alone = generate(model, torch.tensor([prompt]), 50, 37)[0, len(prompt):]
        assert torch.equal(out[row, idx.shape[1]:], alone)


def test_cached_sampling_matches_uncached_for_same_seed():
    model = _model(SMALL)
    idx = torch.tensor([[5, 6, 7]])
    torch.manual_seed(42)
    a = generate(model, idx, 20, 37, temperature=1.3, top_k=10)
    torch.manual_seed(42)
    b = generate(model, idx, 20, 37, temperature=1.3, top_k=10, use_cache=True)
    assert torch.equal(a, b)


def test_cached_eos_stops_each_row():
    model = _model(SMALL)
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    plain = generate(model, idx, 25, 37)
    eos = int(plain[0, 5])  # a token the first row produces
    a = generate(model, idx, 25, 37, eos_id=eos)
    b = generate(model, idx, 25, 37, eos_id=eos, use_cache=True)
    assert torch.equal(a, b)
    assert (a[0, 5:] == eos).all()


def test_left_pad_rejects_empty_prompt():
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[1, 2], []], pad_id=0)


@pytest.mark.parametrize("cfg", [
    {**SMALL, "qkv_bias": True},
    {**SMALL, "n_heads": 1, "emb_dim": 16, "n_layers": 3},
    {**GPT_CONFIG_124M, "drop_rate": 0.0, "n_layers": 2},
])
def test_fast_logits_equal_plain(cfg):
    plain, fast = _twins(cfg)
    assert list(plain.state_dict()) == list(fast.state_dict())
    idx = torch.randint(0, cfg["vocab_size"], (2, min(cfg["context_length"], 64)))
    torch.testing.assert_close(fast(idx), plain(idx), atol=1e-4, rtol=0)


def test_fast_gradients_equal_plain():
    plain, fast = _twins({**SMALL, "qkv_bias": True})
    idx = torch.randint(0, 97, (2, 16))
    plain(idx).square().mean().backward()
    fast(idx).square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_fast_too_long_input_is_a_clear_error():
    _, fast = _twins(SMALL)
    with pytest.raises(ValueError, match="context_length=37"):
        fast.trf_blocks[0].att(torch.zeros(1, 38, 48))


def test_tied_weights_share_one_matrix_and_count_once():
    tied = _model({**SMALL, "tie_weights": True})
    untied = _model(SMALL)
    assert tied.out_head.weight is tied.tok_emb.weight
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(untied) - params(tied) == 97 * 48


def test_padded_vocabulary_keeps_weights_and_never_predicts_padding():
    plain = _model(SMALL)
    padded = _model({**SMALL, "padded_vocab_size": 128})  # same seed: the same random draws
    assert padded.tok_emb.weight.shape == (128, 48)
    torch.testing.assert_close(padded.tok_emb.weight[:97], plain.tok_emb.weight)
    assert padded.tok_emb.weight[97:].abs().sum() == 0
    idx = torch.randint(0, 97, (2, 9))
    logits = padded(idx)
    assert torch.isinf(logits[..., 97:]).all()
    torch.testing.assert_close(logits[..., :97], plain(idx), atol=1e-5, rtol=0)
