"""buildllm.gguf_llama on tiny GGUF files the tests write themselves (Q8_0, Q4_1, F32; permuted Q/K)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize
from tiny_gguf import tiny_config, write_tiny_llama_gguf

from buildllm.gguf_llama import (
    GGUFError,
    dequantize_q4_1,
    dequantize_q8_0,
    gguf_to_hf_name,
    permute_qk,
    read_llama_gguf,
    unpermute_qk,
)
from buildllm.llama import (
    LlamaModel,
    apply_rope,
    compute_rope_params,
    load_weights_into_llama,
)


@pytest.mark.parametrize("kind, ours", [(Q.Q8_0, dequantize_q8_0), (Q.Q4_1, dequantize_q4_1)])
def test_our_dequantization_equals_the_gguf_package_bit_for_bit(kind, ours):
    rng = np.random.default_rng(0)
    weights = (rng.normal(0, 1, (48, 96)) * rng.uniform(0.01, 3, (48, 1))).astype(np.float32)
    raw = quantize(weights, kind)
    expected = torch.from_numpy(gguf_dequantize(raw, kind))
    got = ours(raw, 48, 96)
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    # 4 or 8 bits per weight: close to the original, not equal.
    error = (got - torch.from_numpy(weights)).abs().max() / np.abs(weights).max()
    assert 0 < error < (0.1 if kind == Q.Q4_1 else 0.01)


def test_unpermute_inverts_permute_and_puts_rope_pairs_back():
    w = torch.randn(4 * 16, 32)
    assert torch.equal(unpermute_qk(permute_qk(w, 4), 4), w)
    # llama.cpp rotates adjacent pairs (0,1), (2,3) ...; we rotate (i, i + head_dim/2). On the permuted rows,
    # llama.cpp's rotation gives the same attention scores as ours on the original rows.
    n_heads, head_dim, n = 4, 16, 10
    wq, wk, x = torch.randn(n_heads * head_dim, 32), torch.randn(n_heads * head_dim, 32), torch.randn(n, 32)
    cos, sin = compute_rope_params(head_dim, 10000.0, n)

    def heads(t):  # (n, heads * head_dim) -> (1, heads, n, head_dim)
        return t.view(n, n_heads, head_dim).transpose(0, 1).unsqueeze(0)

    q, k = heads(x @ wq.T), heads(x @ wk.T)
    ours = apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)

    def rope_adjacent_pairs(t):
        even, odd = t[..., 0::2], t[..., 1::2]
        c, s = cos[:, : head_dim // 2], sin[:, : head_dim // 2]
        return torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2)

    qp, kp = heads(x @ permute_qk(wq, n_heads).T), heads(x @ permute_qk(wk, n_heads).T)
    theirs = rope_adjacent_pairs(qp) @ rope_adjacent_pairs(kp).transpose(-1, -2)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-5)


def test_names_map_to_hugging_face():
    assert gguf_to_hf_name("blk.12.attn_q.weight") == "model.layers.12.self_attn.q_proj.weight"
    assert gguf_to_hf_name("blk.0.ffn_down.weight") == "model.layers.0.mlp.down_proj.weight"
    assert gguf_to_hf_name("token_embd.weight") == "model.embed_tokens.weight"
    with pytest.raises(KeyError):
        gguf_to_hf_name("blk.0.attn_qkv.weight")


@pytest.mark.parametrize("tie", [True, False])
def test_reader_returns_the_stored_tensors(tmp_path, tie):
    written = write_tiny_llama_gguf(tmp_path / "tiny.gguf", tie=tie)
    model = read_llama_gguf(tmp_path / "tiny.gguf")
    assert model.config == written["config"]
    assert set(model.state_dict) == set(written["state_dict"])
    for name, expected in written["state_dict"].items():
        assert torch.equal(model.state_dict[name], expected), name
    assert model.tensor_types == {"Q8_0": 1 if tie else 2, "Q4_1": 14, "F32": 5}
    assert model.tokenizer["tokens"] == written["tokenizer"]["tokens"]
    assert model.tokenizer["merges"] == written["tokenizer"]["merges"]
    assert model.tokenizer["pre"] == "smollm" and "<|im_start|>" in model.tokenizer["chat_template"]
    assert model.metadata["general.name"] == "tiny-test-llama"


def test_gguf_weights_in_our_model_equal_transformers_llama(tmp_path):
    transformers = pytest.importorskip("transformers")
    written = write_tiny_llama_gguf(tmp_path / "tiny.gguf", tie=True)
    ours = load_weights_into_llama(LlamaModel(read_llama_gguf(tmp_path / "tiny.gguf").config).eval(),
                                   read_llama_gguf(tmp_path / "tiny.gguf").state_dict)
    cfg = written["config"]
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["emb_dim"], intermediate_size=cfg["hidden_dim"],
        num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg["n_kv_groups"], max_position_embeddings=cfg["context_length"],
        rms_norm_eps=cfg["rms_eps"], rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_base"]},
        tie_word_embeddings=True)).eval()
    missing, unexpected = hf.load_state_dict(written["state_dict"], strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    idx = torch.randint(0, cfg["vocab_size"], (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=1e-4, rtol=0)


def test_without_unpermuting_the_model_differs(tmp_path):
    """A file written without llama.cpp's Q/K permutation reads back into other weights: the permutation matters."""
    written = write_tiny_llama_gguf(tmp_path / "plain.gguf", permute=False)
    model = read_llama_gguf(tmp_path / "plain.gguf")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(model.state_dict[name], written["state_dict"][name])
    assert torch.equal(permute_qk(model.state_dict[name], 4), written["state_dict"][name])


