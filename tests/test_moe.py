"""buildllm.moe: the readable loop and the batched mixture agree, routing is right, the balancing loss does its job."""

from __future__ import annotations

import pytest
import torch

from buildllm.moe import (
    MoEFeedForward,
    expert_usage,
    load_balancing_loss,
    moe_aux_loss,
    parameter_counts,
    set_moe_implementation,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only wait on each other


def make_moe(num_experts=8, top_k=2, emb_dim=32, hidden_dim=48, seed=0, **kwargs) -> MoEFeedForward:
    torch.manual_seed(seed)
    layer = MoEFeedForward(emb_dim, hidden_dim, num_experts, top_k, **kwargs)
    with torch.no_grad():
        layer.gate.weight.normal_(0, 0.5)  # a router with clear preferences: different experts for different tokens
    return layer


@pytest.mark.parametrize("num_experts, top_k, norm", [(8, 2, True), (4, 1, True), (6, 3, False), (5, 5, True),
                                                      (16, 4, True)])
def test_loop_and_batched_give_the_same_output_and_gradients(num_experts, top_k, norm):
    layer = make_moe(num_experts, top_k, norm_topk_prob=norm)
    x = torch.randn(3, 11, 32, requires_grad=True)
    results = {}
    for implementation in ("loop", "batched"):
        layer.implementation = implementation
        layer.zero_grad()
        x.grad = None
        out = layer(x)
        (out.pow(2).sum() + layer.aux_loss).backward()
        results[implementation] = (out.detach(), x.grad.clone(), layer.fc1.grad.clone(), layer.fc3.grad.clone(),
                                   layer.gate.weight.grad.clone())
    assert results["loop"][0].shape == (3, 11, 32)
    assert results["loop"][0].abs().max() > 0.01  # not comparing zeros
    for a, b in zip(results["loop"], results["batched"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_an_expert_nobody_picked_costs_nothing_and_gets_no_gradient():
    layer = make_moe(4, 1)
    with torch.no_grad():
        layer.gate.weight.zero_()
        layer.gate.weight[2, 0] = 10.0  # every token with x[0] > 0 goes to expert 2, the others to expert 0
    x = torch.randn(20, 32)
    x[:, 0] = x[:, 0].abs() + 0.5
    for implementation in ("loop", "batched"):
        layer.implementation = implementation
        layer.zero_grad()
        layer(x).sum().backward()
        assert layer.expert_counts.tolist() == [0, 0, 20, 0]
        assert layer.fc1.grad[[0, 1, 3]].abs().max() == 0 and layer.fc1.grad[2].abs().max() > 0


def test_routing_picks_the_top_k_and_renormalizes_their_weights():
    layer = make_moe(8, 3)
    x = torch.randn(50, 32)
    probs, weights, top_idx = layer.route(x)
    assert probs.shape == (50, 8) and weights.shape == top_idx.shape == (50, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(50))
    torch.testing.assert_close(weights.sum(-1), torch.ones(50))  # renormalized: the k weights sum to 1
    # The chosen experts are the k most probable ones, and the weights are their probabilities, rescaled.
    chosen = probs.gather(1, top_idx)
    assert torch.equal(chosen, probs.topk(3, dim=-1).values)
    torch.testing.assert_close(weights, chosen / chosen.sum(-1, keepdim=True))
    layer.norm_topk_prob = False
    _, raw, _ = layer.route(x)
    torch.testing.assert_close(raw, chosen)
    assert (raw.sum(-1) < 1).all()


def test_the_mixture_is_the_weighted_sum_of_the_chosen_experts():
    layer = make_moe(6, 2)
    x = torch.randn(7, 32)
    _, weights, top_idx = layer.route(x)
    out = layer(x)
    for t in range(7):
        expected = sum(weights[t, j] * layer.expert(int(top_idx[t, j]), x[t:t + 1])[0] for j in range(2))
        torch.testing.assert_close(out[t], expected, atol=1e-6, rtol=1e-5)


def test_balancing_loss_is_one_when_even_and_num_experts_when_collapsed():
    n, e = 64, 8
    uniform = torch.full((n, e), 1 / e)
    even_picks = torch.arange(n).remainder(e)[:, None]  # every expert gets n/e tokens
    assert load_balancing_loss(uniform, even_picks, e).item() == pytest.approx(1.0)
    collapsed = torch.zeros(n, e)
    collapsed[:, 3] = 1.0  # the router sends everything to expert 3, with certainty
    assert load_balancing_loss(collapsed, torch.full((n, 1), 3), e).item() == pytest.approx(e)
    # Random routing lies in between.
    probs = torch.softmax(torch.randn(n, e), -1)
    value = load_balancing_loss(probs, probs.topk(2, -1).indices, e).item()
    assert 1.0 <= value < e


def test_balancing_loss_gradient_moves_probability_away_from_the_busiest_expert():
    logits = torch.randn(200, 4)
    logits[:, 0] += 2.0  # expert 0 is popular
    logits.requires_grad_(True)
    probs = torch.softmax(logits, -1)
    top_idx = probs.topk(1, -1).indices
    load_balancing_loss(probs, top_idx, 4).backward()
    # Gradient descent subtracts the gradient: the popular expert's logits go down, the others' up.
    assert logits.grad[:, 0].mean() > 0 > logits.grad[:, 1:].mean()


def test_balancing_loss_is_transformers_loss_divided_by_top_k():
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

    logits = torch.randn(40, 8)
    probs = torch.softmax(logits, -1)
    for k in (1, 2, 4):
        ours = load_balancing_loss(probs, probs.topk(k, -1).indices, 8)
        theirs = load_balancing_loss_func((logits,), num_experts=8, top_k=k)
        torch.testing.assert_close(ours * k, theirs)


def test_aux_loss_and_usage_of_a_whole_model():
    from buildllm.qwen3 import Qwen3Model

    cfg = {"vocab_size": 50, "context_length": 32, "emb_dim": 32, "n_heads": 4, "n_kv_groups": 2, "n_layers": 3,
           "hidden_dim": 64, "num_experts": 4, "num_experts_per_tok": 2, "moe_hidden_dim": 16}
    model = Qwen3Model(cfg)
    with pytest.raises(ValueError, match="run the model first"):
        moe_aux_loss(model)
    with pytest.raises(ValueError, match="run the model first"):
        expert_usage(model)
    model(torch.randint(0, 50, (2, 10)))
    usage = expert_usage(model)
    assert usage.shape == (3, 4)
    torch.testing.assert_close(usage.sum(1), torch.ones(3))
    aux = moe_aux_loss(model)
    assert aux.requires_grad and 1.0 <= aux.item() < 4
    assert set_moe_implementation(model, "batched") == 3
    assert all(block.ff.implementation == "batched" for block in model.trf_blocks)
    with pytest.raises(ValueError, match="loop"):
        set_moe_implementation(model, "fastest")
    # Parameters: the total counts every expert, the active count only top_k of each layer's experts.
    counts = parameter_counts(model)
    per_expert = 3 * 16 * 32
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["total"] - counts["active"] == 3 * (4 - 2) * per_expert


def test_fast_config_uses_the_batched_mixture_and_bad_arguments_are_explained():
    assert MoEFeedForward(8, 16, 4, 2, fast=True).implementation == "batched"
    assert MoEFeedForward(8, 16, 4, 2).implementation == "loop"
    with pytest.raises(ValueError, match="top_k must be between 1 and num_experts"):
        MoEFeedForward(8, 16, 4, 5)
    with pytest.raises(ValueError, match="implementation must be one of"):
        MoEFeedForward(8, 16, 4, 2, implementation="gpu")


def test_equal_to_the_transformers_qwen3_moe_block():
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    hf_cfg = transformers.Qwen3MoeConfig(hidden_size=32, moe_intermediate_size=24, num_experts=6,
                                         num_experts_per_tok=2, norm_topk_prob=True)
    torch.manual_seed(0)
    block = Qwen3MoeSparseMoeBlock(hf_cfg).eval()
    with torch.no_grad():
        for param in block.parameters():
            param.normal_(0, 0.2)
    ours = MoEFeedForward(32, 24, 6, 2)
    with torch.no_grad():  # fused gate_up (E, 2*hidden, emb): first half gate, second half up
        ours.gate.weight.copy_(block.gate.weight)
        ours.fc1.copy_(block.experts.gate_up_proj[:, :24])
        ours.fc2.copy_(block.experts.gate_up_proj[:, 24:])
        ours.fc3.copy_(block.experts.down_proj)
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        expected = block(x)
        for implementation in ("loop", "batched"):
            ours.implementation = implementation
            torch.testing.assert_close(ours(x), expected, atol=1e-6, rtol=1e-5)


def test_bench_moe_quick_prints_both_tables_and_checks_equality():
    from conftest import run_script

    proc = run_script(["benchmarks/bench_moe.py", "--quick", "--device", "cpu", "--threads", "1"])
    out = proc.stdout
    assert "1. One MoE layer" in out and "2. Qwen3Model" in out
    assert "8 experts, loop" in out and "32 experts, batched" in out
    assert "max |loop - batched|" in out and "tokens/s" in out and "param MiB" in out
    bad = run_script(["benchmarks/bench_moe.py", "--quick", "--experts", "1", "--top-k", "2"], check=False)
    assert bad.returncode == 2 and "--top-k (2) must not exceed" in bad.stderr
