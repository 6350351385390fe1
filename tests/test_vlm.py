"""buildllm.vlm (ch04 bonus): digit images cut into patch tokens, captioned by a tiny GPT of chapter 4's blocks."""

from __future__ import annotations

import pytest
import torch

from buildllm.vlm import (
    BOS_TOKEN,
    EOS_TOKEN,
    CharTokenizer,
    TinyVLM,
    attention_maps,
    caption_accuracy,
    caption_batch,
    caption_for,
    digit_tokenizer,
    generate_captions,
    image_to_patches,
    load_digit_split,
    patches_to_image,
    train_vlm,
)


def tiny_cfg(vocab_size: int, num_patches: int, caption_len: int = 5, **overrides) -> dict:
    return {"vocab_size": vocab_size, "context_length": num_patches + caption_len, "emb_dim": 16,
            "n_heads": 2, "n_layers": 2, "drop_rate": 0.0, "qkv_bias": False, **overrides}


def tiny_model(num_patches: int = 4, patch_dim: int = 16, seed: int = 0) -> TinyVLM:
    torch.manual_seed(seed)
    return TinyVLM(tiny_cfg(digit_tokenizer().vocab_size, num_patches), num_patches, patch_dim).eval()


def test_load_digit_split_is_offline_disjoint_and_seeded():
    split = load_digit_split(test_fraction=0.25, seed=1)
    assert split.train_images.shape[1:] == split.test_images.shape[1:] == (8, 8)
    assert len(split.train_labels) + len(split.test_labels) == 1797
    assert len(split.test_labels) == round(1797 * 0.25)
    assert 0.0 <= split.train_images.min() and split.train_images.max() <= 1.0
    assert set(split.test_labels.tolist()) == set(range(10))
    # Together the two parts are the whole dataset, each image exactly once.
    from sklearn.datasets import load_digits

    def rows(images):
        return sorted(tuple(img.flatten().tolist()) for img in images)

    full = torch.tensor(load_digits().images, dtype=torch.float32) / 16.0
    assert rows(torch.cat([split.train_images, split.test_images])) == rows(full)
    again = load_digit_split(test_fraction=0.25, seed=1)
    assert torch.equal(split.test_images, again.test_images)
    other = load_digit_split(test_fraction=0.25, seed=2)
    assert not torch.equal(split.test_labels, other.test_labels)


def test_load_digit_split_rejects_a_bad_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        load_digit_split(test_fraction=1.0)


def test_image_to_patches_order_and_inverse():
    image = torch.arange(64.0).reshape(1, 8, 8)
    patches = image_to_patches(image, 4)
    assert patches.shape == (1, 4, 16)
    assert patches[0, 0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27]  # top left
    assert patches[0, 1, 0].item() == 4  # top right patch starts at column 4
    assert patches[0, 2, 0].item() == 32  # bottom left starts at row 4
    patches2 = image_to_patches(image, 2)
    assert patches2.shape == (1, 16, 4)
    assert patches2[0, 5].tolist() == [18, 19, 26, 27]  # grid row 1, column 1
    for size in (1, 2, 4, 8):
        assert torch.equal(patches_to_image(image_to_patches(image, size), size), image)


@pytest.mark.parametrize("bad", [3, 0])
def test_image_to_patches_rejects_sizes_that_do_not_divide(bad):
    with pytest.raises(ValueError, match="patch_size"):
        image_to_patches(torch.zeros(2, 8, 8), bad)


def test_char_tokenizer_round_trip_and_errors():
    tok = digit_tokenizer()
    assert tok.vocab_size == 2 + len(set("숫자 0123456789"))
    assert tok.int_to_str[tok.bos_id] == BOS_TOKEN and tok.int_to_str[tok.eos_id] == EOS_TOKEN
    ids = tok.encode(caption_for(7))
    assert len(ids) == 4 and tok.decode(ids) == "숫자 7"
    assert tok.decode([tok.bos_id, *ids, tok.eos_id]) == "숫자 7"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("글자 7")
    assert CharTokenizer(["ab", "ba"]).encode("ab") == [2, 3]


