"""Decoding beyond the book: top-p, repetition penalty, beam search, and use_cache on the generate functions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from buildllm.generation import (
    apply_repetition_penalty,
    check_sampling_args,
    generate,
    generate_beam_search,
    generate_text_simple,
    pick_next_token,
    sequence_log_prob,
    top_p_filter,
)
from buildllm.kv_cache import left_pad
from buildllm.model import GPT_CONFIG_124M, GPTModel

SMALL = {**GPT_CONFIG_124M, "vocab_size": 97, "emb_dim": 48, "n_heads": 3, "n_layers": 2,
         "context_length": 37, "drop_rate": 0.0}


@pytest.fixture(scope="module")
def small_gpt():
    torch.manual_seed(0)
    return GPTModel(SMALL).eval()


class BigramTable(nn.Module):
    """A toy "model" whose next-token log-probabilities depend only on the last token: logits = table[token]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table  # (vocab, vocab): row = current token, column = next token

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]  # (b, n, vocab)


def trap_model() -> BigramTable:
    """Greedy takes A (0.5) and then finds only 0.25-probability tokens; B (0.4) leads to a 0.9 token.

    Tokens: 0 start, 1 A, 2 B, 3 C, 4..7 after A (0.25 each), 8 D. Greedy: start A 4 (0.5 * 0.25 = 0.125);
    the best two-token continuation is start B C (0.4 * 0.9 = 0.36).
    """
    vocab = 9
    probs = torch.full((vocab, vocab), 1e-6)
    probs[0, [1, 2, 8]] = torch.tensor([0.5, 0.4, 0.1])
    probs[1, 4:8] = torch.tensor([0.25, 0.2499, 0.2498, 0.2497])  # no exact ties: argmax is token 4
    probs[2, 3] = 0.9
    probs[2, 8] = 0.1
    probs[3:, 8] = 1.0
    probs = probs / probs.sum(dim=-1, keepdim=True)
    return BigramTable(probs.log())


# --- top-p ---------------------------------------------------------------------------------

def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.125, 0.5, 0.0625, 0.25, 0.0625]])  # binary fractions: sums are exact
    # sorted: 0.5, 0.25, 0.125, 0.0625, 0.0625 -> cumulative 0.5, 0.75, 0.875, 0.9375, 1
    assert top_p_filter(probs, 0.5).tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0]]
    # 0.75 is reached exactly by two tokens; 0.76 needs a third (float32, like the probabilities)
    assert torch.equal(top_p_filter(probs, 0.75), torch.tensor([[0.0, 2 / 3, 0.0, 1 / 3, 0.0]]))
    assert torch.equal(top_p_filter(probs, 0.76), torch.tensor([[1 / 7, 4 / 7, 0.0, 2 / 7, 0.0]]))
    assert top_p_filter(probs, 1.0).tolist() == probs.tolist()
    # the most likely token always survives, however small p is
    assert top_p_filter(probs, 1e-9).tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0]]


def test_top_p_works_per_row():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    kept = top_p_filter(probs, 0.6)  # row 0 needs two tokens to reach 0.6, row 1 one
    assert (kept > 0).tolist() == [[True, True, False], [False, False, True]]
    torch.testing.assert_close(kept.sum(dim=-1), torch.ones(2))


def test_top_p_one_equals_plain_sampling(small_gpt):
    idx = torch.tensor([[5, 6, 7], [8, 9, 10]])
    torch.manual_seed(7)
    plain = generate(small_gpt, idx, 15, 37, temperature=1.5)
    torch.manual_seed(7)
    nucleus = generate(small_gpt, idx, 15, 37, temperature=1.5, top_p=1.0)
    assert torch.equal(plain, nucleus)


def test_top_p_samples_only_from_the_nucleus():
    logits = torch.log(torch.tensor([[0.05, 0.6, 0.05, 0.3]])).expand(500, 4)
    torch.manual_seed(0)
    picks = pick_next_token(logits, temperature=1.0, top_p=0.8)  # nucleus = {1, 3}
    assert set(picks.flatten().tolist()) == {1, 3}


def test_top_p_does_not_change_greedy(small_gpt):
    idx = torch.tensor([[1, 2, 3]])
    assert torch.equal(generate(small_gpt, idx, 10, 37), generate(small_gpt, idx, 10, 37, top_p=0.1))


