"""Chapter 2 data pipeline: GPTDatasetV1 and create_dataloader_v1."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from buildllm.data import GPTDatasetV1, create_dataloader_v1
from buildllm.tokenizer import get_gpt2_tokenizer


def test_first_batches_stride_1(verdict_text):
    loader = create_dataloader_v1(verdict_text, batch_size=1, max_length=4, stride=1, shuffle=False)
    batches = iter(loader)
    inputs, targets = next(batches)
    assert inputs.tolist() == [[40, 367, 2885, 1464]]
    assert targets.tolist() == [[367, 2885, 1464, 1807]]
    inputs, targets = next(batches)
    assert inputs.tolist() == [[367, 2885, 1464, 1807]]
    assert targets.tolist() == [[2885, 1464, 1807, 3619]]
    assert len(loader) == 5141  # 5145 tokens - max_length windows start positions


def test_batch_of_8_without_overlap(verdict_text):
    loader = create_dataloader_v1(verdict_text, batch_size=8, max_length=4, stride=4, shuffle=False)
    inputs, targets = next(iter(loader))
    assert inputs.shape == targets.shape == (8, 4)
    assert inputs.dtype == torch.long
    assert inputs.tolist() == [
        [40, 367, 2885, 1464], [1807, 3619, 402, 271], [10899, 2138, 257, 7026], [15632, 438, 2016, 257],
        [922, 5891, 1576, 438], [568, 340, 373, 645], [1049, 5975, 284, 502], [284, 3285, 326, 11]]
    assert targets[:, -1].tolist() == [1807, 10899, 15632, 922, 568, 1049, 284, 287]
    assert len(loader) == 160  # 1286 windows, drop_last keeps 160 full batches of 8


def test_book_default_settings(verdict_text):
    loader = create_dataloader_v1(verdict_text, shuffle=False)  # batch 4, max_length 256, stride 128
    assert len(loader.dataset) == 39
    assert len(loader) == 9
    inputs, targets = next(iter(loader))
    assert inputs.shape == (4, 256)
    # stride = max_length / 2: each window shares its second half with the next window's first half.
    assert torch.equal(inputs[0, 128:], inputs[1, :128])


def test_shuffle_is_reproducible_with_a_seed(verdict_text):
    def first_batch():
        torch.manual_seed(123)
        loader = create_dataloader_v1(verdict_text, batch_size=2, max_length=4, stride=4)
        return next(iter(loader))[0]

    assert torch.equal(first_batch(), first_batch())


def test_last_window_is_used_when_it_fits():
    tokenizer = get_gpt2_tokenizer()
    text = "one two three four five six"  # 6 tokens
    assert len(tokenizer.encode(text)) == 6
    dataset = GPTDatasetV1(text, tokenizer, max_length=5, stride=1)
    assert len(dataset) == 1  # exactly max_length + 1 tokens: one sample
    inputs, targets = dataset[0]
    assert inputs.tolist() == tokenizer.encode(text)[:5]
    assert targets.tolist() == tokenizer.encode(text)[1:]


def test_endoftext_is_allowed_in_the_text():
    tokenizer = get_gpt2_tokenizer()
    dataset = GPTDatasetV1("first<|endoftext|>second text", tokenizer, max_length=2, stride=1)
    assert any(50256 in inputs.tolist() for inputs, _ in dataset)  # <|endoftext|> is one token, ID 50256


@settings(max_examples=40, deadline=None)
@given(max_length=st.integers(1, 40), stride=st.integers(1, 40), start=st.integers(0, 3000))
def test_windows_are_shifted_slices_of_the_token_stream(verdict_text, max_length, stride, start):
    tokenizer = get_gpt2_tokenizer()
    text = verdict_text[start:start + 400]
    ids = tokenizer.encode(text)
    dataset = GPTDatasetV1(text, tokenizer, max_length, stride)
    assert len(dataset) == len(range(0, len(ids) - max_length, stride))
    for k in (0, len(dataset) - 1):
        inputs, targets = dataset[k]
        begin = k * stride
        assert inputs.tolist() == ids[begin:begin + max_length]
        assert targets.tolist() == ids[begin + 1:begin + max_length + 1]


# --- bad input --------------------------------------------------------------------------


def test_text_shorter_than_one_sample():
    with pytest.raises(ValueError, match=r"The text has 3 tokens, but one sample needs max_length \+ 1 = 5"):
        GPTDatasetV1("Hello, world", get_gpt2_tokenizer(), max_length=4, stride=1)


def test_text_of_exactly_max_length_tokens_is_too_short():
    with pytest.raises(ValueError, match="smaller max_length"):
        create_dataloader_v1("one two three four", max_length=4, stride=1)


@pytest.mark.parametrize("stride", [0, -3])
def test_stride_must_be_positive(verdict_text, stride):
    with pytest.raises(ValueError, match=f"stride must be at least 1, got {stride}"):
        GPTDatasetV1(verdict_text, get_gpt2_tokenizer(), max_length=4, stride=stride)


def test_max_length_must_be_positive(verdict_text):
    with pytest.raises(ValueError, match="max_length must be at least 1, got 0"):
        GPTDatasetV1(verdict_text, get_gpt2_tokenizer(), max_length=0, stride=1)
