"""Chapter 6: spam data preparation, the classification head, last-token loss/accuracy, training, classifying."""

from __future__ import annotations

import csv
import math

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from buildllm.checkpoints import ModelFileError, save_model
from buildllm.classification import (SpamDataset, add_classification_head, calc_accuracy_loader,
                                     calc_class_loss_batch, class_loss_fn, classify_review, create_balanced_dataset,
                                     create_spam_dataloaders, encode_labels, load_classifier, load_sms_spam,
                                     prepare_spam_splits, random_split, read_sms_spam_file, read_sms_spam_pandas,
                                     set_trainable_layers, train_classifier_simple)
from buildllm.datasets import get_data_path
from buildllm.model import GPT_CONFIG_124M, GPTModel
from buildllm.pretrained import load_base_model
from buildllm.sources import WeightsError, WeightsUnavailableError
from buildllm.tokenizer import END_OF_TEXT_ID, get_gpt2_tokenizer
from buildllm.training import calc_loss_loader, evaluate_model

TINY = {**GPT_CONFIG_124M, "vocab_size": 100, "context_length": 16, "emb_dim": 8, "n_heads": 2,
        "n_layers": 2, "drop_rate": 0.0, "qkv_bias": True}


@pytest.fixture(scope="module")
def messages(data_dir):
    return load_sms_spam()


@pytest.fixture(scope="module")
def splits(data_dir):
    return prepare_spam_splits()


@pytest.fixture(scope="module")
def tokenizer():
    return get_gpt2_tokenizer()


def tiny_classifier(seed: int = 123) -> GPTModel:
    torch.manual_seed(seed)
    return add_classification_head(GPTModel(TINY))


class LastTokenParity(nn.Module):
    """A stand-in model: predicts class (token id % 2) from each position, with a logit margin of 1."""

    def __init__(self, context_length: int = 1024):
        super().__init__()
        self.cfg = {"context_length": context_length}
        self.seen_shapes = []

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.seen_shapes.append(tuple(idx.shape))
        odd = (idx % 2).float()  # (b, T)
        return torch.stack([1 - odd, odd], dim=-1)  # (b, T, 2)


# --- Parsing the SMS Spam Collection ---------------------------------------------------------


