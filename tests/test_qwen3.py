"""buildllm.qwen3: Qwen3 dense and Qwen3-MoE equal transformers' models, and generate with the package's tools."""

from __future__ import annotations

import pytest
import torch

from buildllm.config import ConfigError
from buildllm.generation import generate, generate_text_simple
from buildllm.llama import llama_to_hf_state_dict
from buildllm.moe import MoEFeedForward, set_moe_implementation
from buildllm.qwen3 import (
    QWEN3_0_6B_CONFIG,
    QWEN3_30B_A3B_CONFIG,
    Qwen3Config,
    Qwen3Model,
    build_empty_qwen3,
    fuse_experts,
    load_weights_into_qwen3,
    qwen3_config_from_hf,
)
from generation_checks import assert_padded_batch_matches_alone

transformers = pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only wait on each other

# head_dim 16 with emb_dim 48 and 4 heads: the queries are 64 wide, not emb_dim (as in Qwen3).
DENSE = {"vocab_size": 200, "context_length": 64, "emb_dim": 48, "n_heads": 4, "head_dim": 16, "n_kv_groups": 2,
         "n_layers": 2, "hidden_dim": 80, "rope_base": 10000.0, "rms_eps": 1e-6, "tie_embeddings": False,
         "dtype": "float32", "qk_norm": True}
MOE = {**DENSE, "num_experts": 6, "num_experts_per_tok": 2, "moe_hidden_dim": 24, "norm_topk_prob": True}


