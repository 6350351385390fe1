"""Fine-tuning a GPT model to classify text (chapter 6): spam or not spam.

The steps of the chapter, in order:

1. data: `load_sms_spam` (the UCI SMS Spam Collection, parsed correctly),
   `create_balanced_dataset` (as many ham as spam messages), `random_split`
   (70% train, 10% validation, 20% test), `SpamDataset` (token IDs padded with
   the tokenizer's end-of-text token, GPT-2's 50256, to one length) and
   `create_spam_dataloaders`;
2. model: `add_classification_head` swaps the 50,257-way output layer for a
   2-way one; `set_trainable_layers` decides which parameters are fine-tuned;
3. objective: `calc_class_loss_batch` and `calc_accuracy_loader` look only at
   the logits of the *last* token, the one that has seen the whole message through
   causal attention (chapter 5's `calc_loss_loader` and `evaluate_model` average
   it when given ``loss_fn=class_loss_fn()``);
4. training: `train_classifier_simple`, then `classify_review` for new text.

Label convention (the book's): ham (not spam) = 0, spam = 1.
"""

from __future__ import annotations

import csv
import os
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .checkpoints import ModelFileError, read_model_file
from .datasets import get_data_path
from .lora import count_trainable_parameters
from .tokenizer import ENDOFTEXT
from .training import evaluate_model, format_losses

SPAM_DATASET = "sms-spam-collection"
LABEL_MAP = {"ham": 0, "spam": 1}
CLASS_NAMES = {0: "not spam", 1: "spam"}
TRAINABLE_CHOICES = ("last-block", "all", "head")


def _pandas():
    try:
        import pandas as pd
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "Chapter 6 keeps its tables in pandas DataFrames: install it with `pip install pandas` "
            "(it is in requirements.txt)."
        ) from None
    return pd


# ---------------------------------------------------------------------------
# 1. Data
# ---------------------------------------------------------------------------


def read_sms_spam_file(path: str | os.PathLike):
    """Parse an SMSSpamCollection file ("label<TAB>text" per line, no header) into a DataFrame.

    Each line is split at its first tab; quote characters are ordinary text.
    (pandas' ``read_csv(sep="\\t")`` treats ``"`` as a quoting character and merges
    lines after a stray quote; see the chapter 6 notebook.)
    """
    pd = _pandas()
    labels, texts = [], []
    with open(path, encoding="utf-8", newline="\n") as f:  # only \n ends a line (texts hold odd characters)
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            label, sep, text = line.partition("\t")
            if not sep or label not in LABEL_MAP:
                raise ValueError(
                    f"{path}, line {line_no}: expected 'ham<TAB>text' or 'spam<TAB>text', got {line[:60]!r}. "
                    f"Is this the UCI SMS Spam Collection file? Get it with "
                    f"buildllm.datasets.get_data_path({SPAM_DATASET!r})."
                )
            labels.append(label)
            texts.append(text)
    return pd.DataFrame({"Label": labels, "Text": texts})


def read_sms_spam_pandas(path: str | os.PathLike, quoting: int = csv.QUOTE_NONE):
    """Read the file with pandas; ``quoting=csv.QUOTE_NONE`` is what makes it correct (the default merges lines)."""
    pd = _pandas()
    return pd.read_csv(path, sep="\t", header=None, names=["Label", "Text"], quoting=quoting)


def load_sms_spam(data_dir: str | os.PathLike | None = None):
    """Return the SMS Spam Collection as a DataFrame with columns Label ("ham"/"spam") and Text (5574 rows)."""
    return read_sms_spam_file(get_data_path(SPAM_DATASET, data_dir))


def _check_columns(df, columns=("Label", "Text")) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"The DataFrame lacks the column(s) {missing}; it needs 'Label' and 'Text' "
            f"(as load_sms_spam returns), it has {list(df.columns)}."
        )


def create_balanced_dataset(df, seed: int = 123):
    """Return all spam messages plus an equally large random (seeded) sample of ham messages."""
    _check_columns(df)
    spam = df[df["Label"] == "spam"]
    ham = df[df["Label"] == "ham"]
    if len(spam) == 0 or len(ham) < len(spam):
        raise ValueError(
            f"Cannot balance {len(ham)} ham and {len(spam)} spam messages: the labels must be the "
            f"strings 'ham' and 'spam' (balance before mapping them to 0/1), with at least as many ham as spam."
        )
    ham_subset = ham.sample(len(spam), random_state=seed)  # undersample the majority class
    pd = _pandas()
    return pd.concat([ham_subset, spam]).reset_index(drop=True)


