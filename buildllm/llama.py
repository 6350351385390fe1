"""From GPT to Llama (chapter 5, bonus): the same decoder-only transformer with four modern parts.

Chapter 4's `GPTModel` and a Llama-style model share their skeleton: token
embedding -> `n_layers` pre-norm transformer blocks -> final norm -> output head.
Four pieces change, and each is a small class below:

===========================  ===========================================================
GPT-2 (chapter 4)            Llama (this module)
===========================  ===========================================================
LayerNorm (mean, variance,   `RMSNorm`: divide by the root mean square only, one scale
scale and shift)             vector, no shift
GELU feed forward, 4x wide   `FeedForward` with SwiGLU: silu(fc1(x)) * fc2(x), then fc3
learned position embedding   RoPE (`compute_rope_params`, `apply_rope`): queries and keys
added to the tokens          are rotated by an angle that grows with the position
multi-head attention         `GroupedQueryAttention`: several query heads share one
                             key/value head (fewer keys and values to store)
===========================  ===========================================================

plus: no biases in the linear layers, no dropout (``drop_rate`` exists so that
fine-tuning code can set it, default 0), and optionally one matrix for the token
embedding and the output head (``tie_embeddings``, as SmolLM2 does).

`LlamaModel` keeps `GPTModel`'s interface (``cfg``, ``tok_emb``, ``trf_blocks``,
``final_norm``, ``out_head``, ``forward(in_idx, kv_cache=None) -> logits``), so the
package's generation, KV cache, classification, instruction fine-tuning, LoRA and
training code work on it unchanged. `load_weights_into_llama` copies a Hugging
Face-format Llama state dict (``model.layers.N.self_attn.q_proj.weight`` ...) into
it; the tests prove the result equal to ``transformers.LlamaForCausalLM``.

A config is a dict with the keys of `LlamaConfig`, e.g. SmolLM2-135M::

    SMOLLM2_135M_CONFIG = {"vocab_size": 49152, "context_length": 8192, "emb_dim": 576,
                           "n_heads": 9, "n_kv_groups": 3, "n_layers": 30, "hidden_dim": 1536,
                           "rope_base": 100000.0, "rms_eps": 1e-5, "tie_embeddings": True,
                           "dtype": "float32"}
    model = LlamaModel(SMOLLM2_135M_CONFIG)

``"fast": True`` runs the same model through PyTorch's fused kernels
(`F.scaled_dot_product_attention`, `F.rms_norm`, `F.silu`): same parameters,
same results within float error (tested).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .config import ConfigError, _check_bool, _check_dropout, _check_int, _check_num_classes, _ConfigMapping

__all__ = [
    "LlamaConfig", "SMOLLM2_135M_CONFIG", "LLAMA_DTYPES", "RMSNorm", "SiLU", "FeedForward",
    "compute_rope_params", "apply_rope", "GroupedQueryAttention", "TransformerBlock", "LlamaModel",
    "load_weights_into_llama", "llama_to_hf_state_dict", "llama_config_from_hf", "build_empty_llama",
    "build_from_state_dict",
]

# F.scaled_dot_product_attention takes fewer key/value heads than query heads since PyTorch 2.5.
_SDPA_HAS_GQA = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5)

# The dtypes a config may name (as strings, so a config stays plain JSON-like data).
LLAMA_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

SMOLLM2_135M_CONFIG = {
    "vocab_size": 49152,  # SmolLM2's byte-level BPE vocabulary
    "context_length": 8192,  # longest input the RoPE tables cover
    "emb_dim": 576,  # embedding (model) dimension
    "n_heads": 9,  # query heads per block (head_dim = 576 / 9 = 64)
    "n_kv_groups": 3,  # key/value heads: every 3 query heads share one
    "n_layers": 30,  # transformer blocks
    "hidden_dim": 1536,  # width of the SwiGLU feed forward layer
    "rope_base": 100000.0,  # RoPE's theta: larger = slower rotation = longer contexts
    "rms_eps": 1e-5,  # keeps RMSNorm's division finite
    "tie_embeddings": True,  # out_head.weight is tok_emb.weight
    "dtype": "float32",  # parameter dtype (the published weights are bfloat16)
}


@dataclass(frozen=True, eq=False)  # eq from Mapping: equal to a dict with the same items
class LlamaConfig(_ConfigMapping):
    """The configuration of a `LlamaModel`: the eleven Llama keys plus optional ones (validated at construction)."""

    vocab_size: int  # tokens the tokenizer produces
    context_length: int  # longest input (rows of the RoPE tables)
    emb_dim: int  # embedding (model) dimension
    n_heads: int  # query heads per block
    n_kv_groups: int  # key/value heads per block; n_heads must be a multiple of it (n_heads = plain MHA)
    n_layers: int  # transformer blocks
    hidden_dim: int  # width of the SwiGLU feed forward layer
    rope_base: float = 10000.0  # RoPE's theta
    rms_eps: float = 1e-5  # epsilon of RMSNorm
    tie_embeddings: bool = False  # out_head.weight is tok_emb.weight
    dtype: str = "float32"  # parameter dtype: "float32", "bfloat16" or "float16"
    head_dim: int | None = None  # dimensions per head; None = emb_dim // n_heads
    drop_rate: float = 0.0  # dropout (Llama trains without; fine-tuning code may set it)
    num_classes: int | None = None  # a classifier: out_head has num_classes outputs (chapter 6)
    fast: bool = False  # fused kernels: same parameters, same results within float error

    _example_name = "SMOLLM2_135M_CONFIG"

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_kv_groups", "n_layers", "hidden_dim"):
            _check_int(self, name)
        if self.n_heads % self.n_kv_groups:
            divisors = [g for g in range(1, self.n_heads + 1) if self.n_heads % g == 0]
            raise ConfigError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_groups ({self.n_kv_groups}): each key/value "
                f"head serves the same number of query heads. Choose n_kv_groups in {divisors}."
            )
        if self.head_dim is None:
            if self.emb_dim % self.n_heads:
                divisors = [h for h in range(1, min(self.emb_dim, 64) + 1) if self.emb_dim % h == 0]
                raise ConfigError(
                    f"emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads}) when head_dim is not "
                    f"given. Choose n_heads in {divisors}, or set head_dim explicitly."
                )
        else:
            _check_int(self, "head_dim")
        if self.resolved_head_dim % 2:
            raise ConfigError(f"RoPE rotates pairs of dimensions, so the head dimension must be even, got "
                              f"{self.resolved_head_dim}. Change emb_dim, n_heads or head_dim.")
        for name in ("rope_base", "rms_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}.")
        if self.dtype not in LLAMA_DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(LLAMA_DTYPES)} (a string), got {self.dtype!r}.")
        _check_dropout(self.drop_rate)
        _check_bool(self, "tie_embeddings")
        _check_bool(self, "fast")
        _check_num_classes(self, "tie_embeddings")

    @property
    def resolved_head_dim(self) -> int:
        """Dimensions per attention head: `head_dim`, or emb_dim // n_heads."""
        return self.head_dim if self.head_dim is not None else self.emb_dim // self.n_heads

    @property
    def torch_dtype(self) -> torch.dtype:
        """The parameter dtype as a `torch.dtype`."""
        return LLAMA_DTYPES[self.dtype]


