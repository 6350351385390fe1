"""buildllm.seq2seq (ch03 bonus): the toy reversal data, the GRU encoder-decoder with and without attention."""

from __future__ import annotations

import pytest
import torch

from buildllm.seq2seq import (
    BOS_ID,
    EOS_ID,
    NUM_SPECIAL,
    PAD_ID,
    Seq2Seq,
    Seq2SeqBatch,
    accuracy_by_length,
    accuracy_by_position,
    make_batch,
    score_predictions,
    sequence_loss,
    train_seq2seq,
    vocab_size_for,
)


def small_model(attention: bool, num_symbols: int = 5, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(vocab_size_for(num_symbols), emb_dim=8, hidden_dim=16, attention=attention)


@pytest.mark.parametrize("task", ["reverse", "copy"])
def test_make_batch_builds_correct_targets(task):
    batch = make_batch(32, 3, 9, num_symbols=6, task=task, generator=torch.Generator().manual_seed(1))
    assert batch.src.shape == (32, 9)
    assert batch.tgt_in.shape == batch.tgt_out.shape == (32, 10)
    assert batch.src_lengths.min() >= 3 and batch.src_lengths.max() <= 9
    for i, length in enumerate(batch.src_lengths.tolist()):
        symbols = batch.src[i, :length].tolist()
        assert all(NUM_SPECIAL <= s < NUM_SPECIAL + 6 for s in symbols)
        assert (batch.src[i, length:] == PAD_ID).all()
        expected = symbols[::-1] if task == "reverse" else symbols
        assert batch.tgt_out[i].tolist() == expected + [EOS_ID] + [PAD_ID] * (9 - length)
        assert batch.tgt_in[i].tolist() == [BOS_ID] + expected + [PAD_ID] * (9 - length)


def test_make_batch_is_deterministic_for_a_seed():
    a = make_batch(8, 5, 40, generator=torch.Generator().manual_seed(7))
    b = make_batch(8, 5, 40, generator=torch.Generator().manual_seed(7))
    c = make_batch(8, 5, 40, generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("src", "src_lengths", "tgt_in", "tgt_out"))
    assert not torch.equal(a.src, c.src)


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "sort"}, "Unknown task"),
    ({"min_len": 5, "max_len": 3}, "min_len <= max_len"),
    ({"min_len": 0, "max_len": 3}, "min_len <= max_len"),
    ({"num_symbols": 1}, "num_symbols"),
])
def test_make_batch_rejects_bad_settings(kwargs, message):
    settings = {"min_len": 2, "max_len": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_batch(4, **settings)


@pytest.mark.parametrize("attention", [False, True])
def test_forward_and_decode_shapes(attention):
    model = small_model(attention).eval()
    batch = make_batch(4, 2, 7, num_symbols=5, generator=torch.Generator().manual_seed(0))
    logits, weights = model(batch.src, batch.src_lengths, batch.tgt_in)
    assert logits.shape == (4, 8, vocab_size_for(5))
    tokens, step_weights = model.greedy_decode(batch.src, batch.src_lengths, max_steps=5)
    assert tokens.shape == (4, 5)
    if attention:
        assert weights.shape == (4, 8, 7) and step_weights.shape == (4, 5, 7)
    else:
        assert weights is None and step_weights is None


def test_attention_weights_sum_to_one_and_skip_padding():
    model = small_model(attention=True).eval()
    batch = make_batch(6, 2, 8, num_symbols=5, generator=torch.Generator().manual_seed(3))
    _, weights = model(batch.src, batch.src_lengths, batch.tgt_in)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(6, 9))
    padding = torch.arange(8)[None, :] >= batch.src_lengths[:, None]  # (b, S)
    assert (weights.masked_select(padding[:, None, :].expand_as(weights)) == 0).all()