def encode_labels(df):
    """Return a copy of `df` whose Label column holds 0 (ham) and 1 (spam) instead of strings."""
    _check_columns(df, ("Label",))
    out = df.copy()
    out["Label"] = out["Label"].map(lambda label: LABEL_MAP.get(label, label))
    return out


def random_split(df, train_frac: float = 0.7, validation_frac: float = 0.1, seed: int = 123):
    """Shuffle `df` (seeded) and cut it into (train, validation, test); test gets what remains."""
    if not (0 < train_frac < 1 and 0 <= validation_frac < 1 and train_frac + validation_frac <= 1):
        raise ValueError(
            f"train_frac={train_frac} and validation_frac={validation_frac} must be fractions in (0, 1) "
            f"that sum to at most 1 (the test set gets the rest), e.g. 0.7 and 0.1."
        )
    df = df.sample(frac=1, random_state=seed).reset_index(drop=True)  # shuffle all rows
    train_end = int(len(df) * train_frac)
    validation_end = train_end + int(len(df) * validation_frac)
    train_df = df[:train_end].reset_index(drop=True)
    validation_df = df[train_end:validation_end].reset_index(drop=True)
    test_df = df[validation_end:].reset_index(drop=True)
    return train_df, validation_df, test_df


def prepare_spam_splits(data_dir: str | os.PathLike | None = None, seed: int = 123, max_examples: int | None = None):
    """The book's pipeline in one call: load, balance, encode labels, split 70/10/20; returns 3 DataFrames.

    `max_examples` keeps only that many of the 1494 balanced messages (a seeded
    sample, taken before splitting) for quick runs.
    """
    balanced = encode_labels(create_balanced_dataset(load_sms_spam(data_dir), seed=seed))
    if max_examples is not None:
        if max_examples < 10:
            raise ValueError(f"max_examples must be at least 10 so that every split gets a message, got {max_examples}.")
        if max_examples < len(balanced):
            balanced = balanced.sample(max_examples, random_state=seed).reset_index(drop=True)
    return random_split(balanced, 0.7, 0.1, seed=seed)


class SpamDataset(Dataset):
    """Token IDs of each message, cut or padded (with `pad_token_id`) to `max_length`, and its 0/1 label.

    `data` is a DataFrame with columns Label and Text, or the path of a CSV file
    with those columns. `max_length=None` uses the longest message of `data`;
    `pad_token_id=None` pads with the tokenizer's end-of-text token.
    """

    def __init__(self, data, tokenizer, max_length: int | None = None, pad_token_id: int | None = None):
        pd = _pandas()
        self.data = pd.read_csv(data) if isinstance(data, (str, os.PathLike)) else data
        _check_columns(self.data)
        if len(self.data) == 0:
            raise ValueError("SpamDataset got no rows; pass a DataFrame (or CSV file) with at least one message.")
        labels = [LABEL_MAP.get(label, label) for label in self.data["Label"]]
        if any(label not in (0, 1) for label in labels):
            bad = sorted({str(label) for label in labels if label not in (0, 1)})[:5]
            raise ValueError(f"Labels must be 0/1 or 'ham'/'spam', found {bad}.")
        self.labels = [int(label) for label in labels]

        self.encoded_texts = [tokenizer.encode(str(text)) for text in self.data["Text"]]
        if max_length is None:
            self.max_length = self._longest_encoded_length()
        else:
            if max_length < 1:
                raise ValueError(f"max_length must be at least 1 token, got {max_length}.")
            self.max_length = max_length
            self.encoded_texts = [ids[:max_length] for ids in self.encoded_texts]  # truncate long messages
        # Pad on the right so every example has exactly max_length tokens (GPT-2: <|endoftext|> = 50256).
        pad_token_id = tokenizer.eot_token if pad_token_id is None else pad_token_id
        self.encoded_texts = [ids + [pad_token_id] * (self.max_length - len(ids)) for ids in self.encoded_texts]

    def _longest_encoded_length(self) -> int:
        return max(len(ids) for ids in self.encoded_texts)

    def __len__(self) -> int:
        return len(self.encoded_texts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.tensor(self.encoded_texts[index], dtype=torch.long),  # (max_length,)
            torch.tensor(self.labels[index], dtype=torch.long),  # () a scalar
        )


