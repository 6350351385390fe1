"""Our GPTModel against a reference GPT-2 (transformers.GPT2LMHeadModel) with the same random weights.

If `load_weights_into_gpt` maps every tensor to the right place (including the
transposed Conv1D weights and the split query/key/value matrix) and the model
code matches GPT-2, both models give the same logits and the same greedy text.
Run with ``pytest -s`` to see the largest logit difference per configuration.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from buildllm.generation import generate_text_simple  # noqa: E402
from buildllm.gpt2 import load_weights_into_gpt  # noqa: E402
from buildllm.model import GPT_CONFIG_124M, GPTModel  # noqa: E402

# (vocab_size, context_length, emb_dim, n_heads, n_layers): odd sizes on purpose,
# so that a transposed or mis-split matrix cannot go unnoticed.
SMALL_CONFIGS = [
    (101, 37, 48, 3, 1),
    (101, 37, 48, 3, 3),
    (257, 16, 64, 4, 2),
    (50, 9, 30, 5, 2),
    (97, 20, 24, 1, 1),
]
TOLERANCE = 1e-5


def make_reference(vocab_size: int, context_length: int, emb_dim: int, n_heads: int, n_layers: int,
                   seed: int = 0, weight_scale: float = 10.0):
    """A Hugging Face GPT-2 in eval mode with seeded random weights, moved away from its initialization.

    LayerNorm scales and shifts and all biases get noise (at init they are 1 and 0, which
    would hide a LayerNorm or bias loaded into the wrong place). The blocks' matrices are
    multiplied by `weight_scale`: with GPT-2's tiny init the residual stream is dominated by
    the current token, and greedy decoding would only repeat it, a weak test.
    """
    config = transformers.GPT2Config(
        vocab_size=vocab_size, n_positions=context_length, n_embd=emb_dim, n_layer=n_layers, n_head=n_heads,
        activation_function="gelu_new", attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0,
        layer_norm_epsilon=1e-5, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if param.dim() == 1:
                is_layer_norm = ".ln_" in name or name.startswith("transformer.ln_f")
                std = 0.1 if is_layer_norm else 0.02
                param.add_(std * torch.randn(param.shape, generator=gen))  # LN: 1 + noise; biases: 0 + noise
            elif ".h." in name:  # attention and feed forward matrices of the blocks
                param.mul_(weight_scale)
    return hf.eval()


def make_ours(hf) -> GPTModel:
    """Our GPTModel with the reference's configuration and weights."""
    c = hf.config
    cfg = {"vocab_size": c.vocab_size, "context_length": c.n_positions, "emb_dim": c.n_embd,
           "n_heads": c.n_head, "n_layers": c.n_layer, "drop_rate": 0.0, "qkv_bias": True}
    torch.manual_seed(999)  # our own init is overwritten completely
    return load_weights_into_gpt(GPTModel(cfg), hf.state_dict()).eval()


def max_logit_diff(hf, ours, idx: torch.Tensor) -> float:
    with torch.no_grad():
        return (ours(idx) - hf(idx).logits).abs().max().item()


@pytest.mark.parametrize("config", SMALL_CONFIGS, ids=lambda c: "v{}-ctx{}-emb{}-h{}-L{}".format(*c))
def test_logits_match_reference_small(config):
    hf = make_reference(*config)
    ours = make_ours(hf)
    vocab_size, context_length = config[0], config[1]
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, vocab_size, (3, context_length), generator=gen)  # the full context
    diff = max_logit_diff(hf, ours, idx)
    short = max_logit_diff(hf, ours, idx[:, :5])  # and a shorter input
    print(f"\nmax |logits diff| {config}: full context {diff:.3e}, 5 tokens {short:.3e}")
    assert diff < TOLERANCE
    assert short < TOLERANCE


def test_logits_match_reference_124m():
    """The full GPT-2 small shape (124M parameters, vocabulary 50257, context 1024)."""
    cfg = GPT_CONFIG_124M
    # Twelve blocks compound the scale: 2 keeps the logits in GPT-2's usual range.
    hf = make_reference(cfg["vocab_size"], cfg["context_length"], cfg["emb_dim"], cfg["n_heads"], cfg["n_layers"],
                        weight_scale=2.0)
    ours = make_ours(hf)
    gen = torch.Generator().manual_seed(2)
    idx = torch.randint(0, cfg["vocab_size"], (2, 64), generator=gen)
    diff = max_logit_diff(hf, ours, idx)
    print(f"\nmax |logits diff| GPT-2 124M shape, 2 x 64 tokens: {diff:.3e}")
    assert diff < TOLERANCE

    prompt = idx[:, :4]
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, min_new_tokens=8,
                           do_sample=False, num_beams=1, pad_token_id=0)
    got = generate_text_simple(ours, prompt, max_new_tokens=8, context_size=cfg["context_length"])
    assert torch.equal(got, expected)
    assert len(set(got[:, 4:].flatten().tolist())) > 4  # not one token repeated


