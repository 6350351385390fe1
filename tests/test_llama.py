"""buildllm.llama: the Llama architecture equals transformers' LlamaForCausalLM, and works with the package's tools."""

from __future__ import annotations

import pytest
import torch

from buildllm.config import ConfigError
from buildllm.generation import generate, generate_text_simple
from buildllm.llama import (
    LlamaConfig,
    LlamaModel,
    apply_rope,
    build_empty_llama,
    compute_rope_params,
    llama_config_from_hf,
    load_weights_into_llama,
)
from generation_checks import assert_padded_batch_matches_alone

transformers = pytest.importorskip("transformers")

TINY = {"vocab_size": 300, "context_length": 64, "emb_dim": 64, "n_heads": 4, "n_kv_groups": 2, "n_layers": 2,
        "hidden_dim": 96, "rope_base": 10000.0, "rms_eps": 1e-5, "tie_embeddings": False, "dtype": "float32"}


def hf_llama(cfg: dict, seed: int = 0):
    """A transformers LlamaForCausalLM with random weights (norm scales too) for our config `cfg`."""
    torch.manual_seed(seed)
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["emb_dim"], intermediate_size=cfg["hidden_dim"],
        num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg["n_kv_groups"], max_position_embeddings=cfg["context_length"],
        rms_norm_eps=cfg["rms_eps"], rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_base"]},
        tie_word_embeddings=cfg["tie_embeddings"], initializer_range=0.1, attn_implementation="eager",
    )
    model = transformers.LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1 + 0.2 * torch.randn_like(param))  # not all ones: the norms' scales are checked too
    return model