def test_transformers_gguf_loader_agrees_when_available(tmp_path):
    pytest.importorskip("accelerate")  # transformers' GGUF loader needs it
    transformers = pytest.importorskip("transformers")
    write_tiny_llama_gguf(tmp_path / "tiny.gguf", tie=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype=torch.float32)
    ours = read_llama_gguf(tmp_path / "tiny.gguf").state_dict
    theirs = hf.state_dict()
    for name, value in ours.items():
        assert torch.equal(theirs[name], value), name


# --- Bad files: a clear error ---------------------------------------------------------------------


def test_truncated_file(tmp_path):
    write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    data = (tmp_path / "tiny.gguf").read_bytes()
    for cut in (10, 2000, len(data) - 100):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        with pytest.raises(GGUFError, match="(not a readable GGUF|corrupt|incomplete)"):
            read_llama_gguf(tmp_path / "cut.gguf")


def test_not_a_gguf_and_missing_file(tmp_path):
    (tmp_path / "junk.gguf").write_bytes(b"PK\x03\x04 this is a zip file, not a GGUF" * 100)
    with pytest.raises(GGUFError, match="not a readable GGUF"):
        read_llama_gguf(tmp_path / "junk.gguf")
    with pytest.raises(GGUFError, match="No GGUF file"):
        read_llama_gguf(tmp_path / "absent.gguf")


def test_other_architecture(tmp_path):
    write_tiny_llama_gguf(tmp_path / "gpt2.gguf", arch="gpt2")
    with pytest.raises(GGUFError, match="holds a 'gpt2' model.*Llama"):
        read_llama_gguf(tmp_path / "gpt2.gguf")


def test_non_finite_weights(tmp_path):
    write_tiny_llama_gguf(tmp_path / "nan.gguf", nan_in="model.layers.1.input_layernorm.weight")
    with pytest.raises(GGUFError, match="blk.1.attn_norm.weight holds NaN or infinite"):
        read_llama_gguf(tmp_path / "nan.gguf")


def test_tiny_config_is_buildable():
    assert LlamaModel(tiny_config()).cfg["vocab_size"] == 288