# --- 1. RMSNorm ---------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square normalization: x / sqrt(mean(x^2) + eps), times a learned scale (no mean, no shift).

    The statistics are computed in float32 even for a bfloat16 model (as the
    published Llama code does). ``fast=True`` calls PyTorch's `F.rms_norm`.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5, *, dtype: torch.dtype | None = None, fast: bool = False):
        super().__init__()
        self.eps = eps
        self.fast = fast
        self.weight = nn.Parameter(torch.ones(emb_dim, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        if self.fast:
            return F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype) * self.weight
        x_f = x.float()
        mean_square = x_f.pow(2).mean(dim=-1, keepdim=True)  # (..., 1): one number per token
        norm_x = x_f * torch.rsqrt(mean_square + self.eps)  # rsqrt(v) = 1 / sqrt(v)
        return self.weight * norm_x.to(x.dtype)


# --- 2. SwiGLU feed forward --------------------------------------------------------------------------


class SiLU(nn.Module):
    """SiLU ("swish"): x * sigmoid(x); smooth like GELU (``fast``: PyTorch's kernel)."""

    def __init__(self, *, fast: bool = False):
        super().__init__()
        self.fast = fast

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x) if self.fast else x * torch.sigmoid(x)


class FeedForward(nn.Module):
    """SwiGLU: fc3(silu(fc1(x)) * fc2(x)). fc1 is the gate, fc2 the values, fc3 goes back to emb_dim."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        dtype = cfg.torch_dtype
        self.fc1 = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False, dtype=dtype)  # gate
        self.fc2 = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False, dtype=dtype)  # up
        self.fc3 = nn.Linear(cfg.hidden_dim, cfg.emb_dim, bias=False, dtype=dtype)  # down
        self.silu = SiLU(fast=cfg.fast)

    def hf_names(self, prefix: str) -> list[tuple[str, Tensor]]:
        """(Hugging Face name, parameter) of the three weights; `prefix` is the block's, "model.layers.N."."""
        return [(prefix + "mlp.gate_proj.weight", self.fc1.weight), (prefix + "mlp.up_proj.weight", self.fc2.weight),
                (prefix + "mlp.down_proj.weight", self.fc3.weight)]

    def forward(self, x: Tensor) -> Tensor:
        # x: (b, n, emb_dim) -> gate and values: (b, n, hidden_dim)
        gated = self.silu(self.fc1(x)) * self.fc2(x)  # the gate decides, element by element, how much passes
        return self.fc3(gated)  # (b, n, emb_dim)


