"""What chapters 2-4 built, re-exported for chapter 5 (the code lives in the buildllm package)."""

from buildllm.attention import MultiHeadAttention
from buildllm.data import GPTDatasetV1, create_dataloader_v1
from buildllm.generation import generate_text_simple
from buildllm.model import (
    GELU,
    GPT_CONFIG_124M,
    FeedForward,
    GPTModel,
    LayerNorm,
    TransformerBlock,
)
from buildllm.tokenizer import get_gpt2_tokenizer

__all__ = [
    "GELU",
    "GPT_CONFIG_124M",
    "FeedForward",
    "GPTDatasetV1",
    "GPTModel",
    "LayerNorm",
    "MultiHeadAttention",
    "TransformerBlock",
    "create_dataloader_v1",
    "generate_text_simple",
    "get_gpt2_tokenizer",
]
