"""What chapters 2-3 built, re-exported for chapter 4 (the code lives in the buildllm package)."""

from buildllm.attention import CausalAttention, MultiHeadAttention, MultiHeadAttentionWrapper, SelfAttention_v1, SelfAttention_v2  # noqa: F401
from buildllm.data import create_dataloader_v1, GPTDatasetV1  # noqa: F401
from buildllm.tokenizer import get_gpt2_tokenizer, SimpleTokenizerV1, SimpleTokenizerV2  # noqa: F401

__all__ = sorted(name for name in dir() if not name.startswith("_"))