@pytest.mark.parametrize(
    "n_kv_groups, tie, rope_base",
    [(1, False, 10000.0), (2, True, 10000.0), (4, False, 500000.0), (2, False, 100000.0), (1, True, 100000.0)],
)
def test_equal_to_transformers_llama(n_kv_groups, tie, rope_base):
    cfg = {**TINY, "n_kv_groups": n_kv_groups, "tie_embeddings": tie, "rope_base": rope_base}
    hf = hf_llama(cfg)
    ours = load_weights_into_llama(LlamaModel(cfg).eval(), hf.state_dict())
    fast = load_weights_into_llama(LlamaModel({**cfg, "fast": True}).eval(), hf.state_dict())
    idx = torch.randint(0, cfg["vocab_size"], (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        plain, fused = ours(idx), fast(idx)
    diff, diff_fast = (plain - expected).abs().max().item(), (fused - expected).abs().max().item()
    print(f"groups={n_kv_groups} tie={tie} base={rope_base:g}: max |logit diff| plain {diff:.2e}, fast {diff_fast:.2e} "
          f"(logits up to {expected.abs().max().item():.2f})")
    assert diff < 1e-4 and diff_fast < 1e-4
    assert expected.abs().max() > 1.0  # the comparison is not between near-zero numbers
    if tie:
        assert ours.out_head.weight is ours.tok_emb.weight


def test_state_dict_without_model_prefix_and_with_rotary_buffers():
    hf = hf_llama(TINY)
    state = {key.removeprefix("model."): value for key, value in hf.state_dict().items()}
    state["rotary_emb.inv_freq"] = torch.zeros(8)  # some checkpoints hold it; we compute RoPE ourselves
    ours = load_weights_into_llama(LlamaModel(TINY).eval(), state)
    idx = torch.randint(0, 300, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=1e-4, rtol=0)


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before) -> bool:
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("damage, error, words", [
    ("missing", KeyError, ["model.layers.1.mlp.down_proj.weight", "(64, 96)"]),
    ("shape", ValueError, ["model.layers.1.self_attn.k_proj.weight", "(16, 64)", "(32, 64)"]),
    ("extra", ValueError, ["model.layers.2.mlp.up_proj.weight", "n_layers=2"]),
    ("no_head", KeyError, ["lm_head.weight", "tie_embeddings=True"]),
])
def test_bad_state_dict_leaves_the_model_unchanged(damage, error, words):
    state = dict(hf_llama(TINY).state_dict())
    if damage == "missing":
        del state["model.layers.1.mlp.down_proj.weight"]
    elif damage == "shape":
        state["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(16, 64)  # one KV head instead of two
    elif damage == "extra":
        state["model.layers.2.mlp.up_proj.weight"] = torch.zeros(96, 64)
    else:
        del state["lm_head.weight"]
    model = LlamaModel(TINY)
    before = _snapshot(model)
    with pytest.raises(error) as info:
        load_weights_into_llama(model, state)
    for word in words:
        assert word in str(info.value)
    assert _unchanged(model, before)


def test_tied_model_refuses_a_separate_output_layer():
    state = dict(hf_llama(TINY).state_dict())  # untied: lm_head differs from the embedding
    model = LlamaModel({**TINY, "tie_embeddings": True})
    before = _snapshot(model)
    with pytest.raises(ValueError, match="tie_embeddings=False"):
        load_weights_into_llama(model, state)
    assert _unchanged(model, before)


def test_kv_cache_generation_equals_uncached_token_for_token():
    cfg = {**TINY, "context_length": 48}
    hf = hf_llama(cfg)
    for fast in (False, True):
        model = load_weights_into_llama(LlamaModel({**cfg, "fast": fast}).eval(), hf.state_dict())
        prompt = torch.randint(0, 300, (2, 7), generator=torch.Generator().manual_seed(3))
        plain = generate_text_simple(model, prompt, 30, 48)
        cached = generate(model, prompt, 30, 48, use_cache=True)
        assert torch.equal(plain, cached)
        # Past the context length the window slides: still the same tokens.
        longer = generate(model, prompt, 50, 48, use_cache=True)
        assert torch.equal(longer, generate_text_simple(model, prompt, 50, 48))


@pytest.mark.parametrize("fast", [False, True])
def test_left_padded_batch_generates_what_each_prompt_generates_alone(fast):
    model = load_weights_into_llama(LlamaModel({**TINY, "fast": fast}).eval(), hf_llama(TINY).state_dict())
    assert_padded_batch_matches_alone(model, [[5, 17, 42, 99, 3, 250, 7], [11, 12], [200, 201, 202, 203]], 12, 64)
    # A batch of one with padding in front: the padding must stay masked in every step.
    one = torch.tensor([[0, 0, 0, 11, 12]])
    padded = generate(model, one, 12, 64, use_cache=True, attention_mask=torch.tensor([[0, 0, 0, 1, 1]]))
    assert torch.equal(padded[0, 5:], generate_text_simple(model, torch.tensor([[11, 12]]), 12, 64)[0, 2:])


def test_rope_rotates_pairs_and_keeps_lengths():
    cos, sin = compute_rope_params(8, 10000.0, 16)
    assert cos.shape == sin.shape == (16, 8)
    assert torch.equal(cos[0], torch.ones(8)) and torch.equal(sin[0], torch.zeros(8))  # position 0: no rotation
    x = torch.randn(2, 3, 16, 8)
    rotated = apply_rope(x, cos, sin)
    # A rotation keeps the length of every pair (dimension i with i + 4).
    pairs = lambda t: t[..., :4] ** 2 + t[..., 4:] ** 2  # noqa: E731
    torch.testing.assert_close(pairs(rotated), pairs(x))
    # Scores depend only on the distance between positions: q_m . k_n = f(m - n).
    q, k = torch.randn(8), torch.randn(8)

    def score(m, n):
        qs = apply_rope(q.expand(1, 1, 16, 8), cos, sin)[0, 0, m]
        ks = apply_rope(k.expand(1, 1, 16, 8), cos, sin)[0, 0, n]
        return qs @ ks

    torch.testing.assert_close(score(5, 2), score(13, 10))
    # Per-row positions (b, n) give each row its own angles.
    positions = torch.tensor([[0, 1, 2], [4, 5, 6]])
    y = torch.randn(2, 1, 3, 8)
    per_row = apply_rope(y, cos[positions], sin[positions])
    torch.testing.assert_close(per_row[1:], apply_rope(y[1:], cos[4:7], sin[4:7]))


def test_config_is_validated_with_advice():
    with pytest.raises(ConfigError, match="multiple of n_kv_groups"):
        LlamaModel({**TINY, "n_kv_groups": 3})
    with pytest.raises(ConfigError, match="even"):
        LlamaModel({**TINY, "head_dim": 15})
    with pytest.raises(ConfigError, match="dtype"):
        LlamaModel({**TINY, "dtype": "float64"})
    with pytest.raises(ConfigError, match="Unknown config key"):
        LlamaModel({**TINY, "qkv_bias": False})
    with pytest.raises(ConfigError, match="lacks"):
        LlamaModel({k: v for k, v in TINY.items() if k != "hidden_dim"})
    with pytest.raises(ConfigError, match="tie_embeddings=False"):
        LlamaConfig.from_dict({**TINY, "tie_embeddings": True, "num_classes": 2})
    cfg = LlamaConfig.from_dict(TINY)
    assert cfg["emb_dim"] == 64 and dict(cfg)["n_kv_groups"] == 2 and cfg.resolved_head_dim == 16
    assert cfg.replace(drop_rate=0.1)["drop_rate"] == 0.1 and cfg.drop_rate == 0.0


def test_explicit_head_dim_and_too_long_input():
    model = LlamaModel({**TINY, "head_dim": 32})  # 4 heads of 32: wider than emb_dim / n_heads
    assert model.trf_blocks[0].att.W_query.weight.shape == (128, 64)
    assert model(torch.randint(0, 300, (1, 5))).shape == (1, 5, 300)
    with pytest.raises(ValueError, match="context_length is 64"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_build_empty_llama_matches_a_normally_built_model_after_loading():
    cfg = {**TINY, "tie_embeddings": True}
    state = hf_llama(cfg).state_dict()
    a = load_weights_into_llama(LlamaModel(cfg).eval(), state)
    b = load_weights_into_llama(build_empty_llama(cfg).eval(), state)
    assert b.out_head.weight is b.tok_emb.weight
    assert torch.equal(a.cos, b.cos) and torch.equal(a.sin, b.sin)
    idx = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        assert torch.equal(a(idx), b(idx))


def test_llama_config_from_hf_config_json():
    hf = hf_llama({**TINY, "tie_embeddings": True, "rope_base": 100000.0})
    cfg = llama_config_from_hf(hf.config.to_dict())
    assert cfg == {**TINY, "tie_embeddings": True, "rope_base": 100000.0}
    with pytest.raises(ConfigError, match="rope scaling"):
        llama_config_from_hf({**hf.config.to_dict(), "rope_parameters": {"rope_type": "llama3", "rope_theta": 1.0}})


def test_works_with_dropout_classification_lora_and_model_files(tmp_path):
    from buildllm.checkpoints import load_model, save_model
    from buildllm.classification import add_classification_head
    from buildllm.lora import replace_linear_with_lora
    from buildllm.model import set_dropout

    model = load_weights_into_llama(LlamaModel({**TINY, "tie_embeddings": True}), hf_llama(
        {**TINY, "tie_embeddings": True}).state_dict())
    set_dropout(model, 0.1)
    assert model.cfg["drop_rate"] == 0.1 and model.trf_blocks[0].att.dropout.p == 0.1
    set_dropout(model, 0.0)
    model.eval()
    idx = torch.randint(0, 300, (2, 6))
    # Saved and rebuilt from its architecture name and config.
    save_model(model, tmp_path / "llama.pth", {"tokenizer": "test"})
    again = load_model(tmp_path / "llama.pth")
    assert isinstance(again, LlamaModel) and again.out_head.weight is again.tok_emb.weight
    with torch.no_grad():
        assert torch.equal(again(idx), model(idx))
    # LoRA starts as a no-op (B = 0).
    with torch.no_grad():
        before = model(idx)
        replace_linear_with_lora(model, rank=4, alpha=8)
        torch.testing.assert_close(model(idx), before)
    # A classifier head: (b, n, 2) logits, its own (untied) weights, savable.
    clf = add_classification_head(LlamaModel({**TINY, "tie_embeddings": True}), num_classes=2)
    assert clf.cfg["num_classes"] == 2 and not clf.cfg["tie_embeddings"]
    assert clf(idx).shape == (2, 6, 2)
    save_model(clf, tmp_path / "clf.pth")
    assert load_model(tmp_path / "clf.pth").out_head.weight.shape == (2, 64)


def test_bfloat16_model_runs_close_to_float32():
    state = hf_llama(TINY).state_dict()
    f32 = load_weights_into_llama(LlamaModel(TINY).eval(), state)
    bf16 = load_weights_into_llama(LlamaModel({**TINY, "dtype": "bfloat16"}).eval(), state)
    assert bf16.tok_emb.weight.dtype == torch.bfloat16
    idx = torch.randint(0, 300, (1, 12))
    with torch.no_grad():
        a, b = f32(idx), bf16(idx)
    assert b.dtype == torch.bfloat16
    assert (a - b.float()).abs().max() < 0.1 * a.abs().max()


def test_export_to_hugging_face_names_round_trips():
    from buildllm.llama import llama_to_hf_state_dict

    for tie in (True, False):
        cfg = {**TINY, "tie_embeddings": tie}
        hf = hf_llama(cfg)
        ours = load_weights_into_llama(LlamaModel(cfg), hf.state_dict())
        exported = llama_to_hf_state_dict(ours)
        assert ("lm_head.weight" in exported) is not tie
        for name, value in exported.items():
            assert torch.equal(value, hf.state_dict()[name]), name


def test_assign_uses_the_given_tensors_without_copying():
    cfg = {**TINY, "tie_embeddings": True}
    state = {k: v.clone() for k, v in hf_llama(cfg).state_dict().items()}
    model = load_weights_into_llama(build_empty_llama(cfg), state, assign=True)
    assert model.tok_emb.weight.data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    assert model.out_head.weight is model.tok_emb.weight
    copied = load_weights_into_llama(LlamaModel(cfg), state)
    assert copied.tok_emb.weight.data_ptr() != state["model.embed_tokens.weight"].data_ptr()
    idx = torch.randint(0, 300, (1, 7))
    with torch.no_grad():
        assert torch.equal(model(idx), copied(idx))
    # A bfloat16 state dict in a float32 model is converted (copied), not assigned.
    bf16 = {k: v.to(torch.bfloat16) for k, v in state.items()}
    converted = load_weights_into_llama(LlamaModel(cfg), bf16, assign=True)
    assert converted.tok_emb.weight.dtype == torch.float32
