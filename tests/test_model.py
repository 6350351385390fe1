"""Chapter 4's GPT model: layers against PyTorch's own, exact parameter counts, causality, generation, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from buildllm.generation import generate_text_simple, text_to_token_ids, token_ids_to_text
from buildllm.model import (
    GELU,
    GPT2_SIZES,
    GPT_CONFIG_124M,
    FeedForward,
    GPTModel,
    LayerNorm,
    TransformerBlock,
    count_parameters,
    get_gpt2_config,
    model_memory_mb,
)
from buildllm.tokenizer import get_gpt2_tokenizer

TINY = {"vocab_size": 61, "context_length": 11, "emb_dim": 12, "n_heads": 3, "n_layers": 2,
        "drop_rate": 0.0, "qkv_bias": False}


@pytest.fixture(scope="module")
def gpt124m() -> GPTModel:
    """The untrained 124M model of chapter 4 (seed 123), in eval mode."""
    torch.manual_seed(123)
    return GPTModel(GPT_CONFIG_124M).eval()


# --- layers ----------------------------------------------------------------------------------------

def test_layer_norm_normalizes_and_equals_torch():
    torch.manual_seed(123)
    x = torch.randn(2, 5)
    ln = LayerNorm(5)
    out = ln(x)
    torch.testing.assert_close(out.mean(dim=-1), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.var(dim=-1, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    with torch.no_grad():  # non-trivial scale and shift
        ln.scale.copy_(torch.randn(5))
        ln.shift.copy_(torch.randn(5))
    reference = nn.LayerNorm(5, eps=1e-5)
    with torch.no_grad():
        reference.weight.copy_(ln.scale)
        reference.bias.copy_(ln.shift)
    torch.testing.assert_close(ln(x), reference(x))


def test_layer_norm_of_constant_vector_is_finite():
    out = LayerNorm(4)(torch.full((1, 4), 3.0))  # variance 0: eps keeps it finite
    assert torch.equal(out, torch.zeros(1, 4))


def test_gelu_values_and_torch_tanh_approximation():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0])
    torch.testing.assert_close(GELU()(x), torch.tensor([-0.003637, -0.158808, 0.0, 0.841192, 2.996363]),
                               atol=1e-6, rtol=0)
    x = torch.linspace(-6, 6, 101)
    torch.testing.assert_close(GELU()(x), F.gelu(x, approximate="tanh"))


def test_feed_forward_shape_and_parameters():
    ff = FeedForward(GPT_CONFIG_124M)
    x = torch.rand(2, 3, 768)
    assert ff(x).shape == (2, 3, 768)
    assert ff.layers[0].out_features == 4 * 768


def test_exercise_4_1_feed_forward_vs_attention_parameters():
    block = TransformerBlock(GPT_CONFIG_124M)
    assert count_parameters(block.ff) == 768 * 3072 + 3072 + 3072 * 768 + 768 == 4_722_432
    assert count_parameters(block.att) == 2_360_064
    assert count_parameters(block) == 4_722_432 + 2_360_064 + 2 * 2 * 768 == 7_085_568


def test_transformer_block_keeps_shape():
    torch.manual_seed(123)
    block = TransformerBlock(GPT_CONFIG_124M)
    x = torch.rand(2, 4, 768)
    assert block(x).shape == (2, 4, 768)


# --- the model -----------------------------------------------------------------------------------

EXPECTED_SIZES = {  # (all parameters, without the output head that GPT-2 ties to tok_emb)
    "gpt2-small": (163_009_536, 124_412_160),
    "gpt2-medium": (406_212_608, 354_749_440),
    "gpt2-large": (838_220_800, 773_891_840),
    "gpt2-xl": (1_637_792_000, 1_557_380_800),
}


@pytest.mark.parametrize("size", list(GPT2_SIZES))
def test_parameter_counts_of_gpt2_sizes(size):
    with torch.device("meta"):  # shapes only: no memory is allocated
        model = GPTModel(get_gpt2_config(size))
    assert (count_parameters(model), count_parameters(model, exclude_tied_output=True)) == EXPECTED_SIZES[size]


def test_memory_of_124m_model():
    with torch.device("meta"):
        model = GPTModel(GPT_CONFIG_124M)
    assert model_memory_mb(model) == pytest.approx(621.83203125)  # 163,009,536 * 4 bytes / 1024**2


def test_logits_shape(gpt124m):
    tokenizer = get_gpt2_tokenizer()
    batch = torch.stack([torch.tensor(tokenizer.encode(t)) for t in ["Every effort moves you", "Every day holds a"]])
    assert batch.tolist() == [[6109, 3626, 6100, 345], [6109, 1110, 6622, 257]]
    with torch.no_grad():
        logits = gpt124m(batch)
    assert logits.shape == (2, 4, 50257)


def test_generate_hello_i_am_seed_123(gpt124m):
    """The book's untrained-model example: same seed, same init order, same gibberish."""
    tokenizer = get_gpt2_tokenizer()
    encoded = text_to_token_ids("Hello, I am", tokenizer)
    assert encoded.tolist() == [[15496, 11, 314, 716]]
    out = generate_text_simple(gpt124m, encoded, max_new_tokens=6, context_size=1024)
    assert out.tolist() == [[15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267]]
    assert token_ids_to_text(out, tokenizer) == "Hello, I am Featureiman Byeswickattribute argue"


