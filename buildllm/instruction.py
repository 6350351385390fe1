"""Instruction fine-tuning (chapter 7): prompt formats, the dataset, batching with padding and masking, responses.

The pieces, in the order the chapter builds them:

* ``format_input(entry, style)`` turns one ``{"instruction", "input", "output"}``
  entry into a prompt, in the Alpaca style (the book's main text) or the Phi-3
  chat style (exercise 7.1); ``format_response`` gives the part the model learns
  to write.
* ``partition_data`` splits the data 85 % / 10 % / 5 % into train / test / val.
* ``InstructionDataset`` tokenizes each full text (prompt + response) once.
* ``custom_collate_fn`` pads a batch, shifts the targets by one and hides the
  padding from the loss with ``ignore_index`` (and, for exercise 7.2, the prompt).
* ``generate_response`` / ``extract_response`` let the fine-tuned model answer,
  and ``save_json`` writes the answers next to the references.

How truncation is reported: a text longer than ``allowed_max_length`` tokens
loses its end in ``custom_collate_fn``. The collate function cannot tell anyone
(it runs inside the DataLoader), so ``InstructionDataset`` counts such entries
up front: pass it the same ``allowed_max_length`` and read
``dataset.num_truncated`` / ``dataset.truncated_indices``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from .files import atomic_write_json
from .generation import generate, generate_tokens, text_to_token_ids
from .tokenizer import END_OF_TEXT_ID, ENDOFTEXT
IGNORE_INDEX = -100  # the default ignore_index of torch.nn.functional.cross_entropy

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
PROMPT_STYLES = ("alpaca", "phi3")
# What comes between the prompt and the answer, per style.
RESPONSE_MARKERS = {"alpaca": "\n\n### Response:\n", "phi3": "\n<|assistant|>\n"}


class InstructionDataError(ValueError):
    """An instruction entry or file is malformed; the message names the entry and what to fix."""


# --------------------------------------------------------------------------- prompt formats


def _check_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(f"Unknown prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}.")


def validate_entry(entry, index: int | None = None, required: Sequence[str] = ("instruction", "output")) -> None:
    """Raise InstructionDataError if `entry` is not a dict with string fields `required` (and optional "input")."""
    where = f"Entry {index}" if index is not None else "The entry"
    if not isinstance(entry, dict):
        raise InstructionDataError(
            f"{where} is a {type(entry).__name__}, not an object with 'instruction', 'input' and 'output' fields."
        )
    for field in required:
        if field not in entry:
            raise InstructionDataError(
                f"{where} has no {field!r} field (it has: {', '.join(map(repr, entry)) or 'nothing'}). "
                f"Every entry needs {', '.join(map(repr, required))}; 'input' may be an empty string."
            )
        if not isinstance(entry[field], str):
            raise InstructionDataError(f"{where}: field {field!r} must be a string, got {type(entry[field]).__name__}.")
    if not isinstance(entry.get("input", ""), str):
        raise InstructionDataError(f"{where}: field 'input' must be a string (use \"\" when there is no input).")


def validate_entries(data, required: Sequence[str] = ("instruction", "output")) -> None:
    """Check every entry of `data` (a list of dicts); the error names the first bad entry's index."""
    if not isinstance(data, list):
        raise InstructionDataError(f"Instruction data must be a JSON list of objects, got {type(data).__name__}.")
    for index, entry in enumerate(data):
        validate_entry(entry, index, required)


