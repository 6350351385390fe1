"""Qwen3 and Qwen3-MoE (chapter 4/5 bonus): the Llama architecture plus QK-norm and, optionally, a mixture of experts.

Qwen3 is `buildllm.llama`'s model with two changes, and Qwen3-MoE adds a third:

1. **QK-norm**: every attention head's queries and keys pass through an `RMSNorm`
   (``q_norm``, ``k_norm``, one scale vector of ``head_dim`` each) before RoPE. The
   attention scores then cannot grow just because the vectors grow, which keeps
   training stable.
2. **head_dim decoupled from emb_dim**: Qwen3-0.6B has emb_dim 1024 and 16 heads of
   128 dimensions, so the queries are 2048 wide (``W_query``: 1024 -> 2048 and
   ``out_proj`` back). `LlamaConfig` already has the key; Qwen3 uses it.
3. **Mixture of experts** (Qwen3-MoE): with ``num_experts > 0`` every block's feed
   forward layer is a `buildllm.moe.MoEFeedForward`: ``num_experts`` SwiGLU experts of
   width ``moe_hidden_dim``, of which each token uses ``num_experts_per_tok``.

`Qwen3Model` is `LlamaModel` with its own config class and block builder
(`make_block`): forward, KV cache, generation, LoRA and model files are Llama's.
`load_weights_into_qwen3` copies a Hugging Face-format Qwen3 or Qwen3-MoE state dict
into it (both layouts of the experts, see section 3); the tests prove the result
equal to ``transformers``' ``Qwen3ForCausalLM`` and ``Qwen3MoeForCausalLM``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import ConfigError, _check_bool, _check_int
from .llama import LlamaConfig, LlamaModel, TransformerBlock, build_empty_llama, load_weights_into_llama
from .moe import MoEFeedForward

__all__ = ["Qwen3Config", "Qwen3Model", "QWEN3_0_6B_CONFIG", "QWEN3_30B_A3B_CONFIG", "load_weights_into_qwen3",
           "qwen3_config_from_hf", "build_empty_qwen3", "fuse_experts"]

# --- 1. Configuration ----------------------------------------------------------------------------------

QWEN3_0_6B_CONFIG = {
    "vocab_size": 151936,  # Qwen's byte-level BPE vocabulary
    "context_length": 40960,  # longest input the RoPE tables cover
    "emb_dim": 1024,  # embedding (model) dimension
    "n_heads": 16,  # query heads per block
    "head_dim": 128,  # dimensions per head: 16 * 128 = 2048, not emb_dim
    "n_kv_groups": 8,  # key/value heads: every 2 query heads share one
    "n_layers": 28,  # transformer blocks
    "hidden_dim": 3072,  # width of the SwiGLU feed forward layer
    "rope_base": 1000000.0,  # RoPE's theta
    "rms_eps": 1e-6,
    "tie_embeddings": True,  # out_head.weight is tok_emb.weight
    "dtype": "bfloat16",  # as published
    "qk_norm": True,
}

QWEN3_30B_A3B_CONFIG = {  # Qwen3-MoE: 30.5 billion parameters, 3.3 billion active per token
    **QWEN3_0_6B_CONFIG,
    "context_length": 40960,
    "emb_dim": 2048,
    "n_heads": 32,
    "head_dim": 128,
    "n_kv_groups": 4,
    "n_layers": 48,
    "hidden_dim": 6144,  # (unused: every block of this model is a mixture of experts)
    "tie_embeddings": False,
    "num_experts": 128,  # experts per block ...
    "num_experts_per_tok": 8,  # ... of which each token uses 8
    "moe_hidden_dim": 768,  # width of one expert
}


@dataclass(frozen=True, eq=False)  # eq from Mapping: equal to a dict with the same items
class Qwen3Config(LlamaConfig):
    """`LlamaConfig` plus QK-norm and the mixture-of-experts keys (dense when ``num_experts`` is 0)."""

    rms_eps: float = 1e-6  # Qwen3's epsilon (Llama's default is 1e-5)
    qk_norm: bool = True  # RMSNorm on every head's queries and keys
    num_experts: int = 0  # experts per feed forward layer; 0 = a plain SwiGLU layer (Qwen3 dense)
    num_experts_per_tok: int = 0  # experts each token uses (top-k); required when num_experts > 0
    moe_hidden_dim: int | None = None  # width of one expert; None = hidden_dim
    norm_topk_prob: bool = True  # rescale the k chosen router probabilities to sum to 1 (Qwen3-MoE does)

    _example_name = "QWEN3_0_6B_CONFIG"

    def __post_init__(self):
        super().__post_init__()
        _check_bool(self, "qk_norm")
        _check_bool(self, "norm_topk_prob")
        _check_int(self, "num_experts", 0)
        _check_int(self, "num_experts_per_tok", 0)
        if self.num_experts:
            if not 1 <= self.num_experts_per_tok <= self.num_experts:
                raise ConfigError(
                    f"num_experts_per_tok must be between 1 and num_experts ({self.num_experts}) in a mixture of "
                    f"experts, got {self.num_experts_per_tok}. Set it to how many experts each token uses (e.g. 2)."
                )
            if self.moe_hidden_dim is not None:
                _check_int(self, "moe_hidden_dim")
        elif self.num_experts_per_tok or self.moe_hidden_dim is not None:
            raise ConfigError("num_experts_per_tok and moe_hidden_dim describe a mixture of experts, but num_experts "
                              "is 0 (a dense model). Set num_experts > 0, or remove those keys.")

    @property
    def is_moe(self) -> bool:
        """True when the feed forward layers are mixtures of experts."""
        return self.num_experts > 0

    @property
    def expert_hidden_dim(self) -> int:
        """Width of one expert: `moe_hidden_dim`, or hidden_dim."""
        return self.moe_hidden_dim if self.moe_hidden_dim is not None else self.hidden_dim


# --- 2. The model ----------------------------------------------------------------------------------------


class Qwen3Model(LlamaModel):
    """Qwen3 (dense) or Qwen3-MoE: `LlamaModel` whose blocks have QK-norm and, with num_experts > 0, MoE layers."""

    architecture = "qwen3"
    config_class = Qwen3Config

    def make_block(self, cfg: Qwen3Config, index: int) -> TransformerBlock:
        """One block: Llama's, with QK-norm (if cfg.qk_norm) and a mixture of experts (if cfg.num_experts)."""
        ff = None  # None: TransformerBlock builds Llama's SwiGLU FeedForward
        if cfg.is_moe:
            ff = MoEFeedForward(cfg.emb_dim, cfg.expert_hidden_dim, cfg.num_experts, cfg.num_experts_per_tok,
                                norm_topk_prob=cfg.norm_topk_prob, dtype=cfg.torch_dtype, fast=cfg.fast)
        return TransformerBlock(cfg, qk_norm=cfg.qk_norm, ff=ff)