def create_spam_dataloaders(
    train_df,
    val_df,
    test_df,
    tokenizer,
    batch_size: int = 8,
    max_length: int | None = None,
    seed: int = 123,
    num_workers: int = 0,
) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Return (train, validation, test) loaders; all pad to the training set's `max_length` (its longest by default)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    train_dataset = SpamDataset(train_df, tokenizer, max_length=max_length)
    # Validation and test messages are padded or cut to the same length as the training data.
    val_dataset = SpamDataset(val_df, tokenizer, max_length=train_dataset.max_length)
    test_dataset = SpamDataset(test_df, tokenizer, max_length=train_dataset.max_length)
    if len(train_dataset) < batch_size:
        raise ValueError(
            f"The training set has {len(train_dataset)} examples, fewer than batch_size={batch_size}; "
            f"with drop_last=True no batch would be left. Use a smaller batch size or more examples."
        )
    generator = torch.Generator().manual_seed(seed)  # the training order depends only on the seed
    train_loader = DataLoader(train_dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                              num_workers=num_workers, generator=generator)
    val_loader = DataLoader(val_dataset, batch_size=batch_size, shuffle=False, drop_last=False,
                            num_workers=num_workers)
    test_loader = DataLoader(test_dataset, batch_size=batch_size, shuffle=False, drop_last=False,
                             num_workers=num_workers)
    return train_loader, val_loader, test_loader


# ---------------------------------------------------------------------------
# 2. Model: a classification head and which layers to train
# ---------------------------------------------------------------------------


def add_classification_head(model: nn.Module, num_classes: int = 2) -> nn.Module:
    """Replace `model.out_head` (emb_dim -> vocab_size) with a new `Linear(emb_dim, num_classes)`; return model.

    The model's config becomes a copy with ``num_classes`` set, so a saved classifier
    rebuilds with the right head (`buildllm.checkpoints.load_model`).
    """
    if num_classes < 2:
        raise ValueError(f"A classifier needs at least 2 classes, got num_classes={num_classes}.")
    emb_dim = model.cfg["emb_dim"]
    device = next(model.parameters()).device
    model.out_head = nn.Linear(emb_dim, num_classes).to(device)  # new, randomly initialized, trainable
    untied = {key: False for key in ("tie_weights", "tie_embeddings") if key in model.cfg}  # the head is its own
    model.cfg = model.cfg.replace(num_classes=num_classes, **untied)
    return model


def set_trainable_layers(model: nn.Module, trainable: str = "last-block") -> int:
    """Freeze the model, then unfreeze per policy ("last-block", "all", "head"); return the trainable parameter count.

    "last-block" (the book's choice) trains the last transformer block, the final
    LayerNorm and the output head; "head" trains only the output head; "all" trains everything.
    """
    if trainable not in TRAINABLE_CHOICES:
        raise ValueError(f"Unknown trainable policy {trainable!r}; choose one of {', '.join(TRAINABLE_CHOICES)}.")
    for param in model.parameters():
        param.requires_grad = trainable == "all"
    if trainable == "last-block":
        for module in (model.trf_blocks[-1], model.final_norm):
            for param in module.parameters():
                param.requires_grad = True
    for param in model.out_head.parameters():
        param.requires_grad = True
    return count_trainable_parameters(model)


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a classifier saved with `buildllm.checkpoints.save_model`; return (model, meta). Raises ModelFileError."""
    model, meta = read_model_file(path, device)
    if model.cfg.get("num_classes") is None:
        raise ModelFileError(
            f"{path} holds a language model, not a classifier (its output layer predicts tokens, not classes). "
            f"Fine-tune it as a classifier first (chapter 6)."
        )
    return model, meta


# ---------------------------------------------------------------------------
# 3. Loss and accuracy on the last token
# ---------------------------------------------------------------------------
# The book redefines chapter 5's calc_loss_batch/calc_loss_loader/evaluate_model for
# classification; here the per-batch loss has its own name, and chapter 5's
# `calc_loss_loader` / `evaluate_model` take it as their `loss_fn`.


def calc_class_loss_batch(input_batch: torch.Tensor, target_batch: torch.Tensor, model, device,
                          token_index: int = -1) -> torch.Tensor:
    """Return the cross-entropy of the class logits at `token_index` (last token) against labels (b,)."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)[:, token_index, :]  # (b, num_tokens, num_classes) -> (b, num_classes)
    return F.cross_entropy(logits, target_batch)


def class_loss_fn(token_index: int = -1):
    """`calc_class_loss_batch` at `token_index`, as a `loss_fn` for `calc_loss_loader` and `evaluate_model`."""
    return partial(calc_class_loss_batch, token_index=token_index)