def test_caption_batch_shifts_by_one():
    tok = digit_tokenizer()
    inputs, targets = caption_batch(torch.tensor([3, 0]), tok)
    assert inputs.shape == targets.shape == (2, 5)
    assert inputs[:, 0].tolist() == [tok.bos_id] * 2 and targets[:, -1].tolist() == [tok.eos_id] * 2
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    assert tok.decode(targets[0].tolist()) == "숫자 3"


def test_model_shapes_and_errors():
    model = tiny_model()
    patches = torch.rand(3, 4, 16)
    logits = model(patches, torch.zeros(3, 5, dtype=torch.long))
    assert logits.shape == (3, 5, digit_tokenizer().vocab_size)
    with pytest.raises(ValueError, match="context_length"):
        model(patches, torch.zeros(3, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="image_to_patches"):
        model(torch.rand(3, 16, 4), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="must exceed num_patches"):
        TinyVLM(tiny_cfg(15, 4, caption_len=0), 4, 16)


def test_caption_logits_see_the_image_and_only_earlier_tokens():
    model = tiny_model()
    patches = torch.rand(1, 4, 16)
    ids = torch.tensor([[0, 5, 6, 7, 8]])
    logits = model(patches, ids)
    changed_tail = ids.clone()
    changed_tail[0, 3:] = torch.tensor([2, 3])
    torch.testing.assert_close(model(patches, changed_tail)[:, :3], logits[:, :3])  # causal: later tokens unseen
    other_image = model(torch.rand(1, 4, 16), ids)
    assert not torch.allclose(other_image[:, 0], logits[:, 0])  # the first caption token depends on the image


def test_attention_maps_rows_sum_to_one_and_reproduce_the_blocks():
    """The recomputed weights, applied to the values, give exactly what each attention module returned."""
    model = tiny_model()
    patches, ids = torch.rand(2, 4, 16), torch.randint(0, 10, (2, 5))
    maps = attention_maps(model, patches, ids)
    assert len(maps) == 2 and maps[0].shape == (2, 2, 9, 9)
    for m in maps:
        torch.testing.assert_close(m.sum(dim=-1), torch.ones(2, 2, 9))
        assert (m.triu(diagonal=1) == 0).all()  # no token attends to a later one

    seen = []
    hooks = [b.att.register_forward_hook(lambda mod, args, out: seen.append((args[0], out)))
             for b in model.trf_blocks]
    with torch.no_grad():
        model(patches, ids)
    for h in hooks:
        h.remove()
    for block, weights, (x, out) in zip(model.trf_blocks, maps, seen):
        att = block.att
        values = att.W_value(x).view(2, 9, att.num_heads, att.head_dim).transpose(1, 2)
        context = (weights @ values).transpose(1, 2).reshape(2, 9, att.d_out)
        torch.testing.assert_close(att.out_proj(context), out)


def test_tiny_model_learns_to_caption_two_digits():
    """Twenty images of 0 and 1: a few epochs give every training image its right caption."""
    split = load_digit_split(seed=0)
    keep = torch.cat([torch.nonzero(split.train_labels == d).flatten()[:10] for d in (0, 1)])
    patches, labels = image_to_patches(split.train_images[keep], 4), split.train_labels[keep]
    tok = digit_tokenizer()
    inputs, targets = caption_batch(labels, tok)
    model = tiny_model(num_patches=4, patch_dim=16, seed=1)
    losses = train_vlm(model, patches, inputs, targets, num_epochs=40, batch_size=10, lr=1e-2, seed=0)
    assert losses[-1] < 0.05 * losses[0]
    accuracy, captions = caption_accuracy(model, patches, labels, tok)
    assert accuracy == 1.0, captions


def test_training_and_generation_are_deterministic():
    split = load_digit_split(seed=0)
    patches = image_to_patches(split.train_images[:16], 4)
    inputs, targets = caption_batch(split.train_labels[:16], digit_tokenizer())
    results = []
    for _ in range(2):
        model = tiny_model(seed=3)
        losses = train_vlm(model, patches, inputs, targets, num_epochs=2, batch_size=8, seed=5)
        results.append((losses, generate_captions(model, patches, digit_tokenizer())))
    assert results[0] == results[1]