def build_empty_qwen3(cfg: Mapping | Qwen3Config, device: str | torch.device = "cpu") -> Qwen3Model:
    """A `Qwen3Model` whose parameters are allocated but not initialized (fill it with weights next)."""
    return build_empty_llama(cfg, device, model_class=Qwen3Model)


# --- 3. Hugging Face-format weights ------------------------------------------------------------------------
#
# Qwen3's names are Llama's (see buildllm.llama, section 6) plus, in every block N,
#
#     model.layers.N.self_attn.q_norm.weight / k_norm.weight   -> trf_blocks[N].att.q_norm / k_norm
#
# and in Qwen3-MoE the feed forward layer is a router and experts, in one of two layouts:
#
#   per expert (the published safetensors files):
#     model.layers.N.mlp.gate.weight                           (E, emb)  -> ff.gate.weight (the router)
#     model.layers.N.mlp.experts.e.{gate,up,down}_proj.weight            -> ff.fc1[e] / fc2[e] / fc3[e]
#   fused (what transformers 5 keeps in memory, e.g. Qwen3MoeForCausalLM.state_dict()):
#     model.layers.N.mlp.gate.weight                           (E, emb)
#     model.layers.N.mlp.experts.gate_up_proj   (E, 2*hidden, emb): rows [:hidden] gate, [hidden:] up
#     model.layers.N.mlp.experts.down_proj      (E, emb, hidden)
#
# `load_weights_into_qwen3` turns the fused layout into the per-expert one (checking its shapes first)
# and hands everything to `load_weights_into_llama`, which checks every key and shape before copying.