@pytest.mark.parametrize("attention", [False, True])
def test_padding_does_not_change_the_result(attention):
    """The same sequences padded to a wider batch give the same logits (the GRUs stop at each row's length)."""
    model = small_model(attention).eval()
    batch = make_batch(5, 2, 6, num_symbols=5, generator=torch.Generator().manual_seed(4))
    wide_src = torch.nn.functional.pad(batch.src, (0, 4), value=PAD_ID)
    logits, _ = model(batch.src, batch.src_lengths, batch.tgt_in)
    wide_logits, _ = model(wide_src, batch.src_lengths, batch.tgt_in)
    torch.testing.assert_close(logits, wide_logits)


@pytest.mark.parametrize("attention", [False, True])
def test_greedy_decode_matches_the_teacher_forced_pass(attention):
    """Feeding the greedy output back in one pass gives the same predictions as decoding step by step."""
    model = small_model(attention).eval()
    batch = make_batch(4, 3, 6, num_symbols=5, generator=torch.Generator().manual_seed(5))
    tokens, step_weights = model.greedy_decode(batch.src, batch.src_lengths, max_steps=6)
    tgt_in = torch.cat([torch.full((4, 1), BOS_ID), tokens[:, :-1]], dim=1)
    logits, weights = model(batch.src, batch.src_lengths, tgt_in)
    assert torch.equal(logits.argmax(dim=-1), tokens)
    if attention:
        torch.testing.assert_close(weights, step_weights)


def test_score_predictions_counts_symbols_and_eos():
    src = torch.tensor([[3, 4, 5], [3, 4, PAD_ID]])
    tgt_out = torch.tensor([[5, 4, 3, EOS_ID], [4, 3, EOS_ID, PAD_ID]])
    batch = Seq2SeqBatch(src, torch.tensor([3, 2]), tgt_out, tgt_out)
    pred = torch.tensor([[5, 4, 3, EOS_ID], [4, 4, EOS_ID, 7]])  # row 1: one symbol wrong; after EOS ignored
    token_acc, exact = score_predictions(pred, batch)
    torch.testing.assert_close(token_acc, torch.tensor([1.0, 0.5]))
    assert exact.tolist() == [True, False]
    no_eos = torch.tensor([[5, 4, 3, 3], [4, 3, EOS_ID, 9]])  # row 0: symbols right but no EOS
    token_acc, exact = score_predictions(no_eos, batch)
    torch.testing.assert_close(token_acc, torch.tensor([1.0, 1.0]))
    assert exact.tolist() == [False, True]


def test_training_is_deterministic_for_a_seed():
    runs = []
    for _ in range(2):
        model = small_model(attention=True, seed=11)
        runs.append(train_seq2seq(model, 3, batch_size=8, min_len=2, max_len=5, num_symbols=5, seed=2))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("attention", [False, True])
def test_tiny_model_learns_a_short_copy_task(attention):
    """Copying one or two of three symbols: a few dozen steps take the loss near 0 and every output right."""
    torch.manual_seed(0)
    model = Seq2Seq(vocab_size_for(3), emb_dim=8, hidden_dim=16, attention=attention)
    batch = make_batch(64, 1, 2, num_symbols=3, task="copy", generator=torch.Generator().manual_seed(99))
    before = sequence_loss(model, batch).item()
    train_seq2seq(model, 80, batch_size=32, min_len=1, max_len=2, num_symbols=3, task="copy", lr=2e-2, seed=1)
    after = sequence_loss(model, batch).item()
    assert after < 0.05 * before
    rows = accuracy_by_length(model, [1, 2], num_examples=50, num_symbols=3, task="copy")
    assert all(r["sequence_accuracy"] == 1.0 for r in rows), rows


def test_bad_lengths_raise_a_clear_error():
    model = small_model(attention=False)
    src = torch.tensor([[3, 4, 5]])
    with pytest.raises(ValueError, match="src_lengths"):
        model(src, torch.tensor([4]), torch.tensor([[BOS_ID]]))


def test_accuracy_by_position_agrees_with_accuracy_by_length():
    model = small_model(attention=True).eval()
    per_position = accuracy_by_position(model, 6, num_examples=40, num_symbols=5, seed=3)
    row = accuracy_by_length(model, [6], num_examples=40, num_symbols=5, seed=3)[0]
    assert per_position.shape == (6,)
    assert per_position.mean().item() == pytest.approx(row["token_accuracy"], abs=1e-6)
