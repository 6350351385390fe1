"""Chapter 7 instruction data: prompt formats, the split, the dataset, the collate function and responses."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from buildllm.instruction import (
    ALPACA_PREAMBLE,
    InstructionDataError,
    InstructionDataset,
    build_prompt,
    create_instruction_dataloader,
    custom_collate_fn,
    extract_response,
    format_conversation,
    format_input,
    format_response,
    generate_response,
    generate_responses,
    load_instruction_file,
    partition_data,
    save_json,
    stream_response,
)
from buildllm.model import GPT_CONFIG_124M, GPTModel
from buildllm.tokenizer import get_gpt2_tokenizer
from buildllm.training import calc_loss_batch

WITH_INPUT = {"instruction": "Identify the correct spelling of the following word.", "input": "Ocassion",
              "output": "The correct spelling is 'Occasion.'"}
NO_INPUT = {"instruction": "What is an antonym of 'complicated'?", "input": "",
            "output": "An antonym of 'complicated' is 'simple'."}


@pytest.fixture(scope="module")
def tokenizer():
    return get_gpt2_tokenizer()


@pytest.fixture(scope="module")
def instruction_data(data_dir):
    from buildllm.datasets import load_json

    return load_json("instruction-data")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(123)
    cfg = {**GPT_CONFIG_124M, "emb_dim": 32, "n_layers": 2, "n_heads": 2, "context_length": 128, "drop_rate": 0.0}
    return GPTModel(cfg).eval()


# --------------------------------------------------------------------------- formats


def test_format_input_alpaca_exact():
    assert format_input(WITH_INPUT) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nIdentify the correct spelling of the following word.\n\n### Input:\nOcassion"
    )
    assert format_input(NO_INPUT) == (
        f"{ALPACA_PREAMBLE}\n\n### Instruction:\nWhat is an antonym of 'complicated'?"
    )  # no Input section when the input is empty
    assert format_response(WITH_INPUT) == "\n\n### Response:\nThe correct spelling is 'Occasion.'"


def test_format_input_phi3_exact():
    assert format_input(WITH_INPUT, "phi3") == (
        "<|user|>\nIdentify the correct spelling of the following word.\nOcassion")
    assert format_input(NO_INPUT, "phi3") == "<|user|>\nWhat is an antonym of 'complicated'?"
    assert format_response(NO_INPUT, "phi3") == "\n<|assistant|>\nAn antonym of 'complicated' is 'simple'."
    assert build_prompt(NO_INPUT, "phi3") == "<|user|>\nWhat is an antonym of 'complicated'?\n<|assistant|>\n"


def test_format_input_missing_input_field_is_treated_as_empty():
    assert format_input({"instruction": "Say hi."}) == f"{ALPACA_PREAMBLE}\n\n### Instruction:\nSay hi."


def test_unknown_style_and_bad_entries():
    with pytest.raises(ValueError, match="Unknown prompt style 'chatml'"):
        format_input(WITH_INPUT, "chatml")
    with pytest.raises(InstructionDataError, match="no 'instruction' field"):
        format_input({"input": "x", "output": "y"})
    with pytest.raises(InstructionDataError, match="'input' must be a string"):
        format_input({"instruction": "x", "input": None})


def test_dataset_names_the_index_of_an_entry_missing_a_field(tokenizer):
    data = [WITH_INPUT, NO_INPUT, {"instruction": "Name a color.", "input": ""}]
    with pytest.raises(InstructionDataError, match=r"Entry 2 has no 'output' field"):
        InstructionDataset(data, tokenizer)
    with pytest.raises(InstructionDataError, match=r"Entry 1 is a str"):
        InstructionDataset([WITH_INPUT, "text"], tokenizer)


def test_load_instruction_file_errors_name_file_and_index(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([WITH_INPUT, {"input": "", "output": "x"}]), encoding="utf-8")
    with pytest.raises(InstructionDataError, match=r"data.json: Entry 1 has no 'instruction' field"):
        load_instruction_file(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(InstructionDataError, match="is not valid JSON"):
        load_instruction_file(path)
    with pytest.raises(FileNotFoundError, match="No instruction file"):
        load_instruction_file(tmp_path / "missing.json")
    path.write_text(json.dumps([WITH_INPUT]), encoding="utf-8")
    assert load_instruction_file(path) == [WITH_INPUT]


# --------------------------------------------------------------------------- split


def test_partition_1100_into_935_110_55_in_order(instruction_data):
    train, test, val = partition_data(instruction_data)
    assert (len(train), len(test), len(val)) == (935, 110, 55)
    assert train[0] == instruction_data[0] and test[0] == instruction_data[935] and val[0] == instruction_data[1045]
    assert val[-1] == instruction_data[-1]


def test_partition_rejects_bad_fractions():
    with pytest.raises(ValueError, match="add up to at most 1"):
        partition_data(list(range(10)), train_frac=0.95, test_frac=0.10)


# --------------------------------------------------------------------------- collate


def test_collate_book_example():
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]])
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, 50256, 50256, 50256], [7, 8, 9, 50256, 50256]]
    assert targets.tolist() == [[1, 2, 3, 4, 50256], [6, 50256, -100, -100, -100], [8, 9, 50256, -100, -100]]
    assert inputs.dtype == targets.dtype == torch.int64


def test_collate_keeps_a_real_endoftext_token_in_the_text():
    # 50256 inside the text is a real token, not padding: only positions past the text are ignored.
    _, targets = custom_collate_fn([[1, 50256, 2], [3]])
    assert targets.tolist() == [[50256, 2, 50256], [50256, -100, -100]]


def test_collate_truncates_to_allowed_max_length():
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6]], allowed_max_length=3)
    assert inputs.tolist() == [[0, 1, 2], [5, 6, 50256]]
    assert targets.tolist() == [[1, 2, 3], [6, 50256, -100]]


def test_collate_masks_prompt_targets():
    inputs, targets = custom_collate_fn([([0, 1, 2, 3, 4], 3), ([5, 6], 1)])
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, 50256, 50256, 50256]]
    # prompt of 3 tokens: the targets 1 and 2 are prompt tokens, so they are ignored
    assert targets.tolist() == [[-100, -100, 3, 4, 50256], [6, 50256, -100, -100, -100]]


def test_ignore_index_loss_equals_loss_without_those_positions():
    logits = torch.tensor([[-1.0, 1.0], [-0.5, 1.5]])
    loss_two = F.cross_entropy(logits, torch.tensor([0, 1]))
    assert loss_two.item() == pytest.approx(1.1269280910491943)
    logits_three = torch.tensor([[-1.0, 1.0], [-0.5, 1.5], [-0.5, 1.5]])
    assert F.cross_entropy(logits_three, torch.tensor([0, 1, -100])).item() == loss_two.item()


def test_model_loss_on_padded_batch_equals_loss_on_real_positions(tiny_model):
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]])
    loss = calc_loss_batch(inputs, targets, tiny_model, "cpu")
    with torch.no_grad():
        logits = tiny_model(inputs)  # (3, 5, vocab)
    keep = targets != -100
    manual = F.cross_entropy(logits[keep], targets[keep])
    assert keep.sum().item() == 10
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)


# --------------------------------------------------------------------------- dataset


def test_dataset_tokenizes_prompt_plus_response(tokenizer):
    ds = InstructionDataset([WITH_INPUT, NO_INPUT], tokenizer)
    assert len(ds) == 2
    assert ds[0] == tokenizer.encode(format_input(WITH_INPUT) + format_response(WITH_INPUT))
    assert ds.num_truncated == 0 and ds.truncated_indices == []


def test_dataset_masking_records_prompt_length(tokenizer):
    ds = InstructionDataset([WITH_INPUT, NO_INPUT], tokenizer, mask_instructions=True)
    ids, prompt_length = ds[0]
    assert prompt_length == len(tokenizer.encode(format_input(WITH_INPUT)))
    assert ids[:prompt_length] == tokenizer.encode(format_input(WITH_INPUT))
    inputs, targets = custom_collate_fn([ds[0], ds[1]])
    assert (targets[0, : prompt_length - 1] == -100).all()
    response_ids = ids[prompt_length:]  # the response tokens are still targets
    assert targets[0, prompt_length - 1: len(ids) - 1].tolist() == response_ids


def test_dataset_counts_entries_that_will_be_truncated(tokenizer, instruction_data):
    ds = InstructionDataset(instruction_data, tokenizer, allowed_max_length=60)
    assert ds.num_truncated == 289 and ds.truncated_indices[:4] == [0, 3, 6, 8]
    assert InstructionDataset(instruction_data, tokenizer, allowed_max_length=80).num_truncated == 16
    assert InstructionDataset(instruction_data, tokenizer, allowed_max_length=1024).num_truncated == 0
    assert max(len(ids) for ids in InstructionDataset(instruction_data, tokenizer).encoded_texts) == 91


def test_dataloader_batches(tokenizer, instruction_data):
    ds = InstructionDataset(instruction_data[:20], tokenizer)
    loader = create_instruction_dataloader(ds, batch_size=8, shuffle=False, drop_last=True, allowed_max_length=50)
    shapes = [tuple(x.shape) for x, _ in loader]
    assert len(shapes) == 2 and all(s[0] == 8 and s[1] <= 50 for s in shapes)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        create_instruction_dataloader(ds, batch_size=0)


# --------------------------------------------------------------------------- responses


def test_extract_response():
    prompt = build_prompt(NO_INPUT)
    assert extract_response(prompt + "Simple.<|endoftext|>junk", prompt) == "Simple."
    # the book's way: prompt without marker, the model writes the marker itself
    bare = format_input(NO_INPUT)
    assert extract_response(bare + "\n\n### Response:\nIt is 'simple'.\n", bare) == "It is 'simple'."
    assert extract_response("\n<|assistant|>\nHi there<|endoftext|>", "", "phi3") == "Hi there"
    assert extract_response("unrelated text", "a prompt") == "unrelated text"


def test_generate_response_matches_streaming_and_is_greedy(tiny_model, tokenizer):
    first = generate_response(tiny_model, tokenizer, NO_INPUT, max_new_tokens=8)
    assert first == generate_response(tiny_model, tokenizer, NO_INPUT, max_new_tokens=8)  # greedy: repeatable
    streamed = "".join(stream_response(tiny_model, tokenizer, build_prompt(NO_INPUT), max_new_tokens=8))
    assert extract_response(streamed, "") == first
    assert generate_response(tiny_model, tokenizer, NO_INPUT, max_new_tokens=0) == ""


def test_generate_response_prompt_too_long(tiny_model, tokenizer):
    entry = {"instruction": "word " * 200, "input": "", "output": ""}
    with pytest.raises(ValueError, match="no room left for an answer"):
        generate_response(tiny_model, tokenizer, entry)


def test_generate_responses_adds_key_without_changing_entries(tiny_model, tokenizer):
    entries = [WITH_INPUT, NO_INPUT]
    answered = generate_responses(tiny_model, tokenizer, entries, max_new_tokens=3, progress=False)
    assert [set(e) for e in answered] == [{"instruction", "input", "output", "model_response"}] * 2
    assert "model_response" not in WITH_INPUT


def test_format_conversation():
    assert format_conversation([("Hi", None)]) == build_prompt({"instruction": "Hi", "input": ""})
    text = format_conversation([("Hi", "Hello."), ("Bye", None)])
    assert text.count(ALPACA_PREAMBLE) == 1
    assert text.endswith("### Response:\nHello.\n\n### Instruction:\nBye\n\n### Response:\n")
    assert format_conversation([("Hi", "Hello."), ("Bye", None)], "phi3") == (
        "<|user|>\nHi\n<|assistant|>\nHello.\n<|user|>\nBye\n<|assistant|>\n")
    with pytest.raises(ValueError, match="at least one turn"):
        format_conversation([])


def test_save_json_is_atomic_and_utf8(tmp_path):
    path = save_json([{"model_response": "안녕하세요"}], tmp_path / "out" / "responses.json")
    assert json.loads(path.read_text(encoding="utf-8")) == [{"model_response": "안녕하세요"}]
    assert "안녕하세요" in path.read_text(encoding="utf-8")
    assert [p.name for p in path.parent.iterdir()] == ["responses.json"]  # no temporary file left
