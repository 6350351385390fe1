"""What chapters 2 and 3 built, re-exported for chapter 4 (the code lives in the buildllm package)."""

from buildllm.attention import (
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention_v1,
    SelfAttention_v2,
)
from buildllm.data import GPTDatasetV1, create_dataloader_v1
from buildllm.tokenizer import SimpleTokenizerV1, SimpleTokenizerV2, get_gpt2_tokenizer

__all__ = [
    "CausalAttention",
    "GPTDatasetV1",
    "MultiHeadAttention",
    "MultiHeadAttentionWrapper",
    "SelfAttention_v1",
    "SelfAttention_v2",
    "SimpleTokenizerV1",
    "SimpleTokenizerV2",
    "create_dataloader_v1",
    "get_gpt2_tokenizer",
]
