"""The GPT-2 architecture of chapter 4, assembled from plain PyTorch layers.

Configurations are plain dicts with the book's keys, validated into a
`buildllm.config.GPTConfig` when the model is built::

    {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768,
     "n_heads": 12, "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False}

Every forward pass takes an optional `buildllm.kv_cache.KVCache` (fast generation),
and ``"fast": True`` in the config runs the same model through PyTorch's fused
kernels. Both are checked against the plain path in the tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import MultiHeadAttention
from .config import ConfigError, GPTConfig

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


def resolve_gpt2_size(model_size: str) -> str:
    """Return the canonical name ("gpt2-small" ...) of a GPT-2 size given by name or as "124M" ..."""
    name = GPT2_SIZE_ALIASES.get(model_size, model_size)
    if name not in GPT2_SIZES:
        valid = ", ".join(f"{n} ({folder})" for folder, n in GPT2_SIZE_ALIASES.items())
        raise ConfigError(f"Unknown GPT-2 model size {model_size!r}. Valid sizes: {valid}.")
    return name


def get_gpt2_config(model_size: str = "gpt2-small", **overrides) -> dict:
    """Return the config dict of a GPT-2 size ("gpt2-small" ... "gpt2-xl" or "124M" ...), with overrides."""
    cfg = {**GPT_CONFIG_124M, **GPT2_SIZES[resolve_gpt2_size(model_size)], **overrides}
    GPTConfig.from_dict(cfg)  # unknown keys and inconsistent values fail here, with advice
    return cfg


class LayerNorm(nn.Module):
    """Normalize each token's vector to mean 0 and variance 1, then scale and shift (trainable).

    ``fast=True`` calls PyTorch's fused `F.layer_norm`: the same formula, same parameters.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5, *, fast: bool = False):
        super().__init__()
        self.eps = eps  # keeps the division finite when the variance is 0
        self.fast = fast
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # divide by n, as GPT-2 does
        norm_x = (x - mean) / torch.sqrt(var + self.eps)
        return self.scale * norm_x + self.shift


class GELU(nn.Module):
    """GELU activation, in the tanh approximation that GPT-2 was trained with (``fast``: PyTorch's kernel)."""

    def __init__(self, *, fast: bool = False):
        super().__init__()
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return F.gelu(x, approximate="tanh")
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


class FeedForward(nn.Module):
    """Two linear layers around a GELU; the hidden layer is 4x wider than the embedding."""

    def __init__(self, cfg: dict):
        super().__init__()
        fast = bool(cfg.get("fast", False))
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),  # (b, T, emb_dim) -> (b, T, 4*emb_dim)
            GELU(fast=fast),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),  # back to (b, T, emb_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, cfg: dict):
        super().__init__()
        fast = bool(cfg.get("fast", False))
        self.att = MultiHeadAttention(
            d_in=cfg["emb_dim"],
            d_out=cfg["emb_dim"],
            context_length=cfg["context_length"],
            dropout=cfg["drop_rate"],
            num_heads=cfg["n_heads"],
            qkv_bias=cfg["qkv_bias"],
            fast=fast,
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"], fast=fast)
        self.norm2 = LayerNorm(cfg["emb_dim"], fast=fast)
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x: torch.Tensor, kv_cache=None) -> torch.Tensor:
        # x: (b, num_tokens, emb_dim) throughout
        shortcut = x
        x = self.norm1(x)
        x = self.att(x, kv_cache)
        x = self.drop_shortcut(x)
        x = x + shortcut  # shortcut connection around attention

        shortcut = x
        x = self.norm2(x)
        x = self.ff(x)
        x = self.drop_shortcut(x)
        return x + shortcut  # shortcut connection around the feed forward network


def _padded(layer_weight: torch.Tensor, rows: int) -> nn.Parameter:
    """`layer_weight` (n, d) grown to (rows, d) with zero rows (nothing random is drawn)."""
    grown = layer_weight.new_zeros(rows, layer_weight.shape[1])
    grown[: layer_weight.shape[0]] = layer_weight.detach()
    return nn.Parameter(grown)


