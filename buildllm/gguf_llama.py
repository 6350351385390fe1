"""Reading a Llama model from a GGUF file, llama.cpp's format (chapter 5 bonus: the offline SmolLM2).

A GGUF file holds, one after the other: a header, key/value metadata (the
architecture's hyperparameters, the tokenizer's tokens and merges, the chat
template ...) and the tensors, most of them *quantized*: stored in blocks of 32
numbers that share a scale, a few bits per number. We read the file with the
`gguf` package (maintained by llama.cpp), and turn what it holds into what
`buildllm.llama` understands:

1. the metadata -> our `LlamaConfig` dict (`llama_config_from_gguf`);
2. every tensor -> float32 (`dequantize`; Q8_0 and Q4_1 written out below, other
   types by the `gguf` package) under its Hugging Face name (``blk.3.attn_q.weight``
   -> ``model.layers.3.self_attn.q_proj.weight``), so `load_weights_into_llama`
   loads it;
3. the query and key weights back into Hugging Face's row order
   (`unpermute_qk`). llama.cpp's RoPE rotates *adjacent* pairs of dimensions
   (0,1), (2,3) ...; Hugging Face's (and ours) rotates dimension i with
   i + head_dim/2. The converter that wrote the file reordered the rows of W_q
   and W_k so that llama.cpp's rotation gives the same result; we undo that.
   Forgetting it still gives a model that runs, only a much worse one (SmolLM2 on
   the-verdict, windows of 256 tokens: cross-entropy 5.48 instead of 3.84 per token).

Quantization formats (one block = 32 weights of one row):

- ``Q8_0``: 2 bytes float16 scale d, then 32 int8 q: w = d * q
- ``Q4_1``: 2 bytes float16 scale d, 2 bytes float16 minimum m, then 16 bytes of
  4-bit q (the low nibbles are weights 0..15, the high nibbles weights 16..31):
  w = d * q + m
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .llama import LlamaConfig

__all__ = [
    "GGUFError", "GGUFModel", "open_gguf", "read_llama_gguf", "llama_config_from_gguf", "gguf_tokenizer_data",
    "dequantize", "dequantize_q8_0", "dequantize_q4_1", "permute_qk", "unpermute_qk", "gguf_to_hf_name",
]

BLOCK = 32  # weights per quantization block (Q8_0, Q4_1)


class GGUFError(ValueError):
    """A GGUF file cannot be used (unreadable, truncated, another architecture ...); the message says what to do."""


# --- Dequantization ----------------------------------------------------------------------------------


# NumPy, not PyTorch, for these few element-wise steps: NumPy runs them in one thread, which is
# as fast here and never waits for a second thread that another busy process holds up.


def _blocks(raw: np.ndarray, bytes_per_block: int) -> np.ndarray:
    """The raw bytes of a quantized tensor as a (num_blocks, bytes_per_block) uint8 array."""
    flat = np.asarray(raw, dtype=np.uint8).reshape(-1)
    if flat.size % bytes_per_block:
        raise GGUFError(f"A quantized tensor has {flat.size} bytes, not a whole number of {bytes_per_block}-byte "
                        f"blocks: the file is corrupt.")
    return flat.reshape(-1, bytes_per_block)


def _float16(two_bytes: np.ndarray) -> np.ndarray:
    """(num_blocks, 2) uint8 -> (num_blocks, 1) float32, read as little-endian float16."""
    return np.ascontiguousarray(two_bytes).view("<f2").astype(np.float32)


def dequantize_q8_0(raw: np.ndarray, rows: int, cols: int) -> Tensor:
    """Q8_0 blocks (2-byte scale d, 32 int8 q) -> float32 (rows, cols): w = d * q."""
    blocks = _blocks(raw, 2 + BLOCK)  # (num_blocks, 34)
    d = _float16(blocks[:, :2])  # (num_blocks, 1)
    q = np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.float32)  # (num_blocks, 32)
    return torch.from_numpy((d * q).reshape(rows, cols))


def dequantize_q4_1(raw: np.ndarray, rows: int, cols: int) -> Tensor:
    """Q4_1 blocks (2-byte scale d, 2-byte minimum m, 16 bytes of 4-bit q) -> float32 (rows, cols): w = d * q + m."""
    blocks = _blocks(raw, 4 + BLOCK // 2)  # (num_blocks, 20)
    d = _float16(blocks[:, 0:2])  # (num_blocks, 1)
    m = _float16(blocks[:, 2:4])
    packed = blocks[:, 4:]  # (num_blocks, 16): two 4-bit numbers per byte
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32)  # (num_blocks, 32): low nibbles first
    return torch.from_numpy((d * q + m).reshape(rows, cols))


def dequantize(tensor) -> Tensor:
    """Return a tensor of a `gguf.GGUFReader` as float32, in PyTorch's shape (rows, cols) or (n,)."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import dequantize as gguf_dequantize

    shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists the fastest-changing dimension first
    rows, cols = (int(np.prod(shape[:-1])), shape[-1]) if len(shape) > 1 else (1, shape[0])
    kind = tensor.tensor_type
    if kind == Q.F32:
        out = torch.from_numpy(np.array(tensor.data, dtype=np.float32))
    elif kind == Q.F16:
        out = torch.from_numpy(np.asarray(tensor.data, dtype=np.float16).astype(np.float32))
    elif kind == Q.Q8_0:
        out = dequantize_q8_0(tensor.data, rows, cols)
    elif kind == Q.Q4_1:
        out = dequantize_q4_1(tensor.data, rows, cols)
    else:  # any other format the gguf package knows (Q4_K, Q6_K, BF16 ...)
        try:
            out = torch.from_numpy(np.ascontiguousarray(gguf_dequantize(tensor.data, kind), dtype=np.float32))
        except NotImplementedError:
            raise GGUFError(f"Tensor {tensor.name} uses the quantization type {kind.name}, which the installed gguf "
                            f"package cannot read. Upgrade it (pip install -U gguf) or use another file.") from None
    if out.numel() != rows * cols:
        raise GGUFError(f"Tensor {tensor.name} should hold {rows * cols} numbers ({shape}), but has {out.numel()}: "
                        f"the file is corrupt.")
    return out.reshape(shape)


