"""Appendix E: LoRA layers, wrapping a GPT model's linear layers, parameter counts and merging."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from buildllm.classification import add_classification_head
from buildllm.lora import (LinearWithLoRA, LoRALayer, count_lora_parameters, count_trainable_parameters,
                           freeze_and_add_lora, merge_lora, replace_linear_with_lora)
from buildllm.model import GPT_CONFIG_124M, GPTModel, get_gpt2_config

TINY = {**GPT_CONFIG_124M, "vocab_size": 100, "context_length": 16, "emb_dim": 8, "n_heads": 2,
        "n_layers": 2, "drop_rate": 0.0, "qkv_bias": True}


def tiny_classifier(seed: int = 123) -> GPTModel:
    torch.manual_seed(seed)
    return add_classification_head(GPTModel(TINY))


def randomize_lora(model: nn.Module, seed: int = 0) -> None:
    """Give every B a nonzero value, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALayer):
                m.B.copy_(torch.randn(m.B.shape, generator=g) * 0.1)


def test_lora_layer_initialization():
    torch.manual_seed(0)
    layer = LoRALayer(in_dim=10, out_dim=6, rank=4, alpha=8)
    assert layer.A.shape == (10, 4) and layer.B.shape == (4, 6)
    assert torch.count_nonzero(layer.B) == 0
    assert layer.scale == 2.0  # alpha / rank
    # A is drawn like nn.Linear's weight: kaiming_uniform_(a=sqrt(5)) on the same tensor shape.
    torch.manual_seed(0)
    expected = torch.empty(10, 4)
    nn.init.kaiming_uniform_(expected, a=math.sqrt(5))
    assert torch.equal(layer.A, expected)
    assert layer.A.abs().max() <= 1 / math.sqrt(4)  # bound = 1/sqrt(fan_in), fan_in = A.size(1)
    assert torch.equal(layer(torch.randn(3, 10)), torch.zeros(3, 6))
    with pytest.raises(ValueError, match="rank must be at least 1"):
        LoRALayer(10, 6, rank=0, alpha=1)


def test_lora_layer_is_a_scaled_low_rank_product():
    torch.manual_seed(0)
    layer = LoRALayer(5, 3, rank=2, alpha=6)
    with torch.no_grad():
        layer.B.copy_(torch.randn(2, 3))
    x = torch.randn(4, 5)
    assert torch.allclose(layer(x), 3.0 * x @ layer.A @ layer.B)
    assert torch.allclose(x @ layer.delta_weight().T, layer(x), atol=1e-6)
    assert torch.linalg.matrix_rank(layer.delta_weight()) == 2


def test_linear_with_lora_equals_base_at_init():
    torch.manual_seed(0)
    linear = nn.Linear(10, 6)
    wrapped = LinearWithLoRA(linear, rank=4, alpha=8)
    x = torch.randn(2, 3, 10)
    assert torch.equal(wrapped(x), linear(x))  # B = 0: exactly the base layer
    with torch.no_grad():
        wrapped.lora.B.normal_()
    merged_weight = linear.weight + wrapped.lora.delta_weight()
    assert torch.allclose(wrapped(x), x @ merged_weight.T + linear.bias, atol=1e-5)


def test_replace_linear_with_lora_wraps_every_linear_once():
    model = tiny_classifier()
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert n_linear == 6 * TINY["n_layers"] + 1  # q, k, v, out_proj, 2 feed forward per block; out_head
    replace_linear_with_lora(model, rank=2, alpha=2)
    assert sum(isinstance(m, LinearWithLoRA) for m in model.modules()) == n_linear
    replace_linear_with_lora(model, rank=2, alpha=2)  # again: nothing wrapped twice
    assert sum(isinstance(m, LinearWithLoRA) for m in model.modules()) == n_linear
    assert not any(isinstance(m.linear, LinearWithLoRA) for m in model.modules() if isinstance(m, LinearWithLoRA))


def test_lora_model_equals_base_at_init_and_trains_only_a_and_b():
    model = tiny_classifier()
    model.eval()
    x = torch.randint(0, 100, (2, 7))
    before = model(x)
    trainable = freeze_and_add_lora(model, rank=4, alpha=8)
    # Rank 4: attention 4 x 4*(8+8), feed forward 2 x 4*(8+32) per block -> 576; head 4*(8+2) = 40.
    assert trainable == 2 * 576 + 40 == 1192
    assert count_lora_parameters(model) == trainable
    assert torch.equal(model(x), before)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.endswith(".lora.A") or n.endswith(".lora.B") for n in names)

    model(x)[:, -1, :].sum().backward()
    assert model.trf_blocks[0].att.W_query.linear.weight.grad is None  # frozen base weight
    assert model.trf_blocks[0].att.W_query.lora.A.grad is not None


def test_gpt2_small_lora_parameter_count():
    """The book's appendix E figure: 2,666,528 trainable parameters for rank 16 on the GPT-2 small classifier."""
    with torch.device("meta"):  # shapes only: no memory, no time
        model = add_classification_head(GPTModel(get_gpt2_config("gpt2-small", qkv_bias=True)))
        total_before = sum(p.numel() for p in model.parameters())
        trainable = freeze_and_add_lora(model, rank=16, alpha=16)
    assert total_before == 124_441_346
    assert trainable == 2_666_528
    assert sum(p.numel() for p in model.parameters()) == 127_107_874
    assert trainable / total_before == pytest.approx(0.021428, abs=1e-6)  # about 2%


def test_merge_lora_matches_unmerged_and_gives_plain_model():
    model = tiny_classifier()
    freeze_and_add_lora(model, rank=4, alpha=8)
    randomize_lora(model)
    model.eval()
    x = torch.randint(0, 100, (3, 9))
    unmerged = model(x)
    merge_lora(model)
    assert not any(isinstance(m, (LinearWithLoRA, LoRALayer)) for m in model.modules())
    assert torch.allclose(model(x), unmerged, atol=1e-5)
    # The merged state dict loads into a plain GPT classifier.
    plain = tiny_classifier(seed=1)
    plain.load_state_dict(model.state_dict())
    plain.eval()
    assert torch.allclose(plain(x), unmerged, atol=1e-5)


def test_count_trainable_parameters():
    layer = nn.Linear(3, 2)
    assert count_trainable_parameters(layer) == 8
    layer.bias.requires_grad = False
    assert count_trainable_parameters(layer) == 6