def test_parsed_file_has_every_message(messages):
    assert len(messages) == 5574
    assert messages["Label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}
    assert list(messages.columns) == ["Label", "Text"]
    assert messages["Text"].iloc[0].startswith("Go until jurong point, crazy..")


def test_pandas_default_quoting_merges_lines(messages):
    """The pitfall the notebook explains: read_csv's default quoting swallows two lines into others."""
    path = get_data_path("sms-spam-collection")
    naive = pd.read_csv(path, sep="\t", header=None, names=["Label", "Text"])
    assert len(naive) == 5572
    assert naive["Label"].value_counts().to_dict() == {"ham": 4825, "spam": 747}
    # Merged rows hold a newline inside their text: the next message(s) became part of it.
    assert naive["Text"].str.contains("\n").sum() > 0
    correct = read_sms_spam_pandas(path, quoting=csv.QUOTE_NONE)
    pd.testing.assert_frame_equal(correct, messages)


def test_malformed_line_is_reported(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("ham\tfine\nthis line has no label\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: expected 'ham<TAB>text'"):
        read_sms_spam_file(path)


# --- Balancing and splitting ------------------------------------------------------------------


def test_balanced_dataset(messages):
    balanced = create_balanced_dataset(messages, seed=123)
    assert balanced["Label"].value_counts().to_dict() == {"ham": 747, "spam": 747}
    again = create_balanced_dataset(messages, seed=123)
    pd.testing.assert_frame_equal(balanced, again)  # seeded: the same every time
    other = create_balanced_dataset(messages, seed=1)
    assert not balanced["Text"].equals(other["Text"])


def test_balancing_needs_string_labels(messages):
    with pytest.raises(ValueError, match="balance before mapping them to 0/1"):
        create_balanced_dataset(encode_labels(messages))
    with pytest.raises(ValueError, match="lacks the column"):
        create_balanced_dataset(messages.rename(columns={"Text": "Message"}))


def test_split_sizes_and_labels(splits):
    train_df, val_df, test_df = splits
    assert (len(train_df), len(val_df), len(test_df)) == (1045, 149, 300)
    assert train_df["Label"].value_counts().to_dict() == {0: 528, 1: 517}
    assert val_df["Label"].value_counts().to_dict() == {0: 70, 1: 79}
    assert test_df["Label"].value_counts().to_dict() == {0: 149, 1: 151}
    assert train_df["Text"].iloc[0] == "Dude how do you like the buff wind."
    all_texts = pd.concat([train_df, val_df, test_df])["Text"]
    assert len(all_texts) == 1494


def test_prepare_spam_splits_subset(data_dir):
    train_df, val_df, test_df = prepare_spam_splits(max_examples=40)
    assert (len(train_df), len(val_df), len(test_df)) == (28, 4, 8)
    with pytest.raises(ValueError, match="max_examples must be at least 10"):
        prepare_spam_splits(max_examples=5)


def test_random_split_rejects_bad_fractions(splits):
    with pytest.raises(ValueError, match="sum to at most 1"):
        random_split(splits[0], train_frac=0.8, validation_frac=0.3)


# --- SpamDataset and loaders --------------------------------------------------------------------


def test_spam_dataset_pads_to_longest(tokenizer):
    df = pd.DataFrame({"Label": ["ham", "spam"], "Text": ["Hi", "Win a free prize now"]})
    ds = SpamDataset(df, tokenizer)
    assert ds.max_length == len(tokenizer.encode("Win a free prize now")) == 5
    x, y = ds[0]
    assert x.tolist() == tokenizer.encode("Hi") + [END_OF_TEXT_ID] * 4
    assert x.dtype == torch.long and y.item() == 0
    assert ds[1][1].item() == 1


def test_spam_dataset_truncates_and_reads_csv(tokenizer, tmp_path):
    df = pd.DataFrame({"Label": [1, 0], "Text": ["Win a free prize now", "Hi"]})
    path = tmp_path / "train.csv"
    df.to_csv(path, index=None)
    ds = SpamDataset(path, tokenizer, max_length=3)
    assert ds.max_length == 3
    assert ds[0][0].tolist() == tokenizer.encode("Win a free prize now")[:3]
    assert ds[1][0].tolist() == tokenizer.encode("Hi") + [END_OF_TEXT_ID] * 2


@pytest.mark.parametrize(
    "df, kwargs, phrase",
    [
        (pd.DataFrame({"Label": [0], "Text": ["x"]}), {"max_length": 0}, "max_length must be at least 1"),
        (pd.DataFrame({"Label": [2], "Text": ["x"]}), {}, "Labels must be 0/1 or 'ham'/'spam'"),
        (pd.DataFrame({"Label": [], "Text": []}), {}, "got no rows"),
        (pd.DataFrame({"Label": [0]}), {}, "lacks the column"),
    ],
)
def test_spam_dataset_bad_input(tokenizer, df, kwargs, phrase):
    with pytest.raises(ValueError, match=phrase):
        SpamDataset(df, tokenizer, **kwargs)


def test_book_loaders(splits, tokenizer):
    train_loader, val_loader, test_loader = create_spam_dataloaders(*splits, tokenizer)
    assert train_loader.dataset.max_length == 120  # the longest training message
    assert val_loader.dataset.max_length == test_loader.dataset.max_length == 120
    assert (len(train_loader), len(val_loader), len(test_loader)) == (130, 19, 38)
    inputs, labels = next(iter(train_loader))
    assert inputs.shape == (8, 120) and labels.shape == (8,)
    # The order of the training batches depends only on the seed.
    again, _, _ = create_spam_dataloaders(*splits, tokenizer)
    assert torch.equal(next(iter(again))[0], inputs)


def test_loader_needs_a_full_batch(splits, tokenizer):
    small = splits[0].iloc[:3]
    with pytest.raises(ValueError, match="fewer than batch_size=8"):
        create_spam_dataloaders(small, splits[1], splits[2], tokenizer)


# --- Classification head and freezing policy -------------------------------------------------


def test_classification_head_shape():
    model = tiny_classifier()
    assert model.out_head.weight.shape == (2, 8) and model.cfg["num_classes"] == 2
    x = torch.randint(0, 100, (3, 5))
    logits = model(x)
    assert logits.shape == (3, 5, 2)
    assert logits[:, -1, :].shape == (3, 2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        add_classification_head(GPTModel(TINY), num_classes=1)


@pytest.mark.parametrize("policy, expected", [("last-block", 906), ("all", 2706), ("head", 18)])
def test_trainable_parameter_counts(policy, expected):
    # last block 872 (attention 288, feed forward 552, two norms 32) + final norm 16 + head 2*8+2.
    model = tiny_classifier()
    assert set_trainable_layers(model, policy) == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


def test_last_block_policy_unfreezes_the_right_modules():
    model = tiny_classifier()
    set_trainable_layers(model, "last-block")
    assert all(p.requires_grad for p in model.trf_blocks[-1].parameters())
    assert not any(p.requires_grad for p in model.trf_blocks[0].parameters())
    assert not model.tok_emb.weight.requires_grad and not model.pos_emb.weight.requires_grad
    assert model.final_norm.scale.requires_grad and model.out_head.weight.requires_grad
    with pytest.raises(ValueError, match="choose one of last-block, all, head"):
        set_trainable_layers(model, "first-block")


# --- Loss and accuracy ------------------------------------------------------------------------


def parity_loader(batch_size: int = 2) -> DataLoader:
    # Last tokens 1, 2, 3, 4, 5 -> predicted 1, 0, 1, 0, 1; labels 1, 1, 1, 0, 0 -> 3 of 5 right.
    inputs = torch.tensor([[0, 1], [0, 2], [0, 3], [0, 4], [0, 5]])
    labels = torch.tensor([1, 1, 1, 0, 0])
    return DataLoader(TensorDataset(inputs, labels), batch_size=batch_size)


def test_accuracy_exact():
    model = LastTokenParity()
    assert calc_accuracy_loader(parity_loader(), model, "cpu") == pytest.approx(3 / 5)
    assert calc_accuracy_loader(parity_loader(), model, "cpu", num_batches=1) == 0.5  # first batch: 1 of 2
    assert calc_accuracy_loader(parity_loader(), model, "cpu", num_batches=2) == 0.75
    assert calc_accuracy_loader(parity_loader(), model, "cpu", num_batches=100) == pytest.approx(3 / 5)
    # The first token (0, even) predicts class 0 everywhere: 2 of 5 labels are 0.
    assert calc_accuracy_loader(parity_loader(), model, "cpu", token_index=0) == pytest.approx(2 / 5)


def test_loss_exact():
    model = LastTokenParity()
    right, wrong = -math.log(math.e / (math.e + 1)), -math.log(1 / (math.e + 1))
    batch = next(iter(parity_loader()))
    assert calc_class_loss_batch(*batch, model, "cpu").item() == pytest.approx((right + wrong) / 2)
    # Batches: (right, wrong), (right, right), (wrong): the loader averages the batch means.
    expected = ((right + wrong) / 2 + right + wrong) / 3
    assert calc_loss_loader(parity_loader(), model, "cpu", loss_fn=class_loss_fn()) == pytest.approx(expected)
    assert evaluate_model(model, parity_loader(), parity_loader(), "cpu", 100, class_loss_fn()) == pytest.approx(
        (expected, expected))
    # The first token (0, even) predicts class 0 everywhere; labels per batch: (1, 1), (1, 0), (0).
    first = calc_loss_loader(parity_loader(), model, "cpu", loss_fn=class_loss_fn(token_index=0))
    assert first == pytest.approx((wrong + (wrong + right) / 2 + right) / 3)


def test_empty_loader_gives_nan():
    empty = DataLoader(TensorDataset(torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, dtype=torch.long)))
    assert math.isnan(calc_accuracy_loader(empty, LastTokenParity(), "cpu"))
    assert math.isnan(calc_loss_loader(empty, LastTokenParity(), "cpu", loss_fn=class_loss_fn()))


def test_loss_batch_uses_last_token_of_real_model():
    model = tiny_classifier()
    x, y = torch.randint(0, 100, (4, 6)), torch.tensor([0, 1, 1, 0])
    expected = F.cross_entropy(model(x)[:, -1, :], y)
    assert torch.allclose(calc_class_loss_batch(x, y, model, "cpu"), expected)


# --- Training -----------------------------------------------------------------------------------


def toy_loaders():
    # Separable toy task: label 1 if the last token is >= 50.
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 100, (32, 6), generator=g)
    labels = (inputs[:, -1] >= 50).long()
    train = DataLoader(TensorDataset(inputs[:24], labels[:24]), batch_size=4, shuffle=True, drop_last=True,
                       generator=torch.Generator().manual_seed(1))
    val = DataLoader(TensorDataset(inputs[24:], labels[24:]), batch_size=4)
    return train, val


def test_train_classifier_simple_returns_consistent_lists():
    model = tiny_classifier()
    set_trainable_layers(model, "last-block")
    frozen_before = model.trf_blocks[0].att.W_query.weight.clone()
    train_loader, val_loader = toy_loaders()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    train_losses, val_losses, train_accs, val_accs, examples_seen = train_classifier_simple(
        model, train_loader, val_loader, optimizer, "cpu", num_epochs=3, eval_freq=4, eval_iter=2)
    # 6 steps per epoch, 18 in all; evaluated at steps 0, 4, 8, 12, 16.
    assert len(train_losses) == len(val_losses) == 5
    assert len(train_accs) == len(val_accs) == 3
    assert examples_seen == 3 * 6 * 4
    assert all(0.0 <= a <= 1.0 for a in train_accs + val_accs)
    assert train_losses[-1] < train_losses[0]
    assert torch.equal(model.trf_blocks[0].att.W_query.weight, frozen_before)  # frozen stays frozen


def test_train_classifier_simple_bad_arguments():
    model = tiny_classifier()
    train_loader, val_loader = toy_loaders()
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="must all be at least 1"):
        train_classifier_simple(model, train_loader, val_loader, optimizer, "cpu", 1, eval_freq=0, eval_iter=1)