def test_gpt_model_is_causal():
    torch.manual_seed(0)
    model = GPTModel(TINY).eval()
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 61, (2, 11), generator=gen)
    with torch.no_grad():
        logits = model(idx)
        for p in range(10):
            changed = idx.clone()
            changed[:, p + 1:] = torch.randint(0, 61, (2, 10 - p), generator=gen)
            logits2 = model(changed)
            torch.testing.assert_close(logits2[:, : p + 1], logits[:, : p + 1], atol=1e-6, rtol=0)


def test_eval_mode_is_deterministic_train_mode_uses_dropout():
    torch.manual_seed(0)
    model = GPTModel({**TINY, "drop_rate": 0.5})
    idx = torch.randint(0, 61, (1, 8))
    model.eval()
    torch.testing.assert_close(model(idx), model(idx))
    model.train()
    assert not torch.allclose(model(idx), model(idx))


def test_same_seed_same_weights():
    torch.manual_seed(42)
    a = GPTModel(TINY)
    torch.manual_seed(42)
    b = GPTModel(TINY)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


# --- bad input -------------------------------------------------------------------------------------

def test_input_longer_than_context_length():
    model = GPTModel(TINY)
    with pytest.raises(ValueError, match=r"12 tokens but the model's context_length is 11"):
        model(torch.zeros(1, 12, dtype=torch.long))


def test_unknown_model_size_lists_valid_sizes():
    with pytest.raises(ValueError, match=r"Unknown GPT-2 model size 'gpt2-huge'.*gpt2-small \(124M\), gpt2-medium"):
        get_gpt2_config("gpt2-huge")


def test_size_aliases_and_overrides():
    assert get_gpt2_config("355M") == get_gpt2_config("gpt2-medium")
    cfg = get_gpt2_config("gpt2-xl", qkv_bias=True, context_length=256)
    assert (cfg["emb_dim"], cfg["n_layers"], cfg["n_heads"], cfg["qkv_bias"], cfg["context_length"]) == \
        (1600, 48, 25, True, 256)
    with pytest.raises(ValueError, match=r"Unknown config key\(s\) \['emb_size'\]"):
        get_gpt2_config("gpt2-small", emb_size=10)


def test_config_missing_keys():
    cfg = dict(TINY)
    del cfg["qkv_bias"]
    with pytest.raises(ValueError, match=r"lacks the key\(s\) \['qkv_bias'\]"):
        GPTModel(cfg)


def test_heads_must_divide_emb_dim():
    with pytest.raises(ValueError, match=r"emb_dim \(12\) must be divisible by n_heads \(5\)"):
        GPTModel({**TINY, "n_heads": 5})


@pytest.mark.parametrize(("change", "message"), [
    ({"drop_rate": 1.0}, "drop_rate must be a number in"),
    ({"n_layers": 0}, "n_layers must be an integer >= 1"),
    ({"vocab_size": 10.5}, "vocab_size must be an integer"),
    ({"qkv_bias": "yes"}, "qkv_bias must be True or False"),
    ({"padded_vocab_size": 3}, "padded_vocab_size must be an integer >="),
    ({"num_classes": 1}, "num_classes must be an integer >= 2"),
])
def test_inconsistent_configs_are_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        GPTModel({**TINY, **change})


def test_config_reads_like_the_books_dict_and_never_changes():
    model = GPTModel(TINY)
    cfg = model.cfg
    assert cfg["emb_dim"] == TINY["emb_dim"] and cfg.get("num_classes") is None and "n_heads" in cfg
    assert {**cfg, "drop_rate": 0.5}["drop_rate"] == 0.5 and dict(cfg)["vocab_size"] == TINY["vocab_size"]
    with pytest.raises(Exception):
        cfg.emb_dim = 3  # frozen
    with pytest.raises(TypeError):
        cfg["emb_dim"] = 3  # no item assignment either
    changed = cfg.replace(drop_rate=0.0)
    assert changed["drop_rate"] == 0.0 and cfg["drop_rate"] == TINY["drop_rate"]
