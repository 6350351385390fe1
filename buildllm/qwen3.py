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
from .llama import (LlamaConfig, LlamaModel, TransformerBlock, build_empty_llama, build_from_state_dict,
                    hf_config_common, load_weights_into_llama)
from .moe import MoEFeedForward

__all__ = ["Qwen3Config", "Qwen3Model", "QWEN3_0_6B_CONFIG", "QWEN3_30B_A3B_CONFIG", "load_weights_into_qwen3",
           "qwen3_config_from_hf", "build_empty_qwen3", "fuse_experts", "QWEN3_NAMES", "Qwen3Tokenizer",
           "fetch_qwen3", "load_qwen3", "load_qwen3_folder", "load_qwen3_tokenizer", "qwen3_folder"]

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
    cfg = {**hf_config_common(hf_config, "Qwen3Model"), "qk_norm": True}
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


# --- 4. The published Qwen3-0.6B: its tokenizer and chat format ----------------------------------------------
#
# ``--weights qwen3-0.6b`` loads Hugging Face's Qwen/Qwen3-0.6B (Apache-2.0): config.json -> `qwen3_config_from_hf`
# -> `Qwen3Model` -> `load_weights_into_qwen3` from model.safetensors, and the tokenizer from tokenizer.json
# through Hugging Face's `tokenizers` library (a byte-level BPE of 151,643 tokens plus special tokens; writing it
# ourselves, as `buildllm.smollm2` does for SmolLM2, would teach nothing new here). The files are fetched into
# <models_dir>/qwen3/Qwen3-0.6B/ where Hugging Face is reachable; elsewhere the error says what to fetch.

QWEN3_NAMES = ("qwen3-0.6b",)
QWEN3_IM_START, QWEN3_IM_END, QWEN3_ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
EMPTY_THINK = "<think>\n\n</think>\n\n"  # written after "<|im_start|>assistant\n" when thinking is off


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError:
        from .sources import WeightsError

        raise WeightsError("Qwen3's tokenizer is read with Hugging Face's tokenizers library, which is not installed: "
                           "pip install tokenizers") from None
    return tokenizers


