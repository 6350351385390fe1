"""Decoding (chapters 4-5): greedy, temperature, top-k, end-of-text per row, long prompts, bad settings."""

from __future__ import annotations

import math

import pytest
import torch

from buildllm.generation import (
    check_sampling_args,
    generate,
    generate_text_simple,
    softmax_with_temperature,
    text_to_token_ids,
    token_ids_to_text,
)
from buildllm.model import GPT_CONFIG_124M, GPTModel
from buildllm.tokenizer import get_gpt2_tokenizer

# The book's toy vocabulary and next-token logits (section 5.3).
TOY_VOCAB = ["closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you"]
TOY_LOGITS = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])

EOS = 7
# next token after each token: 1 -> 2 -> 7 (end) and 3 -> 4 -> 5 -> 6 -> 7 (end); 7 stays 7.
NEXT_TOKEN = {0: 0, 1: 2, 2: EOS, 3: 4, 4: 5, 5: 6, 6: EOS, 7: EOS}


def table_gpt() -> GPTModel:
    """A real GPTModel whose prediction depends only on the last token: next token = NEXT_TOKEN[token].

    One-hot token embeddings, zero position embeddings, transformer blocks that add
    nothing (their output projections are zero) and an output head set to the table.
    """
    vocab = len(NEXT_TOKEN)
    cfg = {**GPT_CONFIG_124M, "vocab_size": vocab, "context_length": 6, "emb_dim": vocab, "n_heads": 1,
           "n_layers": 1, "drop_rate": 0.0}
    model = GPTModel(cfg).eval()
    with torch.no_grad():
        model.tok_emb.weight.copy_(torch.eye(vocab))
        model.pos_emb.weight.zero_()
        for block in model.trf_blocks:
            for layer in (block.att.out_proj, block.ff.layers[2]):
                layer.weight.zero_()
                layer.bias.zero_()
        head = torch.zeros(vocab, vocab)
        for token, nxt in NEXT_TOKEN.items():
            head[nxt, token] = 10.0
        model.out_head.weight.copy_(head)
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return get_gpt2_tokenizer()


@pytest.fixture(scope="module")
def small_gpt():
    torch.manual_seed(123)
    cfg = {**GPT_CONFIG_124M, "context_length": 8, "emb_dim": 32, "n_heads": 2, "n_layers": 2}
    return GPTModel(cfg).eval()


def test_text_token_round_trip(tokenizer):
    ids = text_to_token_ids("Every effort moves you", tokenizer)
    assert ids.tolist() == [[6109, 3626, 6100, 345]]  # (1, num_tokens)
    assert token_ids_to_text(ids, tokenizer) == "Every effort moves you"
    assert token_ids_to_text(ids[0], tokenizer) == "Every effort moves you"


def test_table_model_follows_its_table():
    model = table_gpt()
    logits = model(torch.tensor(list(NEXT_TOKEN)).unsqueeze(1))  # 8 one-token rows: (8, 1, vocab)
    assert logits[:, -1].argmax(-1).tolist() == list(NEXT_TOKEN.values())


def test_generate_with_temperature_zero_equals_greedy(small_gpt):
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    simple = generate_text_simple(small_gpt, idx, max_new_tokens=6, context_size=8)
    assert simple.shape == (2, 9)
    assert torch.equal(generate(small_gpt, idx, 6, 8, temperature=0.0), simple)
    # top_k=1 leaves one candidate, so sampling at any temperature is greedy too.
    torch.manual_seed(0)
    assert torch.equal(generate(small_gpt, idx, 6, 8, temperature=1.5, top_k=1), simple)


def test_each_row_stops_at_its_own_end_token():
    model = table_gpt()
    idx = torch.tensor([[1], [3]])
    out = generate(model, idx, max_new_tokens=10, context_size=6, eos_id=EOS)
    # Row 0 ends at step 2 and is padded with the end token; row 1 would end at step 4,
    # when every row is finished, so generation stops without appending that step.
    assert out.tolist() == [[1, 2, EOS, EOS], [3, 4, 5, 6]]
    # Without eos_id, both rows run for all max_new_tokens.
    assert generate(model, idx, 5, 6).tolist() == [[1, 2, EOS, EOS, EOS, EOS], [3, 4, 5, 6, EOS, EOS]]


def test_single_row_stops_before_its_end_token():
    out = generate(table_gpt(), torch.tensor([[3]]), max_new_tokens=10, context_size=6, eos_id=EOS)
    assert out.tolist() == [[3, 4, 5, 6]]


def test_sampling_is_reproducible_and_stays_in_top_k(small_gpt):
    idx = torch.tensor([[1, 2, 3]])
    torch.manual_seed(123)
    first = generate(small_gpt, idx, 5, 8, temperature=1.4, top_k=3)
    torch.manual_seed(123)
    second = generate(small_gpt, idx, 5, 8, temperature=1.4, top_k=3)
    assert torch.equal(first, second)
    # Each sampled token is among the 3 most likely tokens after its prefix.
    for pos in range(3, 8):
        logits = small_gpt(first[:, :pos])[0, -1]
        assert first[0, pos].item() in torch.topk(logits, 3).indices.tolist()


def test_temperature_scaling_on_the_toy_vocabulary():
    p1 = softmax_with_temperature(TOY_LOGITS, 1.0)
    assert TOY_VOCAB[p1.argmax()] == "forward"
    assert p1.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert p1[3].item() == pytest.approx(0.5721, abs=1e-4)
    # Low temperature: almost all mass on "forward"; high temperature: flatter, "pizza" gains.
    p_low, p_high = softmax_with_temperature(TOY_LOGITS, 0.1), softmax_with_temperature(TOY_LOGITS, 5.0)
    assert p_low[3].item() == pytest.approx(0.9910, abs=1e-4)
    pizza = TOY_VOCAB.index("pizza")
    expected = math.exp(-1.89 / 5) / sum(math.exp(v / 5) for v in TOY_LOGITS.tolist())
    assert p_high[pizza].item() == pytest.approx(expected, rel=1e-5)
    assert p_high[pizza] > p1[pizza] > p_low[pizza]


def test_softmax_with_temperature_rejects_zero():
    with pytest.raises(ValueError, match="must be > 0"):
        softmax_with_temperature(TOY_LOGITS, 0.0)


@pytest.mark.parametrize(
    ("temperature", "top_k", "message"),
    [(-0.5, None, "temperature must be >= 0"), (1.0, 0, "top_k must be at least 1"),
     (1.0, 9, "larger than the vocabulary")],
)
def test_bad_sampling_settings(temperature, top_k, message):
    with pytest.raises(ValueError, match=message):
        check_sampling_args(temperature, top_k, vocab_size=8)
    with pytest.raises(ValueError, match=message):
        generate(table_gpt(), torch.tensor([[1]]), 3, 6, temperature=temperature, top_k=top_k)


def test_prompt_longer_than_context_is_cropped_with_a_warning(small_gpt):
    long_prompt = torch.arange(12).unsqueeze(0)  # 12 tokens, context is 8
    with pytest.warns(UserWarning, match="more than the context size 8"):
        out = generate(small_gpt, long_prompt, 2, context_size=8)
    assert out.shape == (1, 14)
    # The model saw only the last 8 tokens, so the continuation equals that of the cropped prompt.
    assert torch.equal(out[:, 12:], generate(small_gpt, long_prompt[:, -8:], 2, 8)[:, 8:])
    with pytest.warns(UserWarning, match="more than the context size"):
        generate_text_simple(small_gpt, long_prompt, 1, context_size=8)
