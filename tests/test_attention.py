"""Chapter 3's attention modules: exact outputs on the book's 6-token example, causality, SDPA equivalence, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from buildllm.attention import (
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention_v1,
    SelfAttention_v2,
)

# "Your journey starts with one step": one 3-dimensional embedding per token (the book's numbers).
INPUTS = torch.tensor(
    [[0.43, 0.15, 0.89],  # Your
     [0.55, 0.87, 0.66],  # journey
     [0.57, 0.85, 0.64],  # starts
     [0.22, 0.58, 0.33],  # with
     [0.77, 0.25, 0.10],  # one
     [0.05, 0.80, 0.55]]  # step
)
BATCH = torch.stack((INPUTS, INPUTS))  # (2, 6, 3)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- exact outputs (computed once with these seeds; they also agree with the book's printed values) ---

def test_self_attention_v1_values():
    torch.manual_seed(123)
    out = SelfAttention_v1(3, 2)(INPUTS)
    assert out.shape == (6, 2)
    torch.testing.assert_close(out[0], torch.tensor([0.299582, 0.805314]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[-1], torch.tensor([0.299010, 0.804037]), atol=1e-5, rtol=0)


def test_self_attention_v2_values():
    torch.manual_seed(789)
    out = SelfAttention_v2(3, 2)(INPUTS)
    torch.testing.assert_close(out[0], torch.tensor([-0.073890, 0.071290]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[-1], torch.tensor([-0.075444, 0.069305]), atol=1e-5, rtol=0)


def test_causal_attention_values():
    torch.manual_seed(123)
    out = CausalAttention(3, 2, context_length=6, dropout=0.0)(BATCH)
    assert out.shape == (2, 6, 2)
    torch.testing.assert_close(out[0, 0], torch.tensor([-0.451920, 0.221605]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0, -1], torch.tensor([-0.529901, -0.108068]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0], out[1])  # same input in both batch rows


def test_multihead_wrapper_values():
    torch.manual_seed(123)
    out = MultiHeadAttentionWrapper(3, 2, context_length=6, dropout=0.0, num_heads=2)(BATCH)
    assert out.shape == (2, 6, 4)  # num_heads * d_out
    torch.testing.assert_close(out[0, 0], torch.tensor([-0.451920, 0.221605, 0.477196, 0.106348]),
                               atol=1e-5, rtol=0)


def test_multihead_attention_values():
    torch.manual_seed(123)
    out = MultiHeadAttention(3, 2, context_length=6, dropout=0.0, num_heads=2)(BATCH)
    assert out.shape == (2, 6, 2)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.319018, 0.485763]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0, -1], torch.tensor([0.257474, 0.402783]), atol=1e-5, rtol=0)


# --- exercises -------------------------------------------------------------------------------

def test_exercise_3_1_v1_equals_v2_after_weight_transfer():
    """nn.Linear stores W as (d_out, d_in): v1's W_query is v2's W_query.weight transposed."""
    torch.manual_seed(789)
    sa_v2 = SelfAttention_v2(3, 2)
    sa_v1 = SelfAttention_v1(3, 2)
    with torch.no_grad():
        sa_v1.W_query.copy_(sa_v2.W_query.weight.T)
        sa_v1.W_key.copy_(sa_v2.W_key.weight.T)
        sa_v1.W_value.copy_(sa_v2.W_value.weight.T)
    torch.testing.assert_close(sa_v1(INPUTS), sa_v2(INPUTS))


def test_exercise_3_2_two_dimensional_output():
    torch.manual_seed(123)
    out = MultiHeadAttentionWrapper(3, 1, context_length=6, dropout=0.0, num_heads=2)(BATCH)
    assert out.shape == (2, 6, 2)
    torch.testing.assert_close(out[0, 0], torch.tensor([-0.573988, 0.221605]), atol=1e-5, rtol=0)


def test_exercise_3_3_gpt2_size_attention_parameters():
    mha = MultiHeadAttention(768, 768, context_length=1024, dropout=0.0, num_heads=12)
    # 3 projections of 768 x 768 without bias, plus out_proj 768 x 768 + 768 bias.
    assert n_params(mha) == 3 * 768 * 768 + 768 * 768 + 768 == 2_360_064
    assert mha.head_dim == 64
    assert mha.mask.shape == (1024, 1024)


# --- properties --------------------------------------------------------------------------------

def assert_causal(module: torch.nn.Module, b: int, t: int, d_in: int, seed: int) -> None:
    """Changing inputs after position p never changes outputs at positions <= p."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, d_in, generator=gen)
    out = module(x)
    for p in range(t - 1):
        x2 = x.clone()
        x2[:, p + 1:] = torch.randn(b, t - p - 1, d_in, generator=gen)
        out2 = module(x2)
        torch.testing.assert_close(out2[:, : p + 1], out[:, : p + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(out2[:, p + 1:], out[:, p + 1:])  # the later positions do see it


def test_causal_attention_is_causal():
    torch.manual_seed(0)
    assert_causal(CausalAttention(5, 4, context_length=8, dropout=0.0).eval(), b=2, t=8, d_in=5, seed=1)


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(
    num_heads=st.integers(1, 4),
    head_dim=st.integers(1, 5),
    t=st.integers(2, 9),
    d_in=st.integers(1, 6),
    qkv_bias=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_multihead_attention_is_causal(num_heads, head_dim, t, d_in, qkv_bias, seed):
    torch.manual_seed(seed)
    mha = MultiHeadAttention(d_in, num_heads * head_dim, context_length=t + 3, dropout=0.0,
                             num_heads=num_heads, qkv_bias=qkv_bias).eval()
    assert_causal(mha, b=2, t=t, d_in=d_in, seed=seed)


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(
    num_heads=st.integers(1, 4),
    head_dim=st.integers(1, 8),
    t=st.integers(1, 12),
    qkv_bias=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_multihead_attention_equals_sdpa(num_heads, head_dim, t, qkv_bias, seed):
    """Our masked softmax attention is what PyTorch's fused scaled_dot_product_attention computes."""
    torch.manual_seed(seed)
    d_in, d_out = 7, num_heads * head_dim
    mha = MultiHeadAttention(d_in, d_out, context_length=12, dropout=0.0, num_heads=num_heads,
                             qkv_bias=qkv_bias).eval()
    x = torch.randn(3, t, d_in)

    def heads(z: torch.Tensor) -> torch.Tensor:  # (b, t, d_out) -> (b, num_heads, t, head_dim)
        return z.view(3, t, num_heads, head_dim).transpose(1, 2)

    with torch.no_grad():
        ctx = F.scaled_dot_product_attention(heads(mha.W_query(x)), heads(mha.W_key(x)), heads(mha.W_value(x)),
                                             is_causal=True)
        expected = mha.out_proj(ctx.transpose(1, 2).reshape(3, t, d_out))
        torch.testing.assert_close(mha(x), expected, atol=1e-6, rtol=1e-5)


def test_wrapper_heads_equal_single_causal_attention():
    """Each head of the wrapper is a CausalAttention; the wrapper just concatenates them."""
    torch.manual_seed(5)
    wrapper = MultiHeadAttentionWrapper(3, 2, context_length=6, dropout=0.0, num_heads=3)
    out = wrapper(BATCH)
    for i, head in enumerate(wrapper.heads):
        torch.testing.assert_close(out[..., 2 * i: 2 * i + 2], head(BATCH))


def test_dropout_only_in_training_mode():
    torch.manual_seed(123)
    mha = MultiHeadAttention(3, 4, context_length=6, dropout=0.5, num_heads=2)
    mha.eval()
    first, second = mha(BATCH), mha(BATCH)
    torch.testing.assert_close(first, second)
    mha.train()
    torch.manual_seed(0)
    assert not torch.allclose(mha(BATCH), first)


def test_shorter_input_uses_top_left_of_mask():
    torch.manual_seed(123)
    mha = MultiHeadAttention(3, 2, context_length=6, dropout=0.0, num_heads=2)
    torch.testing.assert_close(mha(BATCH[:, :4]), mha(BATCH)[:, :4])


# --- bad input ---------------------------------------------------------------------------------

def test_d_out_not_divisible_by_num_heads():
    with pytest.raises(ValueError, match=r"d_out \(10\) must be divisible by num_heads \(3\)"):
        MultiHeadAttention(4, 10, context_length=6, dropout=0.0, num_heads=3)


@pytest.mark.parametrize("cls", [CausalAttention, MultiHeadAttention])
def test_input_longer_than_context_length(cls):
    kwargs = {"num_heads": 1} if cls is MultiHeadAttention else {}
    module = cls(3, 2, context_length=4, dropout=0.0, **kwargs)
    with pytest.raises(ValueError, match="more than context_length=4"):
        module(BATCH)  # 6 tokens