def hf_qwen3(cfg: dict, seed: int = 0):
    """transformers' Qwen3ForCausalLM or Qwen3MoeForCausalLM with random weights (norm scales too) for `cfg`."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["emb_dim"], intermediate_size=cfg["hidden_dim"],
        num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"], head_dim=cfg["head_dim"],
        num_key_value_heads=cfg["n_kv_groups"], max_position_embeddings=cfg["context_length"],
        rms_norm_eps=cfg["rms_eps"], rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_base"]},
        tie_word_embeddings=cfg["tie_embeddings"], initializer_range=0.1, attn_implementation="eager",
    )
    if cfg.get("num_experts"):
        hf_cfg = transformers.Qwen3MoeConfig(
            **common, num_experts=cfg["num_experts"], num_experts_per_tok=cfg["num_experts_per_tok"],
            moe_intermediate_size=cfg["moe_hidden_dim"], norm_topk_prob=cfg["norm_topk_prob"])
        model = transformers.Qwen3MoeForCausalLM(hf_cfg)
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common))
    model.eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1 + 0.2 * torch.randn_like(param))  # not all ones: the norms' scales are checked too
            elif name.endswith("mlp.gate.weight"):
                param.normal_(0, 0.3)  # a router with preferences (transformers starts it at zero)
    return model


def _max_diff(ours, hf, idx) -> tuple[float, float]:
    with torch.no_grad():
        expected = hf(idx).logits
        return (ours(idx) - expected).abs().max().item(), expected.abs().max().item()


@pytest.mark.parametrize("n_kv_groups, tie, head_dim, rope_base", [
    (2, False, 16, 10000.0), (1, True, 16, 1000000.0), (4, False, 12, 10000.0), (4, True, 8, 100000.0)])
def test_dense_qwen3_equals_transformers(n_kv_groups, tie, head_dim, rope_base):
    cfg = {**DENSE, "n_kv_groups": n_kv_groups, "tie_embeddings": tie, "head_dim": head_dim, "rope_base": rope_base}
    hf = hf_qwen3(cfg)
    idx = torch.randint(0, cfg["vocab_size"], (3, 30), generator=torch.Generator().manual_seed(1))
    for fast in (False, True):
        ours = load_weights_into_qwen3(Qwen3Model({**cfg, "fast": fast}).eval(), hf.state_dict())
        diff, scale = _max_diff(ours, hf, idx)
        print(f"dense groups={n_kv_groups} tie={tie} head_dim={head_dim} fast={fast}: max |logit diff| {diff:.2e} "
              f"(logits up to {scale:.2f})")
        assert diff < 1e-4 and scale > 1.0
    assert ours.trf_blocks[0].att.W_query.weight.shape == (4 * head_dim, 48)
    assert (ours.out_head.weight is ours.tok_emb.weight) is tie


@pytest.mark.parametrize("num_experts, top_k, norm, n_kv_groups, tie", [
    (6, 2, True, 2, False), (4, 1, True, 1, True), (8, 3, False, 4, False), (3, 3, True, 2, True)])
def test_qwen3_moe_equals_transformers_with_both_implementations(num_experts, top_k, norm, n_kv_groups, tie):
    cfg = {**MOE, "num_experts": num_experts, "num_experts_per_tok": top_k, "norm_topk_prob": norm,
           "n_kv_groups": n_kv_groups, "tie_embeddings": tie}
    hf = hf_qwen3(cfg)
    idx = torch.randint(0, cfg["vocab_size"], (3, 30), generator=torch.Generator().manual_seed(2))
    ours = load_weights_into_qwen3(Qwen3Model(cfg).eval(), hf.state_dict())  # the fused layout of transformers 5
    for implementation in ("loop", "batched"):
        set_moe_implementation(ours, implementation)
        diff, scale = _max_diff(ours, hf, idx)
        print(f"moe E={num_experts} k={top_k} norm={norm} groups={n_kv_groups} tie={tie} {implementation}: "
              f"max |logit diff| {diff:.2e} (logits up to {scale:.2f})")
        assert diff < 1e-4 and scale > 1.0
    assert all(isinstance(block.ff, MoEFeedForward) for block in ours.trf_blocks)
    assert (ours.trf_blocks[0].ff.expert_counts > 0).sum() > 1  # the tokens really went to several experts


def test_transformers_keeps_fused_experts_and_both_layouts_load_the_same():
    hf = hf_qwen3(MOE)
    fused = hf.state_dict()
    assert fused["model.layers.0.mlp.experts.gate_up_proj"].shape == (6, 2 * 24, 48)
    assert fused["model.layers.0.mlp.experts.down_proj"].shape == (6, 48, 24)
    a = load_weights_into_qwen3(Qwen3Model(MOE).eval(), fused)
    per_expert = llama_to_hf_state_dict(a)  # the layout of the published checkpoints
    assert "model.layers.1.mlp.experts.5.up_proj.weight" in per_expert
    assert per_expert["model.layers.1.mlp.experts.5.up_proj.weight"].shape == (24, 48)
    assert not any("gate_up_proj" in key for key in per_expert)
    b = load_weights_into_qwen3(Qwen3Model(MOE).eval(), per_expert)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    # fuse_experts turns it back into exactly what transformers holds.
    again = fuse_experts(per_expert)
    assert set(again) == set(fused)
    for key in fused:
        assert torch.equal(again[key], fused[key]), key
    # ... and transformers loads the per-expert layout of a saved checkpoint, too.
    hf2 = transformers.Qwen3MoeForCausalLM(hf.config).eval()
    hf2.load_state_dict(again)
    idx = torch.randint(0, 200, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(hf2(idx).logits, hf(idx).logits)


def test_empty_model_and_assign_load_like_a_normal_one():
    state = {k: v.clone() for k, v in hf_qwen3(MOE).state_dict().items()}
    a = load_weights_into_qwen3(Qwen3Model(MOE).eval(), state)
    b = load_weights_into_qwen3(build_empty_qwen3(MOE).eval(), state, assign=True)
    assert isinstance(b, Qwen3Model)
    idx = torch.randint(0, 200, (2, 9))
    with torch.no_grad():
        assert torch.equal(a(idx), b(idx))


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("damage, error, words", [
    ("missing_expert", KeyError, ["model.layers.1.mlp.experts.2.down_proj.weight", "(48, 24)"]),
    ("fused_shape", ValueError, ["model.layers.0.mlp.experts.gate_up_proj", "(6, 48, 48)", "(4, 48, 48)",
                                 "num_experts"]),
    ("router_shape", ValueError, ["model.layers.0.mlp.gate.weight", "(6, 48)", "(5, 48)"]),
    ("extra_expert", ValueError, ["model.layers.0.mlp.experts.6.up_proj.weight", "no place"]),
    ("no_qk_norm", ValueError, ["qk_norm", "Llama"]),
    ("missing_qk_norm", KeyError, ["model.layers.1.self_attn.k_norm.weight"]),
    ("layer_too_many", ValueError, ["model.layers.2.mlp.experts.gate_up_proj", "n_layers"]),
])
def test_bad_state_dicts_are_explained_and_leave_the_model_unchanged(damage, error, words):
    fused = dict(hf_qwen3(MOE).state_dict())
    per_expert = llama_to_hf_state_dict(load_weights_into_qwen3(Qwen3Model(MOE), fused))
    if damage == "missing_expert":
        state = dict(per_expert)
        del state["model.layers.1.mlp.experts.2.down_proj.weight"]
    elif damage == "fused_shape":
        state = {**fused, "model.layers.0.mlp.experts.gate_up_proj": torch.zeros(4, 48, 48)}  # 4 experts, not 6
    elif damage == "router_shape":
        state = {**fused, "model.layers.0.mlp.gate.weight": torch.zeros(5, 48)}
    elif damage == "extra_expert":
        state = {**per_expert, "model.layers.0.mlp.experts.6.up_proj.weight": torch.zeros(24, 48)}
    elif damage == "no_qk_norm":
        state = {k: v for k, v in fused.items() if "_norm.weight" not in k or "layernorm" in k}
    elif damage == "missing_qk_norm":
        state = dict(fused)
        del state["model.layers.1.self_attn.k_norm.weight"]
    else:
        state = {**fused, "model.layers.2.mlp.experts.gate_up_proj": torch.zeros(6, 48, 48)}
    model = Qwen3Model(MOE)
    before = _snapshot(model)
    with pytest.raises(error) as info:
        load_weights_into_qwen3(model, state)
    for word in words:
        assert word in str(info.value), str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_moe_checkpoint_into_a_dense_model_and_vice_versa():
    dense = Qwen3Model(DENSE)
    with pytest.raises(ValueError, match="the model is dense"):
        load_weights_into_qwen3(dense, hf_qwen3(MOE).state_dict())
    with pytest.raises(KeyError, match="mlp.gate.weight"):
        load_weights_into_qwen3(Qwen3Model(MOE), hf_qwen3(DENSE).state_dict())
    from buildllm.llama import LlamaModel

    with pytest.raises(TypeError, match="Qwen3Model"):
        load_weights_into_qwen3(LlamaModel({k: v for k, v in DENSE.items() if k != "qk_norm"}), {})


@pytest.mark.parametrize("cfg", [DENSE, MOE], ids=["dense", "moe"])
def test_kv_cache_generation_equals_uncached_token_for_token(cfg):
    cfg = {**cfg, "context_length": 40}
    hf = hf_qwen3(cfg)
    prompt = torch.randint(0, 200, (2, 7), generator=torch.Generator().manual_seed(3))
    for fast in (False, True):
        model = load_weights_into_qwen3(Qwen3Model({**cfg, "fast": fast}).eval(), hf.state_dict())
        plain = generate_text_simple(model, prompt, 20, 40)
        assert torch.equal(generate(model, prompt, 20, 40, use_cache=True), plain)
        # Past the context length the window slides: still the same tokens.
        assert torch.equal(generate(model, prompt, 40, 40, use_cache=True), generate_text_simple(model, prompt, 40, 40))
    # transformers' greedy decoding gives the same tokens.
    with torch.no_grad():
        theirs = hf.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0)
    assert torch.equal(theirs, plain)


def test_left_padded_moe_batch_generates_what_each_prompt_generates_alone():
    model = load_weights_into_qwen3(Qwen3Model(MOE).eval(), hf_qwen3(MOE).state_dict())
    assert_padded_batch_matches_alone(model, [[5, 17, 42, 99, 3, 150, 7], [11, 12], [100, 101, 102, 103]], 10, 64)


def test_config_from_hf_and_validation():
    for cfg in (DENSE, MOE):
        assert qwen3_config_from_hf(hf_qwen3(cfg).config.to_dict()) == cfg
    # A published config.json names the experts "num_experts" (transformers 5 writes num_local_experts).
    published = {**hf_qwen3(MOE).config.to_dict(), "num_experts": 6}
    published.pop("num_local_experts")
    assert qwen3_config_from_hf(published) == MOE
    with pytest.raises(ConfigError, match="dense and MoE"):
        qwen3_config_from_hf({**published, "decoder_sparse_step": 2})
    with pytest.raises(ConfigError, match="not Qwen3"):
        qwen3_config_from_hf({"model_type": "llama"})
    with pytest.raises(ConfigError, match="num_experts_per_tok must be between 1 and num_experts"):
        Qwen3Config.from_dict({**MOE, "num_experts_per_tok": 0})
    with pytest.raises(ConfigError, match="num_experts is 0"):
        Qwen3Config.from_dict({**DENSE, "moe_hidden_dim": 16})
    with pytest.raises(ConfigError, match="qk_norm must be True or False"):
        Qwen3Config.from_dict({**DENSE, "qk_norm": "yes"})
    assert not Qwen3Config.from_dict(DENSE).is_moe and Qwen3Config.from_dict(MOE).expert_hidden_dim == 24
    # The published models' configs are valid (built on the meta device: no memory).
    for cfg in (QWEN3_0_6B_CONFIG, QWEN3_30B_A3B_CONFIG):
        with torch.device("meta"):
            model = Qwen3Model(cfg)
        assert model.trf_blocks[0].att.W_query.weight.shape == (cfg["n_heads"] * 128, cfg["emb_dim"])


def test_model_files_keep_the_architecture_and_the_experts(tmp_path):
    from buildllm.checkpoints import load_model, save_model

    model = load_weights_into_qwen3(Qwen3Model({**MOE, "tie_embeddings": True}).eval(),
                                    hf_qwen3({**MOE, "tie_embeddings": True}).state_dict())
    save_model(model, tmp_path / "qwen3-moe.pth", {"tokenizer": "test"})
    again = load_model(tmp_path / "qwen3-moe.pth")
    assert isinstance(again, Qwen3Model) and again.cfg == model.cfg
    assert again.out_head.weight is again.tok_emb.weight
    assert isinstance(again.trf_blocks[1].ff, MoEFeedForward)
    idx = torch.randint(0, 200, (2, 9))
    with torch.no_grad():
        assert torch.equal(again.eval()(idx), model(idx))