# --- Q/K row order ------------------------------------------------------------------------------------


def permute_qk(weight: Tensor, n_heads: int) -> Tensor:
    """Hugging Face's row order of W_q or W_k (n_heads * head_dim, d_in) -> llama.cpp's (what a GGUF stores).

    Within each head, rows [0 .. head_dim/2) and [head_dim/2 .. head_dim) are interleaved:
    0, half, 1, half + 1, ... so that adjacent rows form RoPE's pairs.
    """
    out_dim, d_in = weight.shape
    head_dim = out_dim // n_heads
    return weight.reshape(n_heads, 2, head_dim // 2, d_in).transpose(1, 2).reshape(out_dim, d_in)


def unpermute_qk(weight: Tensor, n_heads: int) -> Tensor:
    """llama.cpp's row order of W_q or W_k -> Hugging Face's (the inverse of `permute_qk`)."""
    out_dim, d_in = weight.shape
    head_dim = out_dim // n_heads
    return weight.reshape(n_heads, head_dim // 2, 2, d_in).transpose(1, 2).reshape(out_dim, d_in)


# --- Names --------------------------------------------------------------------------------------------

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def gguf_to_hf_name(name: str) -> str:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight`` (KeyError for names a Llama lacks)."""
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}"
    raise KeyError(name)


# --- Reading a file -----------------------------------------------------------------------------------


def open_gguf(path: str | os.PathLike):
    """Open `path` with `gguf.GGUFReader`; a file that is not a complete GGUF raises `GGUFError` saying what to do."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"No GGUF file at {path}.")
    try:
        return GGUFReader(path)
    except PermissionError:
        raise GGUFError(f"Cannot read {path}: permission denied. Fix the file's permissions.") from None
    except Exception as exc:  # the reader fails with ValueError, IndexError, struct/numpy errors ... on bad bytes
        raise GGUFError(
            f"{path} is not a readable GGUF file ({type(exc).__name__}: {str(exc)[:120]}). It is truncated, corrupt "
            f"or not a GGUF at all. Delete it and fetch it again."
        ) from None


def _value(reader, key: str, default=None):
    """The value of metadata `key` (strings, numbers, lists), or `default` if the file lacks it."""
    field = reader.fields.get(key)
    if field is None:
        return default
    try:
        return field.contents()
    except Exception as exc:
        raise GGUFError(f"The metadata {key!r} of {reader.data.filename} cannot be read ({exc}): the file is "
                        f"corrupt. Delete it and fetch it again.") from None


def _architecture(reader) -> str:
    arch = _value(reader, "general.architecture")
    if arch != "llama":
        raise GGUFError(
            f"{reader.data.filename} holds a {arch!r} model, but only Llama-architecture GGUF files can be read "
            f"into LlamaModel (general.architecture = 'llama'). Use the GGUF of a Llama-style model such as SmolLM2."
        )
    return arch


def _short_float(value) -> float:
    """A float32 from the file as the shortest decimal that rounds to it (1e-05, not 9.999999747378752e-06)."""
    return float(str(np.float32(value)))


def llama_config_from_gguf(reader, dtype: str = "float32") -> dict:
    """Our `LlamaConfig` dict from the ``llama.*`` metadata of an open GGUF file."""
    _architecture(reader)

    def need(key: str):
        value = _value(reader, f"llama.{key}")
        if value is None:
            raise GGUFError(f"{reader.data.filename} lacks the metadata 'llama.{key}' that every Llama GGUF has: "
                            f"the file is incomplete. Use another file.")
        return value

    scaling = _value(reader, "llama.rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise GGUFError(f"{reader.data.filename} uses RoPE scaling {scaling!r}; LlamaModel implements plain RoPE only.")
    n_heads = int(need("attention.head_count"))
    emb_dim = int(need("embedding_length"))
    tokens = _value(reader, "tokenizer.ggml.tokens")
    vocab_size = _value(reader, "llama.vocab_size") or (len(tokens) if tokens is not None else None)
    if vocab_size is None:
        raise GGUFError(f"{reader.data.filename} states no vocabulary size (llama.vocab_size or tokenizer tokens).")
    embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    cfg = {
        "vocab_size": int(vocab_size),
        "context_length": int(need("context_length")),
        "emb_dim": emb_dim,
        "n_heads": n_heads,
        "n_kv_groups": int(_value(reader, "llama.attention.head_count_kv", n_heads)),
        "n_layers": int(need("block_count")),
        "hidden_dim": int(need("feed_forward_length")),
        "rope_base": _short_float(_value(reader, "llama.rope.freq_base", 10000.0)),
        "rms_eps": _short_float(need("attention.layer_norm_rms_epsilon")),
        # A GGUF of a tied model stores no separate output matrix.
        "tie_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
        "dtype": dtype,
    }
    rope_dim = _value(reader, "llama.rope.dimension_count")
    if rope_dim is not None and int(rope_dim) != emb_dim // n_heads:
        cfg["head_dim"] = int(rope_dim)
    if embd is not None and int(embd.shape[-1]) != cfg["vocab_size"]:
        raise GGUFError(f"{reader.data.filename}: token_embd.weight has {int(embd.shape[-1])} rows but the vocabulary "
                        f"has {cfg['vocab_size']} tokens: the file is inconsistent.")
    try:
        LlamaConfig.from_dict(cfg)
    except ValueError as exc:
        raise GGUFError(f"{reader.data.filename} describes a model LlamaModel cannot build: {exc}") from None
    return cfg


def gguf_tokenizer_data(reader) -> dict:
    """The tokenizer stored in an open GGUF file: tokens, token types, merges, pre-tokenizer, chat template, ids."""
    data = {
        "model": _value(reader, "tokenizer.ggml.model"),
        "pre": _value(reader, "tokenizer.ggml.pre"),
        "tokens": _value(reader, "tokenizer.ggml.tokens"),
        "token_types": _value(reader, "tokenizer.ggml.token_type"),
        "merges": _value(reader, "tokenizer.ggml.merges"),
        "chat_template": _value(reader, "tokenizer.chat_template"),
    }
    for name in ("bos", "eos", "unknown", "padding"):
        data[f"{name}_token_id"] = _value(reader, f"tokenizer.ggml.{name}_token_id")
    if data["model"] != "gpt2" or not data["tokens"] or not data["merges"]:
        raise GGUFError(f"{reader.data.filename} holds no byte-level BPE tokenizer (tokenizer.ggml.model = "
                        f"{data['model']!r}, expected 'gpt2' with tokens and merges).")
    return data


@dataclass
class GGUFModel:
    """What a Llama GGUF file holds, read and checked: config, float32 weights (Hugging Face names), tokenizer."""

    config: dict
    state_dict: dict[str, Tensor]
    tokenizer: dict
    metadata: dict = field(default_factory=dict)  # general.* (name, license, ...)
    tensor_types: dict = field(default_factory=dict)  # how many tensors of each storage type, e.g. {"Q4_1": 210}


def read_llama_gguf(path: str | os.PathLike, reader=None) -> GGUFModel:
    """Read a Llama GGUF into float32 tensors with Hugging Face names and Q/K in Hugging Face's row order.

    Raises `GGUFError` for a file that is unreadable, of another architecture, holds
    tensors a Llama has not (or lacks some), or whose numbers are not finite.
    """
    reader = reader if reader is not None else open_gguf(path)
    cfg = llama_config_from_gguf(reader)
    tokenizer = gguf_tokenizer_data(reader)
    head_dim = cfg.get("head_dim") or cfg["emb_dim"] // cfg["n_heads"]
    state_dict: dict[str, Tensor] = {}
    types: Counter[str] = Counter()
    for tensor in reader.tensors:
        try:
            hf_name = gguf_to_hf_name(tensor.name)
        except KeyError:
            raise GGUFError(f"{path}: the tensor {tensor.name!r} has no place in a Llama model (this reader knows "
                            f"token_embd, output_norm, output and blk.N.attn_*/ffn_*). Is it a Llama GGUF?") from None
        weight = dequantize(tensor)
        if not np.isfinite(weight.numpy()).all():
            raise GGUFError(f"{path}: tensor {tensor.name} holds NaN or infinite numbers: the file is corrupt. Delete "
                            f"it and fetch it again.")
        if tensor.name.endswith("attn_q.weight"):
            weight = unpermute_qk(weight, cfg["n_heads"])
        elif tensor.name.endswith("attn_k.weight"):
            weight = unpermute_qk(weight, cfg["n_kv_groups"])
        state_dict[hf_name] = weight
        types[tensor.tensor_type.name] += 1
    expected = {"model.embed_tokens.weight", "model.norm.weight"}
    for i in range(cfg["n_layers"]):
        expected |= {f"model.layers.{i}.{name}" for name in _BLOCK_NAMES.values()}
    missing = sorted(expected - set(state_dict))
    if missing:
        raise GGUFError(f"{path} lacks {len(missing)} tensor(s) of its {cfg['n_layers']}-layer model, e.g. "
                        f"{missing[:3]}: the file is incomplete.")
    extra = sorted(set(state_dict) - expected - {"lm_head.weight"})
    if extra:
        raise GGUFError(f"{path} holds {len(extra)} tensor(s) its {cfg['n_layers']}-layer metadata has no place for, "
                        f"e.g. {extra[:3]}: the file is inconsistent. Delete it and fetch it again.")
    q_rows = state_dict["model.layers.0.self_attn.q_proj.weight"].shape[0]
    if q_rows != cfg["n_heads"] * head_dim:
        raise GGUFError(f"{path}: attn_q has {q_rows} rows, but the metadata says {cfg['n_heads']} heads of "
                        f"{head_dim} dimensions: the file is inconsistent.")
    metadata = {key: _value(reader, key) for key in reader.fields if key.startswith("general.")}
    return GGUFModel(cfg, state_dict, tokenizer, metadata, dict(types))
