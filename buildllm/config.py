"""Model configurations, validated once when a model is built (chapter 4, used by every chapter after it).

The book writes a configuration as a plain dict, and notebooks keep doing so::

    GPT_CONFIG_124M = {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768,
                       "n_heads": 12, "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False}
    model = GPTModel({**GPT_CONFIG_124M, "context_length": 256})

`GPTModel` turns the dict into a `GPTConfig`: a frozen dataclass that checks every
key and value at construction (unknown keys, missing keys, ``emb_dim`` not divisible
by ``n_heads`` ... are errors that say what to do) and never changes afterwards. It
still reads like the dict (``cfg["emb_dim"]``, ``cfg.get("num_classes")``,
``dict(cfg)``, ``{**cfg, "drop_rate": 0.0}``); a changed copy is ``cfg.replace(...)``.

Beyond the book's seven keys, everything a model's shape depends on is in the
config, so a saved config rebuilds the same model:

- ``padded_vocab_size``: embedding and output rows rounded up (e.g. 50257 -> 50304,
  faster matrix shapes); the padding tokens are never predicted;
- ``num_classes``: a classifier (chapter 6): the output layer has this many outputs;
- ``tie_weights``: the output layer shares the token embedding matrix (GPT-2 as published);
- ``fast``: the same computation through PyTorch's fused kernels (SDPA attention, one
  QKV product, ``F.layer_norm``, ``F.gelu``); same parameters, same state dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Iterator


class ConfigError(ValueError):
    """A model configuration is incomplete or inconsistent; the message says what to change."""


class _ConfigMapping(Mapping):
    """Dict-style reading for a frozen dataclass config: ``cfg["key"]``, ``cfg.get``, ``dict(cfg)``, ``**cfg``."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def _required(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls)
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)

    @classmethod
    def from_dict(cls, cfg: Mapping) -> "_ConfigMapping":
        """Build a validated config from a dict (or return `cfg` itself if it already is one of this class)."""
        if isinstance(cfg, cls):
            return cfg
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"A model config must be a dict, got {type(cfg).__name__}.")
        unknown = sorted(set(cfg) - set(cls._names()))
        if unknown:
            raise ConfigError(
                f"Unknown config key(s) {unknown} for {cls.__name__}. Valid keys: {', '.join(cls._names())}."
            )
        missing = [k for k in cls._required() if k not in cfg]
        if missing:
            raise ConfigError(
                f"The config lacks the key(s) {missing}. Start from a complete config "
                f"({cls._example_name}) and change what you need: {{**{cls._example_name}, 'key': value}}."
            )
        return cls(**dict(cfg))

    def replace(self, **changes) -> "_ConfigMapping":
        """Return a validated copy with `changes` applied (the config itself never changes)."""
        unknown = sorted(set(changes) - set(self._names()))
        if unknown:
            raise ConfigError(f"Unknown config key(s) {unknown}. Valid keys: {', '.join(self._names())}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The config as a plain dict (what model files store)."""
        return {name: getattr(self, name) for name in self._names()}


def _check_int(cfg, name: str, minimum: int = 1) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _check_bool(cfg, name: str) -> None:
    if not isinstance(getattr(cfg, name), bool):
        raise ConfigError(f"{name} must be True or False, got {getattr(cfg, name)!r}.")


def _check_num_classes(cfg, tie_key: str) -> None:
    """`num_classes` is None or at least 2, and a classifier does not tie its output layer (named `tie_key`)."""
    if cfg.num_classes is not None:
        _check_int(cfg, "num_classes", 2)
        if getattr(cfg, tie_key):
            raise ConfigError(f"A classifier (num_classes) cannot tie its output layer to the token embedding; "
                              f"set {tie_key}=False.")


def _check_dropout(value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"drop_rate must be a number in [0, 1), got {value!r} (the book uses 0.1; 0 = no dropout).")


@dataclass(frozen=True, eq=False)  # eq from Mapping: equal to a dict with the same items
class GPTConfig(_ConfigMapping):
    """The configuration of a `buildllm.model.GPTModel` (the book's seven keys plus four explicit options)."""

    vocab_size: int  # tokens the tokenizer produces (GPT-2: 50257)
    context_length: int  # longest input; the position embedding has this many rows
    emb_dim: int  # embedding (model) dimension
    n_heads: int  # attention heads per block
    n_layers: int  # transformer blocks
    drop_rate: float  # dropout rate (embeddings, attention weights, shortcuts)
    qkv_bias: bool  # bias in the query/key/value projections (GPT-2's weights have one)
    padded_vocab_size: int | None = None  # rows of tok_emb/out_head if larger than vocab_size
    num_classes: int | None = None  # a classifier: out_head has num_classes outputs (chapter 6)
    tie_weights: bool = False  # out_head.weight is tok_emb.weight (GPT-2 as published)
    fast: bool = False  # fused kernels: same parameters, same results within float error

    _example_name = "GPT_CONFIG_124M"

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            _check_int(self, name)
        if self.emb_dim % self.n_heads:
            divisors = [h for h in range(1, min(self.emb_dim, 64) + 1) if self.emb_dim % h == 0]
            raise ConfigError(
                f"emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads}): each head gets "
                f"emb_dim // n_heads dimensions. Choose n_heads in {divisors}."
            )
        _check_dropout(self.drop_rate)
        for name in ("qkv_bias", "tie_weights", "fast"):
            _check_bool(self, name)
        if self.padded_vocab_size is not None:
            _check_int(self, "padded_vocab_size", self.vocab_size)
        _check_num_classes(self, "tie_weights")

    @property
    def head_dim(self) -> int:
        """Dimensions per attention head."""
        return self.emb_dim // self.n_heads

    @property
    def embedding_rows(self) -> int:
        """Rows of the token embedding: the padded vocabulary if there is one."""
        return self.padded_vocab_size or self.vocab_size

    @property
    def output_size(self) -> int:
        """Outputs of `out_head`: classes for a classifier, else the (padded) vocabulary."""
        return self.num_classes or self.embedding_rows