_FUSED = re.compile(r"^(?:model\.)?layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$")


def _expert_layer(model: Qwen3Model, layer: int, key: str) -> MoEFeedForward:
    if layer >= len(model.trf_blocks):
        raise ValueError(f"The state dict has {key!r}, but the model has only {len(model.trf_blocks)} blocks "
                         f"(n_layers). Build Qwen3Model with the checkpoint's n_layers.")
    ff = model.trf_blocks[layer].ff
    if not isinstance(ff, MoEFeedForward):
        raise ValueError(f"The state dict has experts ({key!r}), but the model is dense (num_experts=0). Build "
                         f"Qwen3Model with the checkpoint's num_experts, num_experts_per_tok and moe_hidden_dim.")
    return ff


def _unfuse_experts(model: Qwen3Model, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Split every fused experts tensor into per-expert tensors (views, no copies), after checking its shape."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        match = _FUSED.match(key)
        if match is None:
            out[key] = value
            continue
        layer, kind = int(match.group(1)), match.group(2)
        ff = _expert_layer(model, layer, key)
        num_experts, hidden, emb = ff.fc1.shape
        expected = (num_experts, 2 * hidden, emb) if kind == "gate_up_proj" else (num_experts, emb, hidden)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"Shape mismatch for {key!r}: the checkpoint has {tuple(value.shape)}, the model expects {expected} "
                f"(num_experts, {'2*moe_hidden_dim, emb_dim' if kind == 'gate_up_proj' else 'emb_dim, moe_hidden_dim'}"
                f"). Build Qwen3Model with the checkpoint's num_experts, moe_hidden_dim and emb_dim."
            )
        prefix = f"model.layers.{layer}.mlp.experts."
        for e in range(num_experts):
            if kind == "gate_up_proj":  # rows [:hidden] are the gate projection, rows [hidden:] the up projection
                out[f"{prefix}{e}.gate_proj.weight"] = value[e, :hidden]
                out[f"{prefix}{e}.up_proj.weight"] = value[e, hidden:]
            else:
                out[f"{prefix}{e}.down_proj.weight"] = value[e]
    return out


