"""Pretraining utilities of chapter 5: the loss, evaluation and the simple training loop."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from .generation import generate_text_simple, text_to_token_ids, token_ids_to_text


def calc_loss_batch(input_batch: torch.Tensor, target_batch: torch.Tensor, model, device) -> torch.Tensor:
    """Return the mean cross-entropy of predicting `target_batch` (b, T) from `input_batch` (b, T)."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (b, T, vocab_size)
    # cross_entropy wants (N, classes) and (N,): flatten batch and time together.
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(data_loader, model, device, num_batches: int | None = None) -> float:
    """Return the average loss over the first `num_batches` batches of `data_loader` (all if None)."""
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total_loss = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total_loss += calc_loss_batch(input_batch, target_batch, model, device).item()
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter: int) -> tuple[float, float]:
    """Return (train loss, validation loss) over `eval_iter` batches each, in eval mode, without gradients."""
    was_training = model.training
    model.eval()  # dropout off
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train(was_training)
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, device, start_context: str, max_new_tokens: int = 50) -> str:
    """Print (and return) a greedy continuation of `start_context`, on one line."""
    was_training = model.training
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    with torch.no_grad():
        token_ids = generate_text_simple(model, encoded, max_new_tokens, context_size)
    text = token_ids_to_text(token_ids, tokenizer).replace("\n", " ")
    print(text)
    model.train(was_training)
    return text


def train_model_simple(
    model,
    train_loader,
    val_loader,
    optimizer,
    device,
    num_epochs: int,
    eval_freq: int,
    eval_iter: int,
    start_context: str,
    tokenizer,
) -> tuple[list[float], list[float], list[int]]:
    """The book's training loop; returns (train losses, val losses, tokens seen) at each evaluation."""
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()  # gradients accumulate in PyTorch: reset them each step
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            tokens_seen += input_batch.numel()
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
        generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen


def atomic_torch_save(obj, path) -> None:
    """`torch.save` to a temporary file in the same folder, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(model, path) -> None:
    """Save a `GPTModel`'s config and weights to `path` (atomically), so `load_model` can rebuild it."""
    state_dict = getattr(model, "module", model).state_dict()  # unwrap DDP / compiled models
    atomic_torch_save({"config": dict(model.cfg), "model_state_dict": state_dict}, path)


def load_model(path, device="cpu"):
    """Rebuild a `GPTModel` saved by `save_model` (safe loading: weights_only=True)."""
    from .model import GPTModel

    payload = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(payload, dict) or "config" not in payload or "model_state_dict" not in payload:
        raise ValueError(
            f"{path} is not a model file written by buildllm.training.save_model (it lacks 'config' and "
            f"'model_state_dict'). Use the model.pth that ch05/gpt_train.py writes."
        )
    model = GPTModel(payload["config"])
    model.load_state_dict(payload["model_state_dict"])
    return model.to(device)
