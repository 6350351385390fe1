"""The loss and the training loop of chapter 5 (pretraining), as the book builds them.

- `calc_loss_batch`: cross-entropy of next-token predictions for one batch;
- `calc_loss_loader`: its average over batches of a loader (any per-batch loss:
  chapter 6 passes its classification loss as `loss_fn`);
- `evaluate_model`: training and validation loss, without dropout or gradients;
- `train_model_simple`: the chapter's loop (one optimizer step per batch, an
  evaluation every `eval_freq` steps, a sample after each epoch).

The resumable loop of ``ch05/gpt_train.py`` (checkpoints, several GPUs, speed
options) is `buildllm.trainer.train_model`; model files and checkpoints are
`buildllm.checkpoints`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .generation import generate_text_simple, text_to_token_ids, token_ids_to_text

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.nn.Module, torch.device], torch.Tensor]


def calc_loss_batch(input_batch: torch.Tensor, target_batch: torch.Tensor, model, device) -> torch.Tensor:
    """Return the mean cross-entropy of predicting `target_batch` (b, T) from `input_batch` (b, T)."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (b, T, vocab_size)
    # cross_entropy wants (N, classes) and (N,): flatten batch and time together.
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(data_loader, model, device, num_batches: int | None = None,
                     loss_fn: LossFn = calc_loss_batch) -> float:
    """Return the mean of `loss_fn` over the first `num_batches` batches of `data_loader` (all if None; nan if empty)."""
    available = len(data_loader)
    if available == 0:
        return float("nan")
    limit = available if num_batches is None else min(num_batches, available)
    losses = []
    for input_batch, target_batch in data_loader:
        if len(losses) == limit:
            break
        losses.append(loss_fn(input_batch, target_batch, model, device).item())
    return sum(losses) / len(losses)


def evaluate_model(model, train_loader, val_loader, device, eval_iter: int,
                   loss_fn: LossFn = calc_loss_batch) -> tuple[float, float]:
    """Return (train loss, validation loss) over `eval_iter` batches each, in eval mode, without gradients."""
    was_training = model.training
    model.eval()  # dropout off
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, eval_iter, loss_fn)
        val_loss = calc_loss_loader(val_loader, model, device, eval_iter, loss_fn)
    model.train(was_training)
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, device, start_context: str, max_new_tokens: int = 50) -> str:
    """Print (and return) a greedy continuation of `start_context`, on one line."""
    was_training = model.training
    model.eval()
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    with torch.no_grad():
        token_ids = generate_text_simple(model, encoded, max_new_tokens, model.cfg["context_length"])
    text = token_ids_to_text(token_ids, tokenizer).replace("\n", " ")
    print(f"  샘플: {text}")
    model.train(was_training)
    return text


def format_losses(epoch: int, num_epochs: int, step: int, train_loss: float, val_loss: float) -> str:
    """One evaluation line of the training loops: epoch, 0-based step, both losses."""
    return f"에포크 {epoch}/{num_epochs} | 스텝 {step:>5} | 훈련 손실 {train_loss:6.3f} | 검증 손실 {val_loss:6.3f}"


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
    max_new_tokens: int = 50,
) -> tuple[list[float], list[float], list[int]]:
    """The chapter's training loop; returns (train losses, val losses, tokens seen) at each evaluation.

    Every batch is one optimizer step. Steps 0, eval_freq, 2*eval_freq, ... are
    followed by an evaluation on `eval_iter` batches of each loader; each epoch ends
    with a greedy sample of `max_new_tokens` tokens after `start_context`.
    """
    if num_epochs < 1 or eval_freq < 1 or eval_iter < 1:
        raise ValueError(f"num_epochs ({num_epochs}), eval_freq ({eval_freq}) and eval_iter ({eval_iter}) "
                         f"must all be at least 1.")
    history: dict[str, list] = {"train": [], "val": [], "tokens": []}
    tokens_seen = 0
    step = 0  # optimizer steps taken so far
    for epoch in range(1, num_epochs + 1):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()  # PyTorch adds new gradients to old ones: start each step from zero
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()  # gradients of the loss with respect to every parameter
            optimizer.step()  # move the parameters against their gradients
            tokens_seen += input_batch.numel()
            if step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                history["train"].append(train_loss)
                history["val"].append(val_loss)
                history["tokens"].append(tokens_seen)
                print(format_losses(epoch, num_epochs, step, train_loss, val_loss))
            step += 1
        generate_and_print_sample(model, tokenizer, device, start_context, max_new_tokens)
    return history["train"], history["val"], history["tokens"]