def calc_accuracy_loader(data_loader, model, device, num_batches: int | None = None, token_index: int = -1) -> float:
    """Return the fraction of correctly classified examples in the first `num_batches` batches (all if None).

    An empty loader returns nan (there is nothing to be right or wrong about).
    `token_index` picks the position whose logits classify (-1: last token, as in the book).
    """
    available = len(data_loader)
    if available == 0:
        return float("nan")
    limit = available if num_batches is None else min(num_batches, available)
    was_training = model.training
    model.eval()
    correct = seen = 0
    with torch.no_grad():
        for batch_number, (input_batch, target_batch) in enumerate(data_loader):
            if batch_number == limit:
                break
            logits = model(input_batch.to(device))[:, token_index, :]  # (b, num_classes)
            predicted = logits.argmax(dim=-1)  # (b,)
            correct += (predicted == target_batch.to(device)).sum().item()
            seen += len(predicted)
    model.train(was_training)
    return correct / seen


# ---------------------------------------------------------------------------
# 4. Training and using the classifier
# ---------------------------------------------------------------------------


def train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs: int, eval_freq: int,
                            eval_iter: int, token_index: int = -1, progress: bool = False
                            ) -> tuple[list[float], list[float], list[float], list[float], int]:
    """The chapter's classifier training loop.

    Returns (train losses, val losses) measured every `eval_freq` steps, (train
    accuracies, val accuracies) measured on `eval_iter` batches after each epoch,
    and the total number of training examples seen. `progress=True` shows a tqdm bar.
    """
    if num_epochs < 1 or eval_freq < 1 or eval_iter < 1:
        raise ValueError(
            f"num_epochs ({num_epochs}), eval_freq ({eval_freq}) and eval_iter ({eval_iter}) must all be at least 1."
        )
    if len(train_loader) == 0:
        raise ValueError("The training loader has no batches: use more examples or a smaller batch size.")
    from tqdm import tqdm

    loss_fn = class_loss_fn(token_index)
    say = tqdm.write if progress else print
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "train_acc": [], "val_acc": []}
    examples_seen = 0
    step = 0
    for epoch in range(1, num_epochs + 1):
        model.train()  # dropout on (if the model has any)
        for input_batch, target_batch in tqdm(train_loader, desc=f"에포크 {epoch}/{num_epochs}", leave=False,
                                              disable=not progress):
            optimizer.zero_grad()
            loss = loss_fn(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            examples_seen += input_batch.shape[0]  # count messages, not tokens as in chapter 5
            if step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter, loss_fn)
                history["train_loss"].append(train_loss)
                history["val_loss"].append(val_loss)
                say(format_losses(epoch, num_epochs, step, train_loss, val_loss))
            step += 1
        for part, loader in (("train", train_loader), ("val", val_loader)):
            history[f"{part}_acc"].append(calc_accuracy_loader(loader, model, device, eval_iter, token_index))
        say(f"에포크 {epoch}/{num_epochs} 끝 | 훈련 정확도 {history['train_acc'][-1]:.2%} "
            f"| 검증 정확도 {history['val_acc'][-1]:.2%} ({eval_iter}개 배치 기준)")
    return history["train_loss"], history["val_loss"], history["train_acc"], history["val_acc"], examples_seen


def classify_review(
    text: str,
    model,
    tokenizer,
    device,
    max_length: int | None = None,
    pad_token_id: int | None = None,
    token_index: int = -1,
) -> str:
    """Return "spam" or "not spam" for `text`, padded/cut to `max_length` as in training (None: no padding).

    Padding uses `pad_token_id` (default: the tokenizer's end-of-text token, as `SpamDataset` does).
    """
    input_ids = tokenizer.encode(text, allowed_special={ENDOFTEXT})
    if not input_ids:
        raise ValueError("The text is empty: give the classifier at least one token.")
    supported_context_length = model.cfg["context_length"]
    limit = supported_context_length if max_length is None else min(max_length, supported_context_length)
    input_ids = input_ids[:limit]  # keep the first tokens, as SpamDataset does
    if max_length is not None:
        pad = tokenizer.eot_token if pad_token_id is None else pad_token_id
        input_ids += [pad] * (limit - len(input_ids))  # pad like the training data
    input_tensor = torch.tensor(input_ids, device=device).unsqueeze(0)  # (1, num_tokens)
    model.eval()
    with torch.no_grad():
        logits = model(input_tensor)[:, token_index, :]  # (1, num_classes)
    predicted_label = torch.argmax(logits, dim=-1).item()
    return CLASS_NAMES.get(predicted_label, str(predicted_label))