# --- Using the classifier -----------------------------------------------------------------------


def test_classify_review_pads_like_training(tokenizer):
    model = LastTokenParity()
    text = "Call now"  # tokens [14134, 783]: the last one is odd -> spam
    assert tokenizer.encode(text) == [14134, 783]
    assert classify_review(text, model, tokenizer, "cpu") == "spam"
    assert model.seen_shapes[-1] == (1, 2)
    # Padded with <|endoftext|> = 50256 (even): the last position now says not spam.
    assert classify_review(text, model, tokenizer, "cpu", max_length=20) == "not spam"
    assert model.seen_shapes[-1] == (1, 20)


def test_classify_review_truncates_to_context(tokenizer):
    model = LastTokenParity(context_length=4)
    classify_review("one two three four five six seven", model, tokenizer, "cpu", max_length=50)
    assert model.seen_shapes[-1] == (1, 4)
    with pytest.raises(ValueError, match="text is empty"):
        classify_review("", model, tokenizer, "cpu")


def test_classify_review_with_gpt_model(tokenizer):
    torch.manual_seed(0)
    model = add_classification_head(GPTModel({**TINY, "vocab_size": 50257, "context_length": 32}))
    label = classify_review("Free entry to win cash", model, tokenizer, "cpu", max_length=10)
    assert label in ("spam", "not spam")


