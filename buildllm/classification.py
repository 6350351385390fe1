"""Fine-tuning a GPT model to classify text (chapter 6): spam or not spam.

The steps of the chapter, in order:

1. data: `load_sms_spam` (the UCI SMS Spam Collection, parsed correctly),
   `create_balanced_dataset` (as many ham as spam messages), `random_split`
   (70% train, 10% validation, 20% test), `SpamDataset` (token IDs padded with
   ``<|endoftext|>`` = 50256 to one length) and `create_spam_dataloaders`;
2. model: `add_classification_head` swaps the 50,257-way output layer for a
   2-way one; `set_trainable_layers` decides which parameters are fine-tuned;
3. objective: `calc_loss_batch`, `calc_loss_loader`, `calc_accuracy_loader`
   look only at the logits of the *last* token, the one that has seen the whole
   message through causal attention;
4. training: `train_classifier_simple`, then `classify_review` for new text.

Label convention (the book's): ham (not spam) = 0, spam = 1.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .datasets import get_data_path
from .lora import count_trainable_parameters
from .tokenizer import ENDOFTEXT

SPAM_DATASET = "sms-spam-collection"
LABEL_MAP = {"ham": 0, "spam": 1}
CLASS_NAMES = {0: "not spam", 1: "spam"}
PAD_TOKEN_ID = 50256  # GPT-2's <|endoftext|>, used as the padding token
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
    with those columns. `max_length=None` uses the longest message of `data`.
    """

    def __init__(self, data, tokenizer, max_length: int | None = None, pad_token_id: int = PAD_TOKEN_ID):
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
        # Pad on the right so every example has exactly max_length tokens.
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
    """Replace `model.out_head` (emb_dim -> vocab_size) with a new `Linear(emb_dim, num_classes)`; return model."""
    if num_classes < 2:
        raise ValueError(f"A classifier needs at least 2 classes, got num_classes={num_classes}.")
    emb_dim = model.cfg["emb_dim"]
    device = model.final_norm.scale.device
    model.out_head = nn.Linear(emb_dim, num_classes).to(device)  # new, randomly initialized, trainable
    model.cfg["num_classes"] = num_classes  # saved with the model so load_classifier can rebuild it
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


def load_base_model(
    weights: str = "gpt2-small",
    fallbacks: tuple[str, ...] = (),
    model_size: str = "gpt2-small",
    models_dir: str | os.PathLike = "gpt2",
    device: str | torch.device = "cpu",
    drop_rate: float = 0.0,
    **config_overrides,
) -> tuple[nn.Module, str]:
    """Return (a GPT language model to fine-tune, a description of what was loaded).

    `weights` is a GPT-2 size ("gpt2-small" ... "gpt2-xl": OpenAI's weights),
    "random" (random init of `model_size`, changed by `config_overrides` such as
    ``emb_dim=64``), or the path of a file written by `buildllm.training.save_model`.
    When it cannot be loaded (GPT-2 weights not downloadable, missing file), the
    reason is printed and each of `fallbacks` is tried in turn; with none left,
    the error is raised (`buildllm.gpt2.WeightsUnavailableError` or `FileNotFoundError`).
    """
    from . import gpt2

    candidates = [weights, *fallbacks]
    for i, candidate in enumerate(candidates):
        try:
            return gpt2.load_base_gpt(candidate, model_size, models_dir, device, drop_rate, **config_overrides)
        except (gpt2.WeightsUnavailableError, FileNotFoundError) as exc:
            if i == len(candidates) - 1:
                raise
            print(f"[{candidate}] not available:\n{exc}\n-> falling back to {candidates[i + 1]!r}\n")


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a classifier saved with `buildllm.training.save_model` (safe loading: weights_only=True)."""
    from .model import GPTModel

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No model file at {path}. Train one first, e.g. `python ch06/gpt_class_finetune.py "
            f"--weights random --output-dir DIR`, which writes DIR/model.pth."
        )
    payload = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(payload, dict) or "config" not in payload or "model_state_dict" not in payload:
        raise ValueError(f"{path} is not a model file written by buildllm.training.save_model.")
    state_dict = payload["model_state_dict"]
    head = state_dict.get("out_head.weight")
    num_classes = payload["config"].get("num_classes")
    if head is None or num_classes is None or head.shape[0] != num_classes:
        raise ValueError(
            f"{path} holds a language model, not a classifier (its output head has "
            f"{None if head is None else head.shape[0]} outputs). Fine-tune it first with "
            f"ch06/gpt_class_finetune.py --weights {path}."
        )
    model = GPTModel(payload["config"])
    add_classification_head(model, num_classes)
    model.load_state_dict(state_dict)
    return model.to(device)


# ---------------------------------------------------------------------------
# 3. Loss and accuracy on the last token
# ---------------------------------------------------------------------------


def calc_accuracy_loader(data_loader, model, device, num_batches: int | None = None, token_index: int = -1) -> float:
    """Return the fraction of correctly classified examples in the first `num_batches` batches (all if None).

    An empty loader returns nan (there is nothing to be right or wrong about).
    `token_index` picks the position whose logits classify (-1: last token, as in the book).
    """
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    model.eval()
    correct, num_examples = 0, 0
    with torch.no_grad():
        for i, (input_batch, target_batch) in enumerate(data_loader):
            if i >= num_batches:
                break
            input_batch, target_batch = input_batch.to(device), target_batch.to(device)
            logits = model(input_batch)[:, token_index, :]  # (b, num_tokens, 2) -> (b, 2)
            predicted_labels = torch.argmax(logits, dim=-1)  # (b,)
            num_examples += predicted_labels.shape[0]
            correct += (predicted_labels == target_batch).sum().item()
    return correct / num_examples


def calc_loss_batch(input_batch: torch.Tensor, target_batch: torch.Tensor, model, device,
                    token_index: int = -1) -> torch.Tensor:
    """Return the cross-entropy of the class logits at `token_index` (last token) against labels (b,)."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)[:, token_index, :]  # (b, num_tokens, 2) -> (b, 2)
    return F.cross_entropy(logits, target_batch)