def fuse_experts(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse direction: per-expert keys -> transformers' fused ``experts.gate_up_proj``/``down_proj`` keys."""
    out: dict[str, Tensor] = {}
    experts: dict[str, dict[int, dict[str, Tensor]]] = {}
    pattern = re.compile(r"^(.*\.mlp\.experts\.)(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
    for key, value in state_dict.items():
        match = pattern.match(key)
        if match is None:
            out[key] = value
        else:
            experts.setdefault(match.group(1), {}).setdefault(int(match.group(2)), {})[match.group(3)] = value
    for prefix, by_index in experts.items():
        order = sorted(by_index)
        out[prefix + "gate_up_proj"] = torch.stack(
            [torch.cat([by_index[e]["gate_proj"], by_index[e]["up_proj"]]) for e in order])
        out[prefix + "down_proj"] = torch.stack([by_index[e]["down_proj"] for e in order])
    return out


def load_weights_into_qwen3(model: Qwen3Model, state_dict: Mapping[str, Tensor], *,
                            assign: bool = False) -> Qwen3Model:
    """Copy a Hugging Face-format Qwen3 or Qwen3-MoE state dict into `model` (in place) and return `model`.

    The experts may come per expert (published checkpoints) or fused (transformers 5's
    ``state_dict()``). Every key and shape is checked before the first value is copied:
    a state dict that does not fit raises an error naming the key and what to change,
    and leaves `model` as it was.
    """
    if not isinstance(model, Qwen3Model):
        raise TypeError(f"load_weights_into_qwen3 fills a Qwen3Model, got {type(model).__name__}. Build the model "
                        f"with Qwen3Model(cfg) (a Llama checkpoint goes into LlamaModel with load_weights_into_llama).")
    has_norm = any(key.endswith("self_attn.q_norm.weight") for key in state_dict)
    if has_norm != model.cfg.qk_norm:
        raise ValueError(
            "The checkpoint has QK-norm weights (self_attn.q_norm) but the model has qk_norm=False: build it with "
            "qk_norm=True." if has_norm else
            "The model has QK-norm (qk_norm=True) but the checkpoint has no self_attn.q_norm weights: is it a Llama "
            "checkpoint? Build the model with qk_norm=False, or load a Qwen3 checkpoint."
        )
    return load_weights_into_llama(model, _unfuse_experts(model, state_dict), assign=assign)


def qwen3_config_from_hf(hf_config: Mapping, **overrides) -> dict:
    """Turn a Hugging Face Qwen3 / Qwen3-MoE ``config.json`` (a dict) into our config dict (`overrides` change keys)."""
    model_type = hf_config.get("model_type", "qwen3")
    if model_type not in ("qwen3", "qwen3_moe"):
        raise ConfigError(f"This config describes a {model_type!r} model, not Qwen3 or Qwen3-MoE.")
    if hf_config.get("use_sliding_window"):
        raise ConfigError("Qwen3Model attends to the whole context; this config sets use_sliding_window=True.")
    if hf_config.get("attention_bias"):
        raise ConfigError("Qwen3Model has no biases in its attention layers; this config sets attention_bias=True.")
    if hf_config.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"Qwen3Model uses SiLU; this config asks for {hf_config.get('hidden_act')!r}.")
    rope = dict(hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {})
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ConfigError(f"Qwen3Model implements plain RoPE; this config asks for rope scaling {rope}.")
    n_heads = hf_config["num_attention_heads"]
    cfg = {
        "vocab_size": hf_config["vocab_size"],
        "context_length": hf_config["max_position_embeddings"],
        "emb_dim": hf_config["hidden_size"],
        "n_heads": n_heads,
        "head_dim": hf_config.get("head_dim") or hf_config["hidden_size"] // n_heads,
        "n_kv_groups": hf_config.get("num_key_value_heads") or n_heads,
        "n_layers": hf_config["num_hidden_layers"],
        "hidden_dim": hf_config["intermediate_size"],
        "rope_base": float(rope.get("rope_theta", hf_config.get("rope_theta", 10000.0))),
        "rms_eps": float(hf_config.get("rms_norm_eps", 1e-6)),
        "tie_embeddings": bool(hf_config.get("tie_word_embeddings", False)),
        "dtype": "float32",
        "qk_norm": True,
    }
    # Published config.json files say num_experts; transformers 5 writes num_local_experts.
    num_experts = hf_config.get("num_experts") or hf_config.get("num_local_experts") or 0
    if model_type == "qwen3_moe" and num_experts:
        if hf_config.get("decoder_sparse_step", 1) != 1 or hf_config.get("mlp_only_layers"):
            raise ConfigError("Qwen3Model makes every block a mixture of experts; this config mixes dense and MoE "
                              "blocks (decoder_sparse_step != 1 or mlp_only_layers).")
        cfg.update(num_experts=num_experts, num_experts_per_tok=hf_config["num_experts_per_tok"],
                   moe_hidden_dim=hf_config["moe_intermediate_size"],
                   norm_topk_prob=bool(hf_config.get("norm_topk_prob", False)))
    cfg.update(overrides)
    Qwen3Config.from_dict(cfg)  # fail here, with advice, on anything inconsistent
    return cfg