def load_instruction_file(path: str | os.PathLike, required: Sequence[str] = ("instruction", "output")) -> list:
    """Read a JSON list of instruction entries from `path` and validate it (errors name the entry index)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No instruction file at {path}. Check the path (it is relative to {Path.cwd()}).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InstructionDataError(f"{path} is not valid JSON ({exc}).") from None
    try:
        validate_entries(data, required)
    except InstructionDataError as exc:
        raise InstructionDataError(f"{path}: {exc}") from None
    return data


def format_input(entry: dict, style: str = "alpaca") -> str:
    """Return the prompt for `entry`: instruction plus the optional input, in the Alpaca or Phi-3 style."""
    _check_style(style)
    validate_entry(entry, required=("instruction",))
    instruction, extra = entry["instruction"], entry.get("input", "")
    if style == "alpaca":
        text = f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{instruction}"
        return text + (f"\n\n### Input:\n{extra}" if extra else "")
    return f"<|user|>\n{instruction}" + (f"\n{extra}" if extra else "")


def response_marker(style: str = "alpaca") -> str:
    """Return the text that separates the prompt from the response in `style`."""
    _check_style(style)
    return RESPONSE_MARKERS[style]


def format_response(entry: dict, style: str = "alpaca") -> str:
    """Return the response part of the training text: the marker followed by the entry's output."""
    validate_entry(entry, required=("output",))
    return response_marker(style) + entry["output"]


# --------------------------------------------------------------------------- splitting and the dataset


class Splits(NamedTuple):
    """The three parts of the data, in the book's order: train, test, validation."""

    train: list
    test: list
    val: list


def partition_data(data: Sequence, train_frac: float = 0.85, test_frac: float = 0.10) -> Splits:
    """Split `data` in order: the first 85 % for training, the next 10 % for testing, the rest for validation."""
    if not (0 <= train_frac <= 1 and 0 <= test_frac <= 1 and train_frac + test_frac <= 1):
        raise ValueError(
            f"train_frac={train_frac} and test_frac={test_frac} must lie in [0, 1] and add up to at most 1 "
            f"(the rest is the validation set)."
        )
    train_end = int(len(data) * train_frac)
    test_end = train_end + int(len(data) * test_frac)
    return Splits(list(data[:train_end]), list(data[train_end:test_end]), list(data[test_end:]))


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class InstructionDataset(Dataset):
    """Instruction entries, each tokenized once as prompt + response.

    Items are lists of token IDs; with ``mask_instructions=True`` they are pairs
    ``(token_ids, prompt_length)`` so that ``custom_collate_fn`` can hide the
    prompt from the loss (exercise 7.2). With `allowed_max_length`, entries that
    the collate function will truncate are counted in ``num_truncated``.
    """

    def __init__(
        self,
        data: Sequence[dict],
        tokenizer,
        style: str = "alpaca",
        mask_instructions: bool = False,
        allowed_max_length: int | None = None,
    ):
        _check_style(style)
        validate_entries(list(data))
        self.data = list(data)
        self.style = style
        self.mask_instructions = mask_instructions
        self.encoded_texts: list[list[int]] = []
        self.prompt_lengths: list[int] = []
        for entry in self.data:
            prompt = format_input(entry, style)
            full_ids = tokenizer.encode(prompt + format_response(entry, style))
            prompt_ids = tokenizer.encode(prompt)
            # Usually the full text's tokens start with the prompt's tokens; if BPE merges across
            # the boundary, only the tokens both share count as prompt.
            self.encoded_texts.append(full_ids)
            self.prompt_lengths.append(_common_prefix_length(prompt_ids, full_ids))
        self.allowed_max_length = allowed_max_length
        self.truncated_indices: list[int] = []
        if allowed_max_length is not None:
            self.truncated_indices = [i for i, ids in enumerate(self.encoded_texts) if len(ids) > allowed_max_length]

    @property
    def num_truncated(self) -> int:
        """How many entries are longer than `allowed_max_length` tokens (their end is cut off in training)."""
        return len(self.truncated_indices)

    def __len__(self) -> int:
        return len(self.encoded_texts)

    def __getitem__(self, index: int):
        if self.mask_instructions:
            return self.encoded_texts[index], self.prompt_lengths[index]
        return self.encoded_texts[index]


def _is_masked_item(item) -> bool:
    """True for a ``(token_ids, prompt_length)`` pair, False for a plain sequence of token IDs."""
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], int) and not isinstance(item[0], int)


