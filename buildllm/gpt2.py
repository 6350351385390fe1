"""OpenAI's GPT-2 weights in our `GPTModel` (chapter 5).

GPT-2 checkpoints come in two formats: OpenAI's TensorFlow checkpoint and the
Hugging Face state dict (safetensors). Both name the same tensors; this module
works with the Hugging Face names, which read like this::

    wte.weight, wpe.weight                  token and position embeddings
    h.{i}.ln_1.weight / .bias               LayerNorm before attention   (block i)
    h.{i}.attn.c_attn.weight / .bias        query, key and value, side by side
    h.{i}.attn.c_proj.weight / .bias        attention output projection
    h.{i}.ln_2.weight / .bias               LayerNorm before the feed forward network
    h.{i}.mlp.c_fc.weight / .bias           feed forward: emb_dim -> 4*emb_dim
    h.{i}.mlp.c_proj.weight / .bias         feed forward: 4*emb_dim -> emb_dim
    ln_f.weight / .bias                     final LayerNorm

GPT-2 stores its linear layers as "Conv1D": weight shape (in_features,
out_features), the transpose of `nn.Linear`'s (out_features, in_features).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .model import GPTModel

# Keys a GPT-2 state dict may hold that have no counterpart to load:
# lm_head.weight is the same matrix as wte.weight (weight tying), and
# h.{i}.attn.bias / h.{i}.attn.masked_bias are constant causal-mask buffers, not
# weights (older checkpoints have them). The leading dot keeps "c_attn.bias" out.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_IGNORED_KEYS = ("lm_head.weight",)


def _strip_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the `transformer.` prefix that `GPT2LMHeadModel.state_dict()` puts on every key."""
    stripped = {}
    for key, value in state_dict.items():
        if key.startswith("transformer."):
            key = key[len("transformer."):]
        stripped[key] = value
    return stripped


def _take(weights: dict[str, Tensor], key: str, expected_shape: tuple[int, ...]) -> Tensor:
    """Pop `key` from `weights`, checking that it has `expected_shape` (GPT-2's layout)."""
    if key not in weights:
        raise KeyError(
            f"The GPT-2 state dict has no key {key!r} (expected shape {expected_shape}). "
            f"Is it a complete GPT-2 checkpoint, and does the model have as many layers as the checkpoint?"
        )
    tensor = weights.pop(key)
    if tuple(tensor.shape) != tuple(expected_shape):
        raise ValueError(
            f"Shape mismatch for {key!r}: the checkpoint has {tuple(tensor.shape)}, the model expects "
            f"{tuple(expected_shape)}. Build GPTModel with the checkpoint's configuration "
            f"(get_gpt2_config(model_size, context_length=1024, qkv_bias=True))."
        )
    return tensor


def _assign(param: Tensor, value: Tensor) -> None:
    """Copy `value` into the parameter `param` (shapes already checked)."""
    with torch.no_grad():
        param.copy_(value)


def load_weights_into_gpt(gpt: GPTModel, state_dict: Mapping[str, Tensor]) -> GPTModel:
    """Copy a Hugging Face-format GPT-2 state dict into `gpt` (in place) and return `gpt`."""
    if not gpt.cfg["qkv_bias"]:
        raise ValueError(
            "GPT-2 uses a bias in its query/key/value projections, but this GPTModel was built with "
            "qkv_bias=False. Build it with qkv_bias=True, e.g. GPTModel({**GPT_CONFIG_124M, 'qkv_bias': True})."
        )
    weights = _strip_prefix(state_dict)
    for key in list(weights):
        if key in _IGNORED_KEYS or key.endswith(_IGNORED_SUFFIXES):
            del weights[key]

    emb = gpt.cfg["emb_dim"]
    vocab = gpt.cfg["vocab_size"]
    context = gpt.cfg["context_length"]

    # Embeddings: same layout in both models.
    _assign(gpt.tok_emb.weight, _take(weights, "wte.weight", (vocab, emb)))
    _assign(gpt.pos_emb.weight, _take(weights, "wpe.weight", (context, emb)))

    for i, block in enumerate(gpt.trf_blocks):
        h = f"h.{i}."

        _assign(block.norm1.scale, _take(weights, h + "ln_1.weight", (emb,)))
        _assign(block.norm1.shift, _take(weights, h + "ln_1.bias", (emb,)))

        # c_attn holds W_query, W_key and W_value side by side: (emb, 3*emb).
        # Split it into three (emb, emb) blocks, then transpose each to nn.Linear's layout.
        c_attn_w = _take(weights, h + "attn.c_attn.weight", (emb, 3 * emb))
        q_w, k_w, v_w = torch.split(c_attn_w, emb, dim=1)  # 3 x (emb, emb)
        _assign(block.att.W_query.weight, q_w.T)
        _assign(block.att.W_key.weight, k_w.T)
        _assign(block.att.W_value.weight, v_w.T)
        c_attn_b = _take(weights, h + "attn.c_attn.bias", (3 * emb,))
        q_b, k_b, v_b = torch.split(c_attn_b, emb, dim=0)  # 3 x (emb,)
        _assign(block.att.W_query.bias, q_b)
        _assign(block.att.W_key.bias, k_b)
        _assign(block.att.W_value.bias, v_b)

        _assign(block.att.out_proj.weight, _take(weights, h + "attn.c_proj.weight", (emb, emb)).T)
        _assign(block.att.out_proj.bias, _take(weights, h + "attn.c_proj.bias", (emb,)))

        _assign(block.norm2.scale, _take(weights, h + "ln_2.weight", (emb,)))
        _assign(block.norm2.shift, _take(weights, h + "ln_2.bias", (emb,)))

        # Feed forward: ff.layers[0] is emb -> 4*emb, ff.layers[2] is 4*emb -> emb (layers[1] is GELU).
        _assign(block.ff.layers[0].weight, _take(weights, h + "mlp.c_fc.weight", (emb, 4 * emb)).T)
        _assign(block.ff.layers[0].bias, _take(weights, h + "mlp.c_fc.bias", (4 * emb,)))
        _assign(block.ff.layers[2].weight, _take(weights, h + "mlp.c_proj.weight", (4 * emb, emb)).T)
        _assign(block.ff.layers[2].bias, _take(weights, h + "mlp.c_proj.bias", (emb,)))

    _assign(gpt.final_norm.scale, _take(weights, "ln_f.weight", (emb,)))
    _assign(gpt.final_norm.shift, _take(weights, "ln_f.bias", (emb,)))

    # Weight tying: GPT-2 predicts tokens with the token embedding matrix itself.
    _assign(gpt.out_head.weight, gpt.tok_emb.weight)

    if weights:
        extra = sorted(weights)
        raise ValueError(
            f"The GPT-2 state dict has {len(extra)} keys this model has no place for, e.g. {extra[:5]}. "
            f"Does the checkpoint have more layers than n_layers={gpt.cfg['n_layers']}? "
            f"Build GPTModel with the checkpoint's configuration."
        )
    return gpt