def calc_loss_loader(data_loader, model, device, num_batches: int | None = None, token_index: int = -1) -> float:
    """Return the average classification loss over the first `num_batches` batches (all if None); nan if empty."""
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total_loss = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total_loss += calc_loss_batch(input_batch, target_batch, model, device, token_index).item()
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter: int, token_index: int = -1) -> tuple[float, float]:
    """Return (train loss, validation loss) over `eval_iter` batches each, in eval mode, without gradients."""
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter, token_index=token_index)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter, token_index=token_index)
    model.train()
    return train_loss, val_loss


# ---------------------------------------------------------------------------
# 4. Training and using the classifier
# ---------------------------------------------------------------------------


def train_classifier_simple(
    model,
    train_loader,
    val_loader,
    optimizer,
    device,
    num_epochs: int,
    eval_freq: int,
    eval_iter: int,
    token_index: int = -1,
    progress: bool = False,
) -> tuple[list[float], list[float], list[float], list[float], int]:
    """The book's classifier training loop.

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
    if progress:
        from tqdm import tqdm  # imported only when asked: notebooks print evaluation lines instead

    write = tqdm.write if progress else print
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()  # dropout on (if the model has any)
        batches = tqdm(train_loader, desc=f"epoch {epoch + 1}/{num_epochs}", leave=False) if progress else train_loader
        for input_batch, target_batch in batches:
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model, device, token_index)
            loss.backward()
            optimizer.step()
            examples_seen += input_batch.shape[0]  # count examples, not tokens as in chapter 5
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter, token_index)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                write(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
        train_accuracy = calc_accuracy_loader(train_loader, model, device, num_batches=eval_iter, token_index=token_index)
        val_accuracy = calc_accuracy_loader(val_loader, model, device, num_batches=eval_iter, token_index=token_index)
        write(f"Training accuracy: {train_accuracy * 100:.2f}% | Validation accuracy: {val_accuracy * 100:.2f}%")
        train_accs.append(train_accuracy)
        val_accs.append(val_accuracy)
    return train_losses, val_losses, train_accs, val_accs, examples_seen


def classify_review(
    text: str,
    model,
    tokenizer,
    device,
    max_length: int | None = None,
    pad_token_id: int = PAD_TOKEN_ID,
    token_index: int = -1,
) -> str:
    """Return "spam" or "not spam" for `text`, padded/cut to `max_length` as in training (None: no padding)."""
    input_ids = tokenizer.encode(text, allowed_special={ENDOFTEXT})
    if not input_ids:
        raise ValueError("The text is empty: give the classifier at least one token.")
    supported_context_length = model.pos_emb.weight.shape[0]
    limit = supported_context_length if max_length is None else min(max_length, supported_context_length)
    input_ids = input_ids[:limit]  # keep the first tokens, as SpamDataset does
    if max_length is not None:
        input_ids += [pad_token_id] * (limit - len(input_ids))  # pad like the training data
    input_tensor = torch.tensor(input_ids, device=device).unsqueeze(0)  # (1, num_tokens)
    model.eval()
    with torch.no_grad():
        logits = model(input_tensor)[:, token_index, :]  # (1, num_classes)
    predicted_label = torch.argmax(logits, dim=-1).item()
    return CLASS_NAMES.get(predicted_label, str(predicted_label))
