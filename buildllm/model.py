"""The GPT-2 architecture of chapter 4, assembled from plain PyTorch layers.

Configurations are plain dicts with the book's keys::

    {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768,
     "n_heads": 12, "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False}
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .attention import MultiHeadAttention

GPT_CONFIG_124M = {
    "vocab_size": 50257,  # GPT-2's BPE vocabulary
    "context_length": 1024,  # longest input the positional embedding covers
    "emb_dim": 768,  # embedding (model) dimension
    "n_heads": 12,  # attention heads per block
    "n_layers": 12,  # transformer blocks
    "drop_rate": 0.1,  # dropout rate
    "qkv_bias": False,  # bias in the query/key/value projections
}

# The four GPT-2 sizes OpenAI released: embedding size, layers, heads.
GPT2_SIZES = {
    "gpt2-small": {"emb_dim": 768, "n_layers": 12, "n_heads": 12},  # 124M
    "gpt2-medium": {"emb_dim": 1024, "n_layers": 24, "n_heads": 16},  # 355M
    "gpt2-large": {"emb_dim": 1280, "n_layers": 36, "n_heads": 20},  # 774M
    "gpt2-xl": {"emb_dim": 1600, "n_layers": 48, "n_heads": 25},  # 1558M
}
# OpenAI names its checkpoint folders by parameter count.
GPT2_SIZE_ALIASES = {"124M": "gpt2-small", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}


def get_gpt2_config(model_size: str = "gpt2-small", **overrides) -> dict:
    """Return the config dict of a GPT-2 size ("gpt2-small" ... "gpt2-xl" or "124M" ...), with overrides."""
    name = GPT2_SIZE_ALIASES.get(model_size, model_size)
    if name not in GPT2_SIZES:
        valid = ", ".join(list(GPT2_SIZES) + list(GPT2_SIZE_ALIASES))
        raise ValueError(f"Unknown model size {model_size!r}. Valid sizes: {valid}.")
    unknown = set(overrides) - set(GPT_CONFIG_124M)
    if unknown:
        raise ValueError(f"Unknown config keys {sorted(unknown)}; valid keys: {sorted(GPT_CONFIG_124M)}.")
    return {**GPT_CONFIG_124M, **GPT2_SIZES[name], **overrides}


class LayerNorm(nn.Module):
    """Normalize each token's vector to mean 0 and variance 1, then scale and shift (trainable)."""

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps  # keeps the division finite when the variance is 0
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # divide by n, as GPT-2 does
        norm_x = (x - mean) / torch.sqrt(var + self.eps)
        return self.scale * norm_x + self.shift


class GELU(nn.Module):
    """GELU activation, in the tanh approximation that GPT-2 was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


class FeedForward(nn.Module):
    """Two linear layers around a GELU; the hidden layer is 4x wider than the embedding."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),  # (b, T, emb_dim) -> (b, T, 4*emb_dim)
            GELU(),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),  # back to (b, T, emb_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg["emb_dim"],
            d_out=cfg["emb_dim"],
            context_length=cfg["context_length"],
            num_heads=cfg["n_heads"],
            dropout=cfg["drop_rate"],
            qkv_bias=cfg["qkv_bias"],
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (b, num_tokens, emb_dim) throughout
        shortcut = x
        x = self.norm1(x)
        x = self.att(x)
        x = self.drop_shortcut(x)
        x = x + shortcut  # shortcut connection around attention

        shortcut = x
        x = self.norm2(x)
        x = self.ff(x)
        x = self.drop_shortcut(x)
        return x + shortcut  # shortcut connection around the feed forward network


class GPTModel(nn.Module):
    """GPT-2: token + position embeddings, `n_layers` transformer blocks, final norm, output head."""

    def __init__(self, cfg: dict):
        super().__init__()
        missing = set(GPT_CONFIG_124M) - set(cfg)
        if missing:
            raise ValueError(f"The config lacks the keys {sorted(missing)}; start from GPT_CONFIG_124M.")
        self.cfg = dict(cfg)
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx: torch.Tensor) -> torch.Tensor:
        batch_size, seq_len = in_idx.shape  # (b, num_tokens) token IDs
        if seq_len > self.cfg["context_length"]:
            raise ValueError(
                f"The input has {seq_len} tokens but the model's context_length is "
                f"{self.cfg['context_length']}. Keep only the last {self.cfg['context_length']} tokens "
                f"(idx[:, -context_length:]), as the generate functions do."
            )
        tok_embeds = self.tok_emb(in_idx)  # (b, num_tokens, emb_dim)
        pos_embeds = self.pos_emb(torch.arange(seq_len, device=in_idx.device))  # (num_tokens, emb_dim)
        x = tok_embeds + pos_embeds  # broadcast over the batch
        x = self.drop_emb(x)
        x = self.trf_blocks(x)
        x = self.final_norm(x)
        return self.out_head(x)  # logits: (b, num_tokens, vocab_size)


def count_parameters(model: nn.Module, exclude_tied_output: bool = False) -> int:
    """Return the number of parameters; optionally not counting the output head (tied to `tok_emb` in GPT-2)."""
    total = sum(p.numel() for p in model.parameters())
    if exclude_tied_output:
        total -= model.out_head.weight.numel()
    return total


def model_memory_mb(model: nn.Module, bytes_per_param: int = 4) -> float:
    """Return the memory of the model's parameters in MB (1 MB = 1024**2 bytes; float32 by default)."""
    return count_parameters(model) * bytes_per_param / 1024**2


def set_dropout(model: nn.Module, rate: float) -> None:
    """Set the rate of every dropout layer of `model` (and its config) to `rate`."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = rate
    model.cfg["drop_rate"] = rate
