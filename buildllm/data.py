"""Chapter 2's data pipeline: (input, target) pairs from a sliding window over token IDs."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from .tokenizer import get_gpt2_tokenizer


class GPTDatasetV1(Dataset):
    """Input/target chunks of `max_length` tokens, the target shifted one token to the right."""

    def __init__(self, txt: str, tokenizer, max_length: int, stride: int):
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}.")
        if stride < 1:
            raise ValueError(
                f"stride must be at least 1, got {stride}: it is how many tokens the window moves "
                f"between samples (stride = max_length gives non-overlapping chunks)."
            )
        token_ids = tokenizer.encode(txt, allowed_special={"<|endoftext|>"})
        if len(token_ids) < max_length + 1:
            raise ValueError(
                f"The text has {len(token_ids)} tokens, but one sample needs max_length + 1 = "
                f"{max_length + 1} (the target is shifted by one token). Use a longer text or a "
                f"smaller max_length."
            )
        self.input_ids = []
        self.target_ids = []
        # Each window start i gives one sample: tokens [i, i+max_length) and [i+1, i+max_length+1).
        for i in range(0, len(token_ids) - max_length, stride):
            input_chunk = token_ids[i : i + max_length]
            target_chunk = token_ids[i + 1 : i + max_length + 1]
            self.input_ids.append(torch.tensor(input_chunk))
            self.target_ids.append(torch.tensor(target_chunk))

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.input_ids[idx], self.target_ids[idx]


def create_dataloader_v1(
    txt: str,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    tokenizer=None,
) -> DataLoader:
    """Return a DataLoader of (inputs, targets) batches, each of shape (batch_size, max_length)."""
    tokenizer = tokenizer or get_gpt2_tokenizer()
    dataset = GPTDatasetV1(txt, tokenizer, max_length, stride)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers
    )