class GPTModel(nn.Module):
    """GPT-2: token + position embeddings, `n_layers` transformer blocks, final norm, output head."""

    architecture = "gpt"  # the name model files store (buildllm.checkpoints)

    def __init__(self, cfg: dict | GPTConfig):
        super().__init__()
        cfg = GPTConfig.from_dict(cfg)
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"], fast=cfg.fast)
        if cfg.num_classes is not None:  # a classifier (chapter 6): one output per class, with a bias
            self.out_head = nn.Linear(cfg["emb_dim"], cfg.num_classes)
        else:
            self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
        if cfg.padded_vocab_size is not None:
            # Extra zero rows after the real ones: the random draws stay those of the unpadded model.
            self.tok_emb.weight = _padded(self.tok_emb.weight, cfg.padded_vocab_size)
            self.tok_emb.num_embeddings = cfg.padded_vocab_size
            if cfg.num_classes is None:
                self.out_head.weight = _padded(self.out_head.weight, cfg.padded_vocab_size)
                self.out_head.out_features = cfg.padded_vocab_size
        if cfg.tie_weights:
            # Weight tying: one matrix for input and output. As the output layer it multiplies normalized
            # vectors of length ~sqrt(emb_dim), so it starts small (std 0.02, as GPT-2 did), not N(0, 1).
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=0.02)
            self.out_head.weight = self.tok_emb.weight

    def forward(self, in_idx: torch.Tensor, kv_cache=None) -> torch.Tensor:
        batch_size, seq_len = in_idx.shape  # (b, num_tokens) token IDs
        if kv_cache is None:
            if seq_len > self.cfg["context_length"]:
                raise ValueError(
                    f"The input has {seq_len} tokens but the model's context_length is "
                    f"{self.cfg['context_length']}. Keep only the last {self.cfg['context_length']} tokens "
                    f"(idx[:, -context_length:]), as the generate functions do."
                )
            positions = torch.arange(seq_len, device=in_idx.device)  # (num_tokens,)
        else:
            positions = kv_cache.start_step(seq_len, in_idx.device)  # (b or 1, num_tokens), after the cached ones
        tok_embeds = self.tok_emb(in_idx)  # (b, num_tokens, emb_dim)
        pos_embeds = self.pos_emb(positions)  # (num_tokens, emb_dim), broadcast over the batch
        x = tok_embeds + pos_embeds
        x = self.drop_emb(x)
        if kv_cache is None:
            x = self.trf_blocks(x)
        else:
            for i, block in enumerate(self.trf_blocks):
                x = block(x, kv_cache.layer(i))
            kv_cache.advance(seq_len)
        x = self.final_norm(x)
        logits = self.out_head(x)  # (b, num_tokens, vocab_size)
        if self.cfg.padded_vocab_size is not None and self.cfg.num_classes is None:
            # Padding tokens are never predicted: probability 0 in the loss, in sampling and in argmax.
            is_padding = torch.arange(logits.shape[-1], device=logits.device) >= self.cfg["vocab_size"]
            logits = logits.masked_fill(is_padding, -torch.inf)
        return logits


def count_parameters(model: nn.Module, exclude_tied_output: bool = False) -> int:
    """Return the number of parameters; optionally not counting the output head (tied to `tok_emb` in GPT-2)."""
    total = sum(p.numel() for p in model.parameters())  # a tied matrix is counted once
    if exclude_tied_output and model.out_head.weight is not model.tok_emb.weight:
        total -= model.out_head.weight.numel()
    return total


def model_memory_mb(model: nn.Module, bytes_per_param: int = 4) -> float:
    """Return the memory of the model's parameters in MB (1 MB = 1024**2 bytes; float32 by default)."""
    return count_parameters(model) * bytes_per_param / 1024**2


def set_dropout(model: nn.Module, rate: float) -> None:
    """Set the rate of every dropout layer of `model` to `rate` (and record it in the model's config)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = rate
    if hasattr(model, "cfg") and "drop_rate" in model.cfg:
        model.cfg = model.cfg.replace(drop_rate=rate)
