"""What chapters 2-5 built, re-exported for chapter 6 (the code lives in the buildllm package)."""

from buildllm.attention import MultiHeadAttention
from buildllm.data import GPTDatasetV1, create_dataloader_v1
from buildllm.generation import generate, generate_text_simple, text_to_token_ids, token_ids_to_text
from buildllm.gpt2 import download_and_load_gpt2, load_pretrained_gpt, load_weights_into_gpt
from buildllm.model import (
    GELU,
    GPT2_SIZES,
    GPT_CONFIG_124M,
    FeedForward,
    GPTModel,
    LayerNorm,
    TransformerBlock,
    get_gpt2_config,
)
from buildllm.plotting import plot_values
from buildllm.tokenizer import get_gpt2_tokenizer
from buildllm.training import load_model, save_model, train_model_simple

__all__ = [
    "GELU",
    "GPT2_SIZES",
    "GPT_CONFIG_124M",
    "FeedForward",
    "GPTDatasetV1",
    "GPTModel",
    "LayerNorm",
    "MultiHeadAttention",
    "TransformerBlock",
    "create_dataloader_v1",
    "download_and_load_gpt2",
    "generate",
    "generate_text_simple",
    "get_gpt2_config",
    "get_gpt2_tokenizer",
    "load_model",
    "load_pretrained_gpt",
    "load_weights_into_gpt",
    "plot_values",
    "save_model",
    "text_to_token_ids",
    "token_ids_to_text",
    "train_model_simple",
]