def custom_collate_fn(
    batch: Sequence,
    pad_token_id: int = END_OF_TEXT_ID,
    ignore_index: int = IGNORE_INDEX,
    allowed_max_length: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch of token-ID lists into (inputs, targets), each (b, T).

    Every sequence is padded with `pad_token_id` to the longest length + 1, so
    each one ends with at least one end-of-text token. Targets are the inputs
    shifted left by one. The first padding token stays a target (the model learns
    to stop); the later ones become `ignore_index`. Items given as
    ``(token_ids, prompt_length)`` also get their prompt targets ignored.
    Sequences longer than `allowed_max_length` are cut to that length.
    """
    if len(batch) == 0:
        raise ValueError("custom_collate_fn got an empty batch; the dataset has no entries.")
    items = [item if _is_masked_item(item) else (item, 0) for item in batch]
    batch_max_length = max(len(ids) + 1 for ids, _ in items)
    inputs_lst, targets_lst = [], []
    for ids, prompt_length in items:
        padded = list(ids) + [pad_token_id] * (batch_max_length - len(ids))  # (batch_max_length,)
        inputs = torch.tensor(padded[:-1])  # (batch_max_length - 1,)
        targets = torch.tensor(padded[1:])  # the next token at each position
        targets[len(ids):] = ignore_index  # target len(ids)-1 is the first pad (the end token): keep it
        if prompt_length > 1:
            targets[: prompt_length - 1] = ignore_index  # these targets are prompt tokens (exercise 7.2)
        if allowed_max_length is not None:
            inputs, targets = inputs[:allowed_max_length], targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    inputs_tensor = torch.stack(inputs_lst).to(device)  # (b, T)
    targets_tensor = torch.stack(targets_lst).to(device)  # (b, T)
    return inputs_tensor, targets_tensor


def create_instruction_dataloader(
    dataset: InstructionDataset,
    batch_size: int = 8,
    shuffle: bool = False,
    drop_last: bool = False,
    allowed_max_length: int | None = 1024,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    pad_token_id: int = END_OF_TEXT_ID,
) -> DataLoader:
    """Wrap `dataset` in a DataLoader that batches with `custom_collate_fn` (train: shuffle and drop_last True)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    collate = partial(custom_collate_fn, pad_token_id=pad_token_id, allowed_max_length=allowed_max_length,
                      device=device)
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate, shuffle=shuffle,
                      drop_last=drop_last, num_workers=num_workers)


# --------------------------------------------------------------------------- responses


def build_prompt(entry: dict, style: str = "alpaca") -> str:
    """Return what the model sees when asked to answer `entry`: the prompt followed by the response marker."""
    return format_input(entry, style) + response_marker(style)


def extract_response(generated_text: str, prompt: str, style: str = "alpaca") -> str:
    """Return the model's answer in `generated_text`: without the prompt, before <|endoftext|>, without the marker."""
    text = generated_text[len(prompt):] if generated_text.startswith(prompt) else generated_text
    text = text.split(ENDOFTEXT, 1)[0]
    marker = response_marker(style).strip()  # "### Response:" or "<|assistant|>"
    text = text.strip()
    if text.startswith(marker):
        text = text[len(marker):]
    return text.strip()


def _context_size(model) -> int:
    return model.cfg["context_length"]