def test_save_and_load_classifier(tmp_path):
    model = tiny_classifier()
    path = tmp_path / "model.pth"
    save_model(model, path, meta={"max_length": 5})
    loaded, meta = load_classifier(path)
    assert meta == {"max_length": 5} and loaded.cfg["num_classes"] == 2
    x = torch.randint(0, 100, (2, 5))
    model.eval()
    assert torch.equal(loaded(x), model(x))

    save_model(GPTModel(TINY), tmp_path / "lm.pth")
    with pytest.raises(ModelFileError, match="language model, not a classifier"):
        load_classifier(tmp_path / "lm.pth")
    with pytest.raises(ModelFileError, match="No model file at"):
        load_classifier(tmp_path / "missing.pth")


def test_classification_head_gives_a_new_config_not_a_changed_one():
    model = GPTModel({**TINY, "tie_weights": True})
    before = model.cfg
    add_classification_head(model, num_classes=3)
    assert before["num_classes"] is None and model.cfg["num_classes"] == 3 and not model.cfg["tie_weights"]
    assert model.out_head.weight is not model.tok_emb.weight


# --- Choosing the model to start from ----------------------------------------------------------


def test_load_base_model_random_and_file(tmp_path):
    torch.manual_seed(0)
    base = load_base_model("random", random_config={"emb_dim": 16, "n_layers": 1, "n_heads": 2})
    assert base.description == "random initialization (gpt2-small, emb_dim=16, n_layers=1, n_heads=2)"
    assert base.model.cfg["qkv_bias"] is True and base.model.cfg["drop_rate"] == 0.0
    assert base.model.cfg["context_length"] == 1024 and len(base.model.trf_blocks) == 1
    assert base.tokenizer.eot_token == END_OF_TEXT_ID

    save_model(GPTModel({**TINY, "drop_rate": 0.1}), tmp_path / "model.pth", meta={"task": "test model"})
    loaded = load_base_model(str(tmp_path / "model.pth"))
    assert loaded.description == f"the test model in {tmp_path / 'model.pth'}"
    assert loaded.model.cfg["drop_rate"] == 0.0 and loaded.model.trf_blocks[0].drop_shortcut.p == 0.0


def test_load_base_model_falls_back(tmp_path, capsys):
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="neither a known name nor an existing file"):
        load_base_model(missing)
    base = load_base_model([missing, "random"], random_config={"emb_dim": 16, "n_layers": 1, "n_heads": 2})
    assert base.description.startswith("random initialization")
    assert "다음 후보 'random'" in capsys.readouterr().out


def test_load_base_model_without_gpt2_weights(tmp_path, capsys, monkeypatch):
    """No GPT-2 files and no way to download them (a dead proxy stands in for no network)."""
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    base = load_base_model(["gpt2-small", "random"], models_root=tmp_path,
                           random_config={"emb_dim": 16, "n_layers": 1, "n_heads": 2})
    assert base.description.startswith("random initialization")
    assert "[gpt2-small] 사용할 수 없음" in capsys.readouterr().out
    with pytest.raises(WeightsUnavailableError, match="gpt2-small"):
        load_base_model("gpt2-small", models_root=tmp_path)