@pytest.mark.parametrize("config", [SMALL_CONFIGS[1], SMALL_CONFIGS[3]], ids=["emb48-h3-L3", "emb30-h5-L2"])
def test_greedy_generation_matches_reference(config):
    hf = make_reference(*config)
    ours = make_ours(hf)
    vocab_size, context_length = config[0], config[1]
    gen = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, vocab_size, (2, 4), generator=gen)
    new = context_length - 4  # HF GPT-2 cannot go past n_positions
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                           min_new_tokens=new, do_sample=False, num_beams=1, pad_token_id=0)
    got = generate_text_simple(ours, prompt, max_new_tokens=new, context_size=context_length)
    assert got.shape == (2, context_length)
    assert torch.equal(got, expected)
    assert len(set(got[:, 4:].flatten().tolist())) > 3  # varied tokens, not one token repeated


def test_accepts_keys_with_and_without_transformer_prefix():
    hf = make_reference(101, 37, 48, 3, 2)
    with_prefix = hf.state_dict()
    assert any(k.startswith("transformer.") for k in with_prefix) and "lm_head.weight" in with_prefix
    without_prefix = hf.transformer.state_dict()
    assert not any(k.startswith("transformer.") for k in without_prefix)
    cfg = {"vocab_size": 101, "context_length": 37, "emb_dim": 48, "n_heads": 3, "n_layers": 2,
           "drop_rate": 0.0, "qkv_bias": True}
    a = load_weights_into_gpt(GPTModel(cfg), with_prefix)
    b = load_weights_into_gpt(GPTModel(cfg), without_prefix)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_weights_are_tied_and_transposed():
    hf = make_reference(101, 37, 48, 3, 1)
    ours = make_ours(hf)
    sd = hf.state_dict()
    assert torch.equal(ours.out_head.weight, sd["transformer.wte.weight"])
    c_attn = sd["transformer.h.0.attn.c_attn.weight"]  # (48, 144): query | key | value
    assert torch.equal(ours.trf_blocks[0].att.W_key.weight, c_attn[:, 48:96].T)
    assert torch.equal(ours.trf_blocks[0].att.W_value.bias, sd["transformer.h.0.attn.c_attn.bias"][96:])
    assert torch.equal(ours.trf_blocks[0].ff.layers[2].weight, sd["transformer.h.0.mlp.c_proj.weight"].T)
    assert torch.equal(ours.final_norm.shift, sd["transformer.ln_f.bias"])


# --- bad input --------------------------------------------------------------------------------

SMALL_CFG = {"vocab_size": 101, "context_length": 37, "emb_dim": 48, "n_heads": 3, "n_layers": 2,
             "drop_rate": 0.0, "qkv_bias": True}


@pytest.fixture(scope="module")
def small_state_dict():
    return make_reference(101, 37, 48, 3, 2).state_dict()


def test_missing_key_names_the_key(small_state_dict):
    sd = dict(small_state_dict)
    del sd["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(KeyError, match=r"h\.1\.mlp\.c_fc\.bias"):
        load_weights_into_gpt(GPTModel(SMALL_CFG), sd)


def test_shape_mismatch_names_key_and_both_shapes(small_state_dict):
    # A checkpoint with a longer context than the model: wpe is (37, 48), the model wants (20, 48).
    with pytest.raises(ValueError, match=r"wpe\.weight.*\(37, 48\).*\(20, 48\)"):
        load_weights_into_gpt(GPTModel({**SMALL_CFG, "context_length": 20}), small_state_dict)
    sd = dict(small_state_dict)
    sd["transformer.h.0.attn.c_attn.weight"] = sd["transformer.h.0.attn.c_attn.weight"].T  # (144, 48)
    with pytest.raises(ValueError, match=r"h\.0\.attn\.c_attn\.weight.*\(144, 48\).*\(48, 144\)"):
        load_weights_into_gpt(GPTModel(SMALL_CFG), sd)


def test_qkv_bias_false_is_refused(small_state_dict):
    with pytest.raises(ValueError, match="qkv_bias=True"):
        load_weights_into_gpt(GPTModel({**SMALL_CFG, "qkv_bias": False}), small_state_dict)


def test_more_layers_in_checkpoint_than_in_model(small_state_dict):
    with pytest.raises(ValueError, match=r"h\.1\..*n_layers=1"):
        load_weights_into_gpt(GPTModel({**SMALL_CFG, "n_layers": 1}), small_state_dict)


@pytest.mark.parametrize("problem", ["more layers", "missing key", "wrong shape"])
def test_a_checkpoint_that_does_not_fit_leaves_the_model_unchanged(small_state_dict, problem):
    sd = dict(small_state_dict)
    cfg = SMALL_CFG
    if problem == "more layers":
        cfg = {**SMALL_CFG, "n_layers": 1}  # every layer-0 weight fits; the error comes at the end
    elif problem == "missing key":
        del sd["transformer.ln_f.bias"]
    else:
        sd["transformer.h.1.mlp.c_proj.bias"] = torch.zeros(7)
    torch.manual_seed(0)
    model = GPTModel(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises((KeyError, ValueError)):
        load_weights_into_gpt(model, sd)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
