"""What chapter 2 built, re-exported for chapter 3 (the code lives in the buildllm package)."""

from buildllm.data import GPTDatasetV1, create_dataloader_v1
from buildllm.tokenizer import SimpleTokenizerV1, SimpleTokenizerV2, get_gpt2_tokenizer

__all__ = [
    "GPTDatasetV1",
    "SimpleTokenizerV1",
    "SimpleTokenizerV2",
    "create_dataloader_v1",
    "get_gpt2_tokenizer",
]