# --- 3. Rotary position embedding (RoPE) -------------------------------------------------------------


def compute_rope_params(
    head_dim: int, theta_base: float = 10000.0, context_length: int = 4096
) -> tuple[Tensor, Tensor]:
    """Return the cosine and sine tables (context_length, head_dim) of RoPE, in float32.

    Dimension pair i (i = 0 .. head_dim/2 - 1) turns by the angle position * theta_base^(-2i/head_dim):
    the first pairs turn fast (fine position), the last ones slowly (coarse position).
    """
    if head_dim % 2:
        raise ValueError(f"RoPE rotates pairs of dimensions: head_dim must be even, got {head_dim}.")
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim  # (head_dim/2,)
    inv_freq = 1.0 / (theta_base ** exponents)  # (head_dim/2,) angle per position of each pair
    positions = torch.arange(context_length, dtype=torch.int64).float()  # (context_length,)
    angles = positions[:, None] * inv_freq[None, :]  # (context_length, head_dim/2)
    # Pair i is dimension i together with dimension i + head_dim/2 (the "rotate half" layout).
    angles = torch.cat([angles, angles], dim=-1)  # (context_length, head_dim)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate queries or keys `x` (b, heads, n, head_dim) by their positions' angles.

    `cos`/`sin` are the table rows of the n positions: (n, head_dim) when every
    row of the batch has the same positions, (b, n, head_dim) when they differ
    (left-padded prompts in the KV cache).
    """
    if cos.dim() == 3:  # (b, n, head_dim) -> (b, 1, n, head_dim): the same angles for every head
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # the two halves: pair i is (x1[i], x2[i])
    rotated = torch.cat([-x2, x1], dim=-1)  # a quarter turn of every pair
    # (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin): a rotation by the angle in the tables
    return (x * cos + rotated * sin).to(x.dtype)


# --- 4. Grouped-query attention ----------------------------------------------------------------------


class GroupedQueryAttention(nn.Module):
    """Causal attention where every `num_heads / num_kv_groups` query heads share one key/value head.

    With ``num_kv_groups == num_heads`` it is the multi-head attention of chapter 3
    (plus RoPE); with fewer groups the model computes and caches fewer keys and
    values. ``fast=True`` uses `F.scaled_dot_product_attention` (same result).
    ``qk_norm=True`` adds an `RMSNorm` over each head's queries and keys before RoPE
    (``q_norm``, ``k_norm``: Qwen3 does this, see `buildllm.qwen3`); Llama has none.
    """

    def __init__(self, d_in: int, num_heads: int, num_kv_groups: int, head_dim: int | None = None,
                 dropout: float = 0.0, *, dtype: torch.dtype | None = None, fast: bool = False,
                 qk_norm: bool = False, rms_eps: float = 1e-6):
        super().__init__()
        if num_heads % num_kv_groups:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_groups ({num_kv_groups}).")
        self.num_heads = num_heads
        self.num_kv_groups = num_kv_groups
        self.group_size = num_heads // num_kv_groups  # query heads per key/value head
        self.head_dim = head_dim if head_dim is not None else d_in // num_heads
        self.d_out = num_heads * self.head_dim
        self.fast = fast
        self.W_query = nn.Linear(d_in, self.d_out, bias=False, dtype=dtype)
        self.W_key = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=False, dtype=dtype)  # fewer keys ...
        self.W_value = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=False, dtype=dtype)  # ... and values
        self.out_proj = nn.Linear(self.d_out, d_in, bias=False, dtype=dtype)
        self.dropout = nn.Dropout(dropout)
        # QK-norm: one scale vector of head_dim, shared by all heads (None: no parameters, no state dict keys).
        self.q_norm = RMSNorm(self.head_dim, rms_eps, dtype=dtype, fast=fast) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, rms_eps, dtype=dtype, fast=fast) if qk_norm else None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, kv_cache=None) -> Tensor:
        b, num_tokens, _ = x.shape
        queries = self.W_query(x)  # (b, n, num_heads * head_dim)
        keys = self.W_key(x)  # (b, n, num_kv_groups * head_dim)
        values = self.W_value(x)

        queries = queries.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = keys.view(b, num_tokens, self.num_kv_groups, self.head_dim).transpose(1, 2)
        values = values.view(b, num_tokens, self.num_kv_groups, self.head_dim).transpose(1, 2)
        # now: queries (b, num_heads, n, head_dim), keys/values (b, num_kv_groups, n, head_dim)
        if self.q_norm is not None:  # QK-norm: every head's query and key vectors get an RMS of 1 (times a scale)
            queries, keys = self.q_norm(queries), self.k_norm(keys)

        # RoPE: the position enters here, by rotating queries and keys (values are not rotated).
        queries = apply_rope(queries, cos, sin)
        keys = apply_rope(keys, cos, sin)

        if kv_cache is not None:
            keys, values = kv_cache.update(keys, values)  # (b, num_kv_groups, cached + n, head_dim)
        if self.fast:
            context = self._fused_attention(queries, keys, values, kv_cache)
        else:
            if kv_cache is None:
                mask = torch.triu(torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=x.device), diagonal=1)
            else:
                mask = kv_cache.mask  # (b or 1, 1, n, cached + n), True = must not attend
            # Each key/value head serves group_size query heads: repeat it for them.
            keys = keys.repeat_interleave(self.group_size, dim=1)  # (b, num_heads, num_keys, head_dim)
            values = values.repeat_interleave(self.group_size, dim=1)

            attn_scores = queries @ keys.transpose(2, 3)  # (b, num_heads, n, num_keys)
            attn_scores = attn_scores.masked_fill(mask, -torch.inf)
            attn_weights = torch.softmax(attn_scores / math.sqrt(self.head_dim), dim=-1)
            attn_weights = self.dropout(attn_weights)
            context = attn_weights @ values  # (b, num_heads, n, head_dim)

        context = context.transpose(1, 2).reshape(b, num_tokens, self.d_out)  # heads side by side
        return self.out_proj(context)  # (b, n, d_in)

    def _fused_attention(self, queries: Tensor, keys: Tensor, values: Tensor, kv_cache) -> Tensor:
        """The same attention in one call of PyTorch's `F.scaled_dot_product_attention` (``fast=True``).

        SDPA serves every query head from its shared key/value head itself (``enable_gqa``,
        no repeated copies), and needs no mask tensor in the common cases: a plain causal
        mask for a whole sequence, none at all for one new token that may see every cached one.
        """
        num_tokens, num_keys = queries.shape[2], keys.shape[2]
        attn_mask, is_causal = None, False
        if kv_cache is None:
            is_causal = True
        else:
            # Without left padding (the cache's key_padding), the mask is the plain causal one.
            no_padding = getattr(getattr(kv_cache, "parent", None), "key_padding", "unknown") is None
            if no_padding and num_tokens == 1:
                pass  # one new token may see every cached one: no mask at all
            elif no_padding and num_tokens == num_keys:
                is_causal = True  # the first step: an ordinary causal mask
            else:
                attn_mask = ~kv_cache.mask  # SDPA's boolean mask: True = may attend
        extra = {}
        if _SDPA_HAS_GQA:
            extra["enable_gqa"] = self.group_size > 1
        else:  # older PyTorch: repeat the key/value heads as the plain path does
            keys = keys.repeat_interleave(self.group_size, dim=1)
            values = values.repeat_interleave(self.group_size, dim=1)
        return F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=attn_mask, is_causal=is_causal,
            dropout_p=self.dropout.p if self.training else 0.0, **extra,
        )  # (b, num_heads, n, head_dim)


# --- 5. The block and the model ----------------------------------------------------------------------


class TransformerBlock(nn.Module):
    """Pre-norm Llama block: x + attention(rmsnorm(x)), then x + swiglu(rmsnorm(x)).

    Models built on this one (`buildllm.qwen3`) pass ``qk_norm=True`` and their own
    feed forward layer ``ff`` (e.g. a mixture of experts); the defaults are Llama's.
    """

    def __init__(self, cfg: LlamaConfig, *, qk_norm: bool = False, ff: nn.Module | None = None):
        super().__init__()
        dtype = cfg.torch_dtype
        self.att = GroupedQueryAttention(
            d_in=cfg.emb_dim, num_heads=cfg.n_heads, num_kv_groups=cfg.n_kv_groups, head_dim=cfg.resolved_head_dim,
            dropout=cfg.drop_rate, dtype=dtype, fast=cfg.fast, qk_norm=qk_norm, rms_eps=cfg.rms_eps,
        )
        self.ff = ff if ff is not None else FeedForward(cfg)
        self.norm1 = RMSNorm(cfg.emb_dim, cfg.rms_eps, dtype=dtype, fast=cfg.fast)
        self.norm2 = RMSNorm(cfg.emb_dim, cfg.rms_eps, dtype=dtype, fast=cfg.fast)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, kv_cache=None) -> Tensor:
        # x: (b, n, emb_dim) throughout
        x = x + self.drop_shortcut(self.att(self.norm1(x), cos, sin, kv_cache))  # shortcut around attention
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))  # shortcut around the feed forward layer
        return x


class LlamaModel(nn.Module):
    """A Llama-style model: token embedding, `n_layers` blocks with RoPE, final RMSNorm, output head."""

    architecture = "llama"  # the name model files store (buildllm.checkpoints)
    config_class = LlamaConfig  # a subclass with more keys builds its own blocks (make_block)

    def __init__(self, cfg: Mapping | LlamaConfig):
        super().__init__()
        cfg = self.config_class.from_dict(cfg)
        self.cfg = cfg
        dtype = cfg.torch_dtype
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim, dtype=dtype)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        # No position embedding: RoPE rotates queries and keys inside every attention layer.
        self.trf_blocks = nn.ModuleList([self.make_block(cfg, i) for i in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.emb_dim, cfg.rms_eps, dtype=dtype, fast=cfg.fast)
        if cfg.num_classes is not None:  # a classifier (chapter 6): one output per class, with a bias
            self.out_head = nn.Linear(cfg.emb_dim, cfg.num_classes, dtype=dtype)
        else:
            self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False, dtype=dtype)
        if cfg.tie_embeddings:
            self.out_head.weight = self.tok_emb.weight  # one matrix for reading and predicting tokens
        self.reset_rope()

    def make_block(self, cfg: LlamaConfig, index: int) -> TransformerBlock:
        """Build transformer block `index` (subclasses change its attention or feed forward layer)."""
        return TransformerBlock(cfg)

    def hf_named_parameters(self) -> list[tuple[str, Tensor]]:
        """(Hugging Face name, parameter) of every tensor a checkpoint holds (see section 6 below)."""
        named = [("model.embed_tokens.weight", self.tok_emb.weight)]
        for i, block in enumerate(self.trf_blocks):
            named += _hf_names(i, block)
        named.append(("model.norm.weight", self.final_norm.weight))
        if not self.cfg.tie_embeddings:
            named.append(("lm_head.weight", self.out_head.weight))
        return named

    def reset_rope(self) -> None:
        """(Re)compute the RoPE tables; buffers, not parameters: they are not trained and not saved."""
        cos, sin = compute_rope_params(self.cfg.resolved_head_dim, self.cfg.rope_base, self.cfg.context_length)
        device = self.tok_emb.weight.device
        if device.type == "meta":
            device = None
        self.register_buffer("cos", cos.to(device), persistent=False)  # (context_length, head_dim)
        self.register_buffer("sin", sin.to(device), persistent=False)

    def forward(self, in_idx: Tensor, kv_cache=None) -> Tensor:
        batch_size, seq_len = in_idx.shape  # (b, n) token IDs
        context_length = self.cfg.context_length
        if kv_cache is None:
            if seq_len > context_length:
                raise ValueError(
                    f"The input has {seq_len} tokens but the model's context_length is {context_length}. Keep only "
                    f"the last {context_length} tokens (idx[:, -context_length:]), as the generate functions do."
                )
            positions = torch.arange(seq_len, device=in_idx.device)  # (n,)
        else:
            if kv_cache.length + seq_len > context_length:
                raise ValueError(
                    f"The KV cache holds {kv_cache.length} tokens and {seq_len} more were given, more than the "
                    f"model's context_length {context_length}. Start a new cache over the last {context_length} "
                    f"tokens."
                )
            positions = kv_cache.start_step(seq_len, in_idx.device)  # (b or 1, n), after the cached ones
        x = self.tok_emb(in_idx)  # (b, n, emb_dim)
        x = self.drop_emb(x)
        # The rows of the RoPE tables for these positions, computed once and shared by every block.
        cos = self.cos[positions].to(x.dtype)  # (n, head_dim) or (b or 1, n, head_dim)
        sin = self.sin[positions].to(x.dtype)
        for i, block in enumerate(self.trf_blocks):
            x = block(x, cos, sin, None if kv_cache is None else kv_cache.layer(i))
        if kv_cache is not None:
            kv_cache.advance(seq_len)
        x = self.final_norm(x)
        return self.out_head(x)  # (b, n, vocab_size)


def build_empty_llama(cfg: Mapping | LlamaConfig, device: str | torch.device = "cpu", *,
                      model_class: type[LlamaModel] = LlamaModel) -> LlamaModel:
    """A `LlamaModel` (or `model_class`) whose parameters are allocated but not initialized (fill it with weights next)."""
    with torch.device("meta"):  # no memory, no random draws
        model = model_class(cfg)
    model = model.to_empty(device=device)
    if model.cfg.tie_embeddings:  # to_empty gives every parameter its own storage: tie again
        model.out_head.weight = model.tok_emb.weight
    model.reset_rope()  # to_empty left the buffers uninitialized
    return model


# --- 6. Hugging Face-format weights ------------------------------------------------------------------
#
# A Llama checkpoint in Hugging Face's layout (LlamaForCausalLM.state_dict(), safetensors files) names
# its tensors like this (N = block index; all linear weights have nn.Linear's (out, in) layout):
#
#     model.embed_tokens.weight                          -> tok_emb.weight
#     model.layers.N.input_layernorm.weight              -> trf_blocks[N].norm1.weight
#     model.layers.N.self_attn.{q,k,v,o}_proj.weight     -> trf_blocks[N].att.W_query/W_key/W_value/out_proj
#     model.layers.N.post_attention_layernorm.weight     -> trf_blocks[N].norm2.weight
#     model.layers.N.mlp.{gate,up,down}_proj.weight      -> trf_blocks[N].ff.fc1/fc2/fc3 (`FeedForward.hf_names`)
#     model.norm.weight                                  -> final_norm.weight
#     lm_head.weight                                     -> out_head.weight (absent or equal when tied)


def _hf_names(i: int, block: TransformerBlock) -> list[tuple[str, Tensor]]:
    prefix = f"model.layers.{i}."
    return [
        (prefix + "input_layernorm.weight", block.norm1.weight),
        (prefix + "self_attn.q_proj.weight", block.att.W_query.weight),
        (prefix + "self_attn.k_proj.weight", block.att.W_key.weight),
        (prefix + "self_attn.v_proj.weight", block.att.W_value.weight),
        (prefix + "self_attn.o_proj.weight", block.att.out_proj.weight),
        (prefix + "post_attention_layernorm.weight", block.norm2.weight),
        *([(prefix + "self_attn.q_norm.weight", block.att.q_norm.weight),
           (prefix + "self_attn.k_norm.weight", block.att.k_norm.weight)] if block.att.q_norm is not None else []),
        *block.ff.hf_names(prefix),  # the feed forward layer names its own tensors (a mixture of experts has more)
    ]


def llama_to_hf_state_dict(model: LlamaModel) -> dict[str, Tensor]:
    """The parameters of `model` under their Hugging Face names (the inverse of `load_weights_into_llama`)."""
    return {name: value.detach() for name, value in model.hf_named_parameters()}


def load_weights_into_llama(model: LlamaModel, state_dict: Mapping[str, Tensor], *,
                            assign: bool = False) -> LlamaModel:
    """Copy a Hugging Face-format Llama state dict into `model` (in place) and return `model`.

    Every key and shape is checked before the first value is copied, so a state dict
    that does not fit raises an error (naming the key and both shapes) and leaves
    `model` as it was. Keys may come with or without the ``model.`` prefix; the
    ``rotary_emb.inv_freq`` buffers some checkpoints hold are ignored (we compute RoPE).
    ``assign=True`` lets the parameters use the given tensors themselves where dtype and
    device already match (no copy: faster for a state dict read only to be loaded).
    """
    weights = {}
    for key, value in state_dict.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue
        if not key.startswith(("model.", "lm_head.")):
            key = "model." + key  # the state dict of a bare transformers LlamaModel
        weights[key] = value

    cfg = model.cfg
    what = type(model).__name__.removesuffix("Model")  # "Llama", or a subclass's name ("Qwen3")
    targets = model.hf_named_parameters()

    copies: list[tuple[Tensor, Tensor]] = []
    for key, param in targets:
        if key not in weights:
            hint = (" The checkpoint ties its output layer to the embedding: build the model with "
                    "tie_embeddings=True." if key == "lm_head.weight" else
                    " Does the model have more layers than the checkpoint (n_layers)?")
            raise KeyError(f"The {what} state dict has no key {key!r} (expected shape {tuple(param.shape)}).{hint}")
        value = weights.pop(key)
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(
                f"Shape mismatch for {key!r}: the checkpoint has {tuple(value.shape)}, the model expects "
                f"{tuple(param.shape)}. Build {type(model).__name__} with the checkpoint's configuration (emb_dim, "
                f"n_heads, n_kv_groups, head_dim, hidden_dim, vocab_size ...)."
            )
        copies.append((param, value))

    if cfg.tie_embeddings and "lm_head.weight" in weights:
        head = weights.pop("lm_head.weight")
        embedding = copies[0][1]
        if head.shape != embedding.shape or not torch.equal(head, embedding):
            raise ValueError(
                "The checkpoint has its own output layer (lm_head.weight differs from model.embed_tokens.weight), "
                "but the model ties them. Build the model with tie_embeddings=False."
            )
    if weights:
        extra = sorted(weights)
        raise ValueError(
            f"The {what} state dict has {len(extra)} key(s) this model has no place for, e.g. {extra[:5]}. Does the "
            f"checkpoint have more layers than n_layers={cfg.n_layers}, or another architecture?"
        )
    with torch.no_grad():
        for param, value in copies:
            # (a target may be a view into a larger parameter, e.g. one expert of a stack: always copied into)
            if assign and value.dtype == param.dtype and value.device == param.device and not param._is_view():
                param.data = value  # the parameter now uses this tensor's memory
            else:
                param.copy_(value)
    return model


def build_from_state_dict(cfg: Mapping | LlamaConfig, state_dict: Mapping[str, Tensor], source: str | Path,
                          device: str | torch.device = "cpu", *, model_class: type[LlamaModel] = LlamaModel,
                          load=load_weights_into_llama) -> LlamaModel:
    """A `model_class` for `cfg` filled with `state_dict` by `load` (no copies: the tensors were read for it).

    A state dict that does not fit raises `WeightsError` naming `source` (the file it was read from).
    """
    from .sources import WeightsError

    model = build_empty_llama(cfg, device, model_class=model_class)
    try:
        load(model, state_dict, assign=True)
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"{source} does not fit the model its config.json describes ({exc}). Delete the folder "
                           f"and download the files again.") from None
    return model

def hf_config_common(hf_config: Mapping, model: str) -> dict:
    """The keys every Llama-family ``config.json`` shares, as our config dict (`model` names ours in errors).

    Checks what all of them must have for our blocks: SiLU and plain RoPE.
    """
    if hf_config.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{model} uses SiLU; this config asks for {hf_config.get('hidden_act')!r}.")
    rope = dict(hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {})
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ConfigError(f"{model} implements plain RoPE; this config asks for rope scaling {rope}.")
    n_heads = hf_config["num_attention_heads"]
    cfg = {
        "vocab_size": hf_config["vocab_size"],
        "context_length": hf_config["max_position_embeddings"],
        "emb_dim": hf_config["hidden_size"],
        "n_heads": n_heads,
        "n_kv_groups": hf_config.get("num_key_value_heads") or n_heads,
        "n_layers": hf_config["num_hidden_layers"],
        "hidden_dim": hf_config["intermediate_size"],
        "rope_base": float(rope.get("rope_theta", hf_config.get("rope_theta", 10000.0))),
        "rms_eps": float(hf_config.get("rms_norm_eps", 1e-6)),
        "tie_embeddings": bool(hf_config.get("tie_word_embeddings", False)),
        "dtype": "float32",
    }
    head_dim = hf_config.get("head_dim")
    if head_dim is not None and head_dim != cfg["emb_dim"] // n_heads:
        cfg["head_dim"] = head_dim
    return cfg


def llama_config_from_hf(hf_config: Mapping, **overrides) -> dict:
    """Turn a Hugging Face Llama ``config.json`` (a dict) into our config dict; `overrides` change keys (e.g. dtype)."""
    if hf_config.get("model_type", "llama") != "llama":
        raise ConfigError(f"This config describes a {hf_config.get('model_type')!r} model, not a Llama model.")
    for flag in ("attention_bias", "mlp_bias"):
        if hf_config.get(flag):
            raise ConfigError(f"LlamaModel has no biases in its linear layers; this config sets {flag}=True.")
    cfg = hf_config_common(hf_config, "LlamaModel")
    cfg.update(overrides)
    LlamaConfig.from_dict(cfg)  # fail here, with advice, on anything inconsistent
    return cfg