class Qwen3Tokenizer:
    """Qwen3's tokenizer (Hugging Face's ``tokenizer.json``, run by the `tokenizers` library) with tiktoken's interface.

    ``encode(text, allowed_special=...)``: special tokens (``<|im_start|>`` ...) written in the
    text raise ValueError unless allowed, as in tiktoken; ``decode(ids)``; ``n_vocab``;
    ``eot_token`` (``<|endoftext|>``); for chat ``im_start_id``, ``im_end_id`` (``<|im_end|>``
    ends every turn: the token to stop at) and `apply_chat_template`.
    """

    def __init__(self, tokenizer):
        self.hf = tokenizer
        self.padded_vocab: int | None = None  # the model's vocab_size, set by the loader (see `decode`)
        added = tokenizer.get_added_tokens_decoder()  # {id: AddedToken}
        self.special_tokens = {token.content: i for i, token in added.items() if token.special}
        missing = [t for t in (QWEN3_IM_START, QWEN3_IM_END) if t not in self.special_tokens]
        if missing:
            raise ValueError(f"This tokenizer has no special token(s) {missing}: it is not a Qwen chat tokenizer.")
        self.eot_token = self.special_tokens.get(QWEN3_ENDOFTEXT, self.special_tokens[QWEN3_IM_END])
        self.im_start_id = self.special_tokens[QWEN3_IM_START]
        self.im_end_id = self.special_tokens[QWEN3_IM_END]
        # Special tokens are found by `encode` itself (to honour allowed_special); the library encodes the text
        # between them with special tokens read as plain text. Added tokens that are not special (<think>,
        # </think>) are still recognised by the library, as in Qwen's own tokenizer.
        self.hf.encode_special_tokens = True
        names = sorted(self.special_tokens, key=len, reverse=True)
        self._special = re.compile("|".join(re.escape(name) for name in names))

    @classmethod
    def from_file(cls, tokenizer_json) -> Qwen3Tokenizer:
        """Read Hugging Face's ``tokenizer.json`` (ValueError if it is not a Qwen chat tokenizer)."""
        tokenizers = _import_tokenizers()
        try:
            return cls(tokenizers.Tokenizer.from_file(str(tokenizer_json)))
        except Exception as exc:  # the library raises plain Exception for a malformed file
            if isinstance(exc, ValueError):
                raise
            raise ValueError(f"{tokenizer_json} cannot be read as a tokenizer.json ({exc}).") from None

    @property
    def n_vocab(self) -> int:
        """Number of token IDs the tokenizer can produce (the model's vocab_size may be larger: padding)."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, allowed_special="none", disallowed_special="all") -> list[int]:
        """Return the token IDs of `text`; special tokens as in tiktoken (allowed: one ID; disallowed: ValueError)."""
        if allowed_special == "all":
            allowed = set(self.special_tokens)
        elif allowed_special == "none":
            allowed = set()
        else:
            allowed = set(allowed_special)
        disallowed = set(self.special_tokens) - allowed if disallowed_special == "all" else set(disallowed_special)
        ids: list[int] = []
        start = 0
        for match in self._special.finditer(text):
            token = match.group()
            if token in allowed:
                ids += self._plain(text[start:match.start()])
                ids.append(self.special_tokens[token])
                start = match.end()
            elif token in disallowed:
                raise ValueError(f"The text contains the special token {token!r}. Pass allowed_special={{{token!r}}} "
                                 f"(or 'all') to encode it as a special token.")
        return ids + self._plain(text[start:])

    def _plain(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids if text else []

    def decode(self, ids) -> str:
        """Return the text of token IDs `ids`, special tokens included.

        The model's vocabulary is padded beyond the tokenizer's (Qwen3-0.6B: 151,936 rows for
        151,669 tokens); those IDs below `padded_vocab` have no text and decode to nothing,
        as in Hugging Face's tokenizer. Other IDs raise ValueError.
        """
        ids = [int(i) for i in ids]
        limit = max(self.n_vocab, self.padded_vocab or 0)
        bad = next((i for i in ids if not 0 <= i < limit), None)
        if bad is not None:
            raise ValueError(f"Token ID {bad} is not in Qwen3's vocabulary (IDs 0..{limit - 1}).")
        return self.hf.decode([i for i in ids if i < self.n_vocab], skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"Qwen3Tokenizer(n_vocab={self.n_vocab}, special_tokens={len(self.special_tokens)})"

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tokenize: bool = False):
        """Write `messages` ([{"role": "user", "content": "..."}, ...]) in Qwen3's chat format, thinking off.

        Every turn is ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` (roles system, user,
        assistant; no default system message). With `add_generation_prompt` the model's turn
        follows: ``<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n``. That empty think block is
        how Qwen3's template switches its "thinking" off (``enable_thinking=False``): the model
        answers at once instead of reasoning in a ``<think>`` block first. Only this
        non-thinking chat is implemented (no thinking mode, no tools). As Qwen3's template
        does, an earlier answer that holds a ``<think>...</think>`` block keeps only what
        follows it. ``tokenize=True`` returns the token IDs instead of the text.
        """
        parts = []
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str) \
                    or not isinstance(message.get("content"), str):
                raise ValueError(f"Message {i} must be a dict with string 'role' and 'content', got {message!r}.")
            role, content = message["role"], message["content"]
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"Message {i} has role {role!r}; Qwen3Tokenizer's chat format knows system, user "
                                 f"and assistant (no tools).")
            if role == "system" and i:
                raise ValueError(f"Message {i} is a system message; only the first message may be one.")
            if role == "assistant" and "</think>" in content:
                content = content.split("</think>")[-1].lstrip("\n")
            parts.append(f"{QWEN3_IM_START}{role}\n{content}{QWEN3_IM_END}\n")
        if add_generation_prompt:
            parts.append(f"{QWEN3_IM_START}assistant\n{EMPTY_THINK}")
        text = "".join(parts)
        return self.encode(text, allowed_special={QWEN3_IM_START, QWEN3_IM_END}) if tokenize else text


# --- 5. The published Qwen3-0.6B: files and loading ----------------------------------------------------------


def qwen3_folder(name: str = "qwen3-0.6b", models_dir=None):
    """The folder of Qwen3 `name`'s Hugging Face files: <models_dir>/qwen3/Qwen3-0.6B."""
    from .sources import models_dir as models_folder
    from .sources import qwen3_hf_files

    return (models_folder(models_dir) / qwen3_hf_files(name)[0].relpath).parent


def _file_problem(path, spec) -> str | None:
    """None if `path` is usable (present; equal to its download record, if it has one), else why not."""
    from .download import ChecksumError, verify_file

    if not path.exists():
        return "missing"
    try:
        verify_file(path, spec.sha256, spec.size)
    except ChecksumError as exc:
        return f"present but damaged ({exc})"
    return None


def _unavailable(name: str, root, problems: dict, reason: str) -> str:
    from .sources import QWEN3_FILE_NOTES, QWEN3_HF_REPOS, qwen3_hf_files

    files = {spec.relpath.rsplit("/", 1)[1]: spec for spec in qwen3_hf_files(name)}
    folder = qwen3_folder(name, root).resolve()
    listed = []
    for file, problem in problems.items():
        note = QWEN3_FILE_NOTES.get(file)
        listed.append(f"{file}{f' ({note})' if note else ''}{'' if problem == 'missing' else ': ' + problem}")
    lines = [
        f"Qwen3 weights {name} (Hugging Face {QWEN3_HF_REPOS[name]}, Apache-2.0) are not available: {reason}",
        f"Looked in: {folder} (the models folder; --models-dir or the environment variable BUILDLLM_MODELS_DIR "
        f"changes it)",
        "Missing or unusable: " + "; ".join(listed),
        f"To fix: on a machine that reaches Hugging Face run python ch05/gpt_download.py --weights {name} and copy "
        f"{folder} here; or download these files by hand into {folder}:",
    ]
    lines += [f"    {files[file].urls[0]}" for file in problems]
    return "\n".join(lines)


def fetch_qwen3(name: str = "qwen3-0.6b", models_dir=None, progress: bool = True, retries: int = 3, *,
                download: bool = True):
    """Make sure Qwen3 `name`'s four Hugging Face files lie usable in the models folder; return their folder.

    Files already there are checked against their download record (if they have one) and kept;
    missing ones are downloaded from Hugging Face when it is reachable (and `download`).
    Raises `WeightsUnavailableError` saying which files to fetch and where to put them.
    """
    from .download import ChecksumError, DownloadError, download_file, reachable
    from .sources import WeightsUnavailableError, qwen3_hf_files
    from .sources import models_dir as models_folder

    root = models_folder(models_dir)
    specs = qwen3_hf_files(name)
    problems = {}
    for spec in specs:
        problem = _file_problem(root / spec.relpath, spec)
        if problem is not None:
            problems[spec.relpath.rsplit("/", 1)[1]] = problem
    if not problems:
        return qwen3_folder(name, root)
    if not download:
        raise WeightsUnavailableError(_unavailable(name, root, problems, "the files are not in the models folder "
                                                                         "(downloading was not asked for)."))
    todo = [spec for spec in specs if spec.relpath.rsplit("/", 1)[1] in problems]
    if not reachable(todo[0].urls, timeout=5.0):
        raise WeightsUnavailableError(_unavailable(name, root, problems, "Hugging Face cannot be reached from this "
                                                                         "machine."))
    for i, spec in enumerate(todo):
        try:
            download_file(spec.urls, root / spec.relpath, size=spec.size, sha256=spec.sha256, retries=retries,
                          progress=progress)
        except (DownloadError, ChecksumError) as exc:
            left = {file: problems[file] for file in (s.relpath.rsplit("/", 1)[1] for s in todo[i:])}
            reason = f"downloading {spec.relpath} failed.\n{exc}"
            raise WeightsUnavailableError(_unavailable(name, root, left, reason)) from None
    return qwen3_folder(name, root)


def load_qwen3_tokenizer(folder) -> Qwen3Tokenizer:
    """The tokenizer of a Qwen3 folder (its ``tokenizer.json``), as a `Qwen3Tokenizer`; raises `WeightsError`."""
    from pathlib import Path

    from .sources import WeightsError

    path = Path(folder) / "tokenizer.json"
    try:
        return Qwen3Tokenizer.from_file(path)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path} cannot be used as Qwen3's tokenizer: {exc} Delete it and download it again.") \
            from None


def load_qwen3_folder(folder, device: str | torch.device = "cpu", dtype: str = "float32"):
    """Load a folder of Hugging Face Qwen3 files (config.json, model.safetensors, tokenizer.json) -> (model, tokenizer).

    The model is a `Qwen3Model` in eval mode on `device`, its weights converted to `dtype`
    (the published bfloat16 becomes float32 by default: CPUs compute bfloat16 slowly).
    Raises `WeightsError` naming the file that cannot be used and what to do.
    """
    import json
    from pathlib import Path

    from .sources import WeightsError

    folder = Path(folder)
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / f).is_file()]
    if missing:
        raise WeightsError(f"{folder} lacks {', '.join(missing)}: a Qwen3 folder needs config.json, "
                           f"model.safetensors and tokenizer.json (as on Hugging Face).")
    try:
        hf_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if not isinstance(hf_config, dict):
            raise ValueError("it does not hold a JSON object")
        cfg = qwen3_config_from_hf(hf_config, dtype=dtype)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # (ConfigError is a ValueError)
        raise WeightsError(f"{folder / 'config.json'} is not a usable Qwen3 config ({type(exc).__name__}: {exc}).") \
            from None
    tokenizer = load_qwen3_tokenizer(folder)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = folder / "model.safetensors"
    try:
        state_dict = load_file(weights)
    except (OSError, SafetensorError) as exc:
        raise WeightsError(f"{weights} cannot be read as a safetensors file ({exc}): it is truncated or corrupt. "
                           f"Delete it and download it again.") from None
    model = build_from_state_dict(cfg, state_dict, weights, device, model_class=Qwen3Model,
                                  load=load_weights_into_qwen3)
    if tokenizer.n_vocab > model.cfg.vocab_size:
        raise WeightsError(f"{folder / 'tokenizer.json'} has {tokenizer.n_vocab} tokens but the model only "
                           f"{model.cfg.vocab_size} (config.json vocab_size): they do not belong together.")
    tokenizer.padded_vocab = model.cfg.vocab_size
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state_dict.values()})
    model.weights_source = f"{weights} (safetensors, {'/'.join(dtypes)}, loaded as {dtype})"
    return model.eval(), tokenizer


def load_qwen3(name: str = "qwen3-0.6b", models_dir=None, device: str | torch.device = "cpu", progress: bool = True,
               *, dtype: str = "float32", download: bool = True):
    """Load Qwen3 `name` ("qwen3-0.6b") from the models folder, fetching its files first if needed.

    Returns (`Qwen3Model` in eval mode, `Qwen3Tokenizer`). Raises `WeightsUnavailableError`
    (which files to fetch, where to put them) when the files are neither there nor
    downloadable, and `WeightsError` when a file there cannot be used.
    """
    from .sources import QWEN3_HF_REPOS

    if name not in QWEN3_NAMES:
        raise ValueError(f"Unknown Qwen3 name {name!r}; choose one of {', '.join(QWEN3_NAMES)}.")
    folder = fetch_qwen3(name, models_dir, progress, download=download)
    model, tokenizer = load_qwen3_folder(folder, device, dtype)
    model.weights_source = f"Hugging Face {QWEN3_HF_REPOS[name]}: {model.weights_source}"
    return model, tokenizer