@pytest.mark.parametrize("top_p", [0.0, -0.1, 1.5])
def test_top_p_outside_zero_one_is_a_clear_error(small_gpt, top_p):
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        generate(small_gpt, torch.tensor([[1]]), 3, 37, temperature=1.0, top_p=top_p)
    with pytest.raises(ValueError, match="top_p must be"):
        generate(small_gpt, torch.tensor([[1]]), 3, 37, temperature=1.0, top_p=top_p, use_cache=True)


# --- repetition penalty ----------------------------------------------------------------------

def test_repetition_penalty_exact_on_constructed_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 4.0],
                           [2.0, -1.0, 0.5, -3.0, 4.0]])
    seen = torch.tensor([[0, 1, 1, 0],  # tokens 0 and 1 (0 twice: penalized once)
                         [3, 4, 4, 4]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, -3.0, 4.0],
                            [2.0, -1.0, 0.5, -6.0, 2.0]]
    assert torch.equal(apply_repetition_penalty(logits, seen, 1.0), logits)


def test_repetition_penalty_ignores_padding():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    ids = torch.tensor([[0, 0, 2]])
    mask = torch.tensor([[0, 0, 1]])  # token 0 is only padding here
    assert apply_repetition_penalty(logits, ids, 2.0, mask).tolist() == [[2.0, -1.0, 0.25]]


def test_repetition_penalty_changes_greedy_choice():
    logits = torch.tensor([[3.0, 2.0, -1.0]])
    assert pick_next_token(logits).item() == 0
    assert pick_next_token(logits, repetition_penalty=2.0, token_ids=torch.tensor([[0]])).item() == 1
    with pytest.raises(ValueError, match="needs token_ids"):
        pick_next_token(logits, repetition_penalty=2.0)


def test_repetition_penalty_in_generate_breaks_a_loop():
    model = BigramTable(torch.tensor([[-1.0, 3.0, 0.0, 0.0],
                                      [-1.0, 0.0, 2.0, 1.5],
                                      [-1.0, 2.5, 0.0, 2.0],
                                      [1.0, 0.5, 0.4, 0.3]]))
    idx = torch.tensor([[0]])
    assert generate(model, idx, 4, 10)[0].tolist() == [0, 1, 2, 1, 2]  # greedy loops 1 2 1 2
    # penalty 2, after 0 1 2: logits of 1 -> 2.5 / 2 = 1.25 < 2.0 of the unused token 3
    assert generate(model, idx, 4, 10, repetition_penalty=2.0)[0].tolist() == [0, 1, 2, 3, 0]


@pytest.mark.parametrize("penalty", [0.0, -1.0])
def test_repetition_penalty_must_be_positive(penalty):
    with pytest.raises(ValueError, match="repetition_penalty must be > 0"):
        check_sampling_args(0.0, None, repetition_penalty=penalty)


# --- beam search -----------------------------------------------------------------------------

def test_beam_search_with_one_beam_is_greedy(small_gpt):
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    assert torch.equal(generate_beam_search(small_gpt, idx, 20, 37, num_beams=1),
                       generate_text_simple(small_gpt, idx, 20, 37))


def test_beam_search_with_one_beam_and_eos_is_greedy(small_gpt):
    idx = torch.tensor([[3, 1, 4]])
    eos = int(generate(small_gpt, idx, 10, 37)[0, 7])  # the 5th new token
    greedy = generate(small_gpt, idx, 10, 37, eos_id=eos)
    assert torch.equal(generate_beam_search(small_gpt, idx, 10, 37, num_beams=1, eos_id=eos), greedy)


def test_beam_search_beats_greedy_on_a_trap():
    model = trap_model()
    idx = torch.tensor([[0]])
    greedy = generate_text_simple(model, idx, 2, 10)
    beam = generate_beam_search(model, idx, 2, 10, num_beams=2)
    assert greedy[0].tolist() == [0, 1, 4]
    assert beam[0].tolist() == [0, 2, 3]
    lp_greedy, lp_beam = sequence_log_prob(model, greedy, 1).item(), sequence_log_prob(model, beam, 1).item()
    assert lp_beam > lp_greedy
    assert math.isclose(math.exp(lp_beam), 0.36, rel_tol=1e-4)
    assert math.isclose(math.exp(lp_greedy), 0.125, rel_tol=1e-3)  # row A is renormalized slightly