def generate_response(
    model,
    tokenizer,
    entry: dict,
    style: str = "alpaca",
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    eos_id: int | None = None,
) -> str:
    """Let `model` answer `entry` (greedy by default) and return the extracted response text.

    Generation stops at `eos_id` (default: the tokenizer's end-of-text token).
    """
    prompt = build_prompt(entry, style)
    device = next(model.parameters()).device
    idx = text_to_token_ids(prompt, tokenizer).to(device)  # (1, num_prompt_tokens)
    context_size = _context_size(model)
    if idx.shape[1] >= context_size:
        raise ValueError(
            f"The prompt has {idx.shape[1]} tokens but the model's context is {context_size}: "
            f"there is no room left for an answer. Shorten the instruction or use a model with a longer context."
        )
    was_training = model.training
    model.eval()
    eos_id = tokenizer.eot_token if eos_id is None else eos_id
    token_ids = generate(model, idx, max_new_tokens, context_size, temperature=temperature, top_k=top_k,
                         eos_id=eos_id, use_cache=True)  # (1, num_prompt_tokens + new)
    model.train(was_training)
    # Decode only the new tokens: decoding the prompt again could differ from the prompt text.
    new_text = tokenizer.decode(token_ids[0, idx.shape[1]:].tolist())
    return extract_response(new_text, "", style)


def generate_responses(
    model,
    tokenizer,
    entries: Sequence[dict],
    style: str = "alpaca",
    max_new_tokens: int = 256,
    key: str = "model_response",
    progress: bool = True,
) -> list[dict]:
    """Return copies of `entries` with the model's greedy answer under `key` (tqdm progress bar)."""
    from tqdm import tqdm

    answered = []
    for entry in tqdm(entries, desc="Generating responses", disable=not progress):
        answered.append({**entry, key: generate_response(model, tokenizer, entry, style, max_new_tokens)})
    return answered


def stream_tokens(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    eos_id: int | None = END_OF_TEXT_ID,
) -> Iterator[int]:
    """Yield new token IDs one at a time after `idx` (1, num_tokens), stopping before `eos_id`.

    The steps are those of ``buildllm.generation.generate`` (with the KV cache), so the
    sampling rules are exactly the same.
    """
    for idx_next in generate_tokens(model, idx, max_new_tokens, _context_size(model), temperature, top_k,
                                    use_cache=True):
        token_id = int(idx_next[0, 0])
        if token_id == eos_id:
            return
        yield token_id


def stream_response(
    model,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    eos_id: int | None = None,
) -> Iterator[str]:
    """Yield the answer to `prompt` as text pieces while it is generated (for a live chat)."""
    device = next(model.parameters()).device
    # The prompt is built by the program (a chat format's special tokens included): encode them as such.
    idx = torch.tensor([tokenizer.encode(prompt, allowed_special="all")], device=device)[:, -_context_size(model):]
    eos_id = tokenizer.eot_token if eos_id is None else eos_id
    was_training = model.training
    model.eval()
    new_ids: list[int] = []
    shown = ""
    try:
        for token_id in stream_tokens(model, idx, max_new_tokens, temperature, top_k, eos_id):
            new_ids.append(token_id)
            text = tokenizer.decode(new_ids)
            if text.endswith("\ufffd"):  # a character split over several tokens: wait for the rest
                continue
            yield text[len(shown):]
            shown = text
        text = tokenizer.decode(new_ids)
        if len(text) > len(shown):
            yield text[len(shown):]
    finally:
        model.train(was_training)


def format_conversation(turns: Sequence[tuple[str, str | None]], style: str = "alpaca") -> str:
    """Return a prompt holding earlier (instruction, answer) turns; the last turn's answer is None (to generate)."""
    _check_style(style)
    if not turns:
        raise ValueError("A conversation needs at least one turn.")
    text = ""
    for i, (instruction, answer) in enumerate(turns):
        turn = build_prompt({"instruction": instruction, "input": ""}, style)
        if style == "alpaca" and i > 0:
            turn = turn[len(ALPACA_PREAMBLE):]  # the preamble is said once, at the top
        elif style == "phi3" and i > 0:
            turn = "\n" + turn
        text += turn
        if answer is not None:
            text += answer
    return text


# --------------------------------------------------------------------------- saving


def save_json(obj, path: str | os.PathLike, indent: int = 4) -> Path:
    """Write `obj` as UTF-8 JSON to `path` atomically (see `buildllm.files`); return the path."""
    return atomic_write_json(obj, path, indent=indent)
