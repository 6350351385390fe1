"""A check the generation tests of every architecture share (GPT-2, Llama, Qwen3)."""

import torch

from buildllm.generation import generate, generate_text_simple
from buildllm.kv_cache import left_pad


def assert_padded_batch_matches_alone(model, prompts, max_new_tokens, context_size, pad_id=0):
    """A left-padded batch generated with the KV cache gives each prompt the tokens it gets alone, uncached.

    Returns the padded input and mask and the batch's output, for further checks.
    """
    idx, mask = left_pad(prompts, pad_id=pad_id)
    batch = generate(model, idx, max_new_tokens, context_size, use_cache=True, attention_mask=mask)
    for row, prompt in enumerate(prompts):
        alone = generate_text_simple(model, torch.tensor([prompt]), max_new_tokens, context_size)[0, len(prompt):]
        assert torch.equal(batch[row, idx.shape[1]:], alone), f"prompt {row} generates differently in the batch"
    return idx, mask, batch