def test_beam_search_more_beams_never_worse_on_a_real_model(small_gpt):
    idx = torch.tensor([[2, 7, 1, 8]])
    scores = [sequence_log_prob(small_gpt, generate_beam_search(small_gpt, idx, 6, 37, num_beams=k), 4).item()
              for k in (1, 4)]
    assert scores[1] >= scores[0] - 1e-6


def eos_model() -> BigramTable:
    """Tokens 0 start, 1 A, 2 END, 3 C, 4 B, 5 D. start: A .5, END .4, C .1; A: B .6, D .4; B, C, D: END."""
    probs = torch.full((6, 6), 1e-6)
    probs[0, [1, 2, 3]] = torch.tensor([0.5, 0.4, 0.1])
    probs[1, [4, 5]] = torch.tensor([0.6, 0.4])
    probs[2:, 2] = 1.0
    return BigramTable((probs / probs.sum(dim=-1, keepdim=True)).log())


@pytest.mark.parametrize("length_penalty, expected", [
    (0.0, [0]),  # total probability: ending at once (0.4) beats A B END (0.3)
    (1.0, [0, 1, 4]),  # average log-probability per token: A B END (0.3 ** (1/3) = 0.67 per token) beats 0.4
])
def test_beam_search_eos_and_length_penalty(length_penalty, expected):
    out = generate_beam_search(eos_model(), torch.tensor([[0]]), 5, 10, num_beams=2, eos_id=2,
                               length_penalty=length_penalty)
    assert out[0].tolist() == expected  # the end token itself is left out, as generate does


def test_beam_search_bad_inputs():
    model = trap_model()
    with pytest.raises(ValueError, match="num_beams must be at least 1"):
        generate_beam_search(model, torch.tensor([[0]]), 2, 10, num_beams=0)
    with pytest.raises(ValueError, match="once per row"):
        generate_beam_search(model, torch.tensor([[0], [1]]), 2, 10, num_beams=2)


def test_sequence_log_prob_bad_prompt_length():
    with pytest.raises(ValueError, match="prompt_length must be between 1 and"):
        sequence_log_prob(trap_model(), torch.tensor([[0, 1]]), 3)


# --- use_cache -------------------------------------------------------------------------------

def test_use_cache_in_generate_text_simple(small_gpt):
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    for new in (5, 50):  # 50 runs past the context of 37
        assert torch.equal(generate_text_simple(small_gpt, idx, new, 37, use_cache=True),
                           generate_text_simple(small_gpt, idx, new, 37))


@pytest.mark.parametrize("kwargs", [
    {},
    {"temperature": 1.2, "top_k": 20},
    {"temperature": 1.0, "top_p": 0.7},
    {"repetition_penalty": 1.3},
    {"temperature": 0.8, "top_k": 30, "top_p": 0.9, "repetition_penalty": 1.2},
])
def test_use_cache_in_generate(small_gpt, kwargs):
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    torch.manual_seed(3)
    plain = generate(small_gpt, idx, 40, 37, **kwargs)
    torch.manual_seed(3)
    cached = generate(small_gpt, idx, 40, 37, use_cache=True, **kwargs)
    assert torch.equal(plain, cached)


def test_use_cache_with_eos(small_gpt):
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    eos = int(generate(small_gpt, idx, 10, 37)[0, 6])
    assert torch.equal(generate(small_gpt, idx, 10, 37, eos_id=eos, use_cache=True),
                       generate(small_gpt, idx, 10, 37, eos_id=eos))


def test_cached_repetition_penalty_with_left_padding(small_gpt):
    prompts = [[1, 2, 3, 4, 5], [6, 7]]
    idx, mask = left_pad(prompts, pad_id=0)
    out = generate(small_gpt, idx, 12, 37, attention_mask=mask, repetition_penalty=1.5, use_cache=True)
    for row, prompt in enumerate(prompts):
        alone = generate(small_gpt, torch.tensor([prompt]), 12, 37, repetition_penalty=1.5)
        assert torch.equal(out[row, idx.shape[1]:], alone[0, len(prompt):])
