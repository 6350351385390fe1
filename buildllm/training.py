"""Pretraining utilities of chapter 5: the loss, evaluation, the training loops and checkpoints.

`train_model_simple` is the book's loop. `train_model` does the same work but can
stop and resume exactly: a checkpoint (`save_checkpoint`) holds the model, the
optimizer, where the run stands (`TrainingState`) and the random number
generators' states, and the training batches come in an order fixed by
``seed + epoch`` (`EpochShuffleSampler`), so a resumed run sees the very batches
and dropout masks that an uninterrupted run would have seen.

`train_model` also runs under torchrun (several processes, DistributedDataParallel):
each process trains on its share of every global batch (`EpochShuffleSampler`
with ``num_replicas``/``rank``), losses are averaged over the processes, and only
the main process prints and saves. Its opt-in speed settings (gradient
accumulation, mixed precision, gradient clipping, a learning-rate schedule) keep
the book's behaviour when left at their defaults.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm  # the plain text bar: tqdm.auto warns in notebooks without ipywidgets

from .data import GPTDatasetV1
from .distributed import all_reduce_mean, get_world_size, is_distributed
from .generation import generate_text_simple, text_to_token_ids, token_ids_to_text
from .speed import autocast_context, mask_padded_vocab


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


def _default_file_mode() -> int:
    """The mode a newly created file gets (0o666 less the umask); mkstemp's own 0o600 would hide it from others."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_torch_save(obj, path) -> None:
    """`torch.save` to a temporary file in the same folder, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def unwrap_model(model):
    """Return the plain `GPTModel` inside a DistributedDataParallel (.module) or torch.compile (._orig_mod) wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_model(model, path) -> None:
    """Save a `GPTModel`'s config and weights to `path` (atomically), so `load_model` can rebuild it."""
    model = unwrap_model(model)  # unwrap DDP / compiled models
    atomic_torch_save({"config": dict(model.cfg), "model_state_dict": model.state_dict()}, path)


def load_model(path, device="cpu"):
    """Rebuild a `GPTModel` saved by `save_model` (safe loading: weights_only=True).

    A model trained with a padded vocabulary (gpt_train.py --pad-vocab) gets its
    padding tokens masked again (`buildllm.speed.mask_padded_vocab`).
    """
    from .model import GPTModel

    payload = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(payload, dict) or "config" not in payload or "model_state_dict" not in payload:
        raise ValueError(
            f"{path} is not a model file written by buildllm.training.save_model (it lacks 'config' and "
            f"'model_state_dict'). Use the model.pth that ch05/gpt_train.py writes."
        )
    model = mask_padded_vocab(GPTModel(payload["config"]))
    model.load_state_dict(payload["model_state_dict"])
    return model.to(device)


# ---------------------------------------------------------------------------
# Resumable training (ch05/gpt_train.py)
# ---------------------------------------------------------------------------

ARCHITECTURE_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "qkv_bias")


class EpochShuffleSampler(Sampler[int]):
    """Shuffle the dataset in an order fixed by ``seed + epoch``; call `set_epoch` at the start of each epoch.

    With ``num_replicas`` processes (DDP), process ``rank`` takes every
    num_replicas-th index of that same order, starting at position ``rank``. So
    with a per-process batch b, the processes' j-th batches together hold exactly
    the samples of the j-th batch of one process with batch b * num_replicas: the
    same global batches as a single-process run. The last ``len % num_replicas``
    indices of the order are left out, so that every process gets the same number.
    """

    def __init__(self, data_source, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"Need num_replicas >= 1 and 0 <= rank < num_replicas, got num_replicas={num_replicas}, "
                             f"rank={rank}.")
        self.data_source = data_source
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the order of epoch `epoch` (the same every time for the same seed)."""
        self.epoch = epoch

    def __iter__(self):
        n = len(self.data_source)
        if not self.shuffle:
            order = list(range(n))
        else:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator).tolist()
        usable = n - n % self.num_replicas  # the same number of samples for every process
        return iter(order[self.rank:usable:self.num_replicas])

    def __len__(self) -> int:
        return len(self.data_source) // self.num_replicas


def create_pretraining_dataloaders(
    text: str,
    tokenizer,
    context_length: int,
    batch_size: int,
    train_ratio: float = 0.90,
    seed: int = 123,
    num_workers: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """Split `text` into training and validation parts and return their loaders (book settings: stride = context).

    The training loader shuffles with an `EpochShuffleSampler` and drops an
    incomplete last batch; the validation loader keeps the text's order. Each
    loader owns a random generator, so iterating it never draws from PyTorch's
    global generator (which dropout uses): that keeps resumed runs exact.

    With ``num_replicas`` > 1 (DDP), both loaders give process `rank` its share
    (see `EpochShuffleSampler`) and `batch_size` is the per-process batch.
    """
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be between 0 and 1 (the book uses 0.9), got {train_ratio}.")
    split_idx = int(train_ratio * len(text))
    parts = {"training": text[:split_idx], "validation": text[split_idx:]}
    datasets = {}
    for part, part_text in parts.items():
        try:
            datasets[part] = GPTDatasetV1(part_text, tokenizer, max_length=context_length, stride=context_length)
        except ValueError as exc:
            raise ValueError(
                f"The {part} part of the text ({len(part_text)} characters) is too short for "
                f"context_length={context_length}: {exc}"
            ) from None
    train_dataset, val_dataset = datasets["training"], datasets["validation"]
    per_process = len(train_dataset) // num_replicas
    if per_process < batch_size:
        if num_replicas == 1:
            raise ValueError(
                f"The training part has {len(train_dataset)} samples of {context_length} tokens, fewer than "
                f"batch_size={batch_size}: no complete batch. Use a longer text, a smaller batch size or a "
                f"shorter context length."
            )
        raise ValueError(
            f"The training part has {len(train_dataset)} samples; split over {num_replicas} processes each gets "
            f"{per_process}, fewer than the per-process batch_size={batch_size}: no complete batch. Use fewer "
            f"processes, a smaller --batch-size, a shorter context length or a longer text."
        )
    if len(val_dataset) < num_replicas:
        raise ValueError(
            f"The validation part has {len(val_dataset)} samples, fewer than the {num_replicas} processes: "
            f"use fewer processes, a shorter context length or a larger share for validation (--train-ratio)."
        )
    train_sampler = EpochShuffleSampler(train_dataset, seed=seed, num_replicas=num_replicas, rank=rank)
    val_sampler = EpochShuffleSampler(val_dataset, seed=seed, shuffle=False, num_replicas=num_replicas, rank=rank)
    train_loader = DataLoader(train_dataset, batch_size=batch_size, sampler=train_sampler, drop_last=True,
                              num_workers=num_workers, generator=torch.Generator().manual_seed(seed))
    val_loader = DataLoader(val_dataset, batch_size=batch_size, sampler=val_sampler, drop_last=False,
                            num_workers=num_workers, generator=torch.Generator().manual_seed(seed))
    return train_loader, val_loader


@dataclass
class TrainingState:
    """Where a training run stands; with the RNG states saved beside it, enough to resume exactly."""

    epoch: int = 0  # the epoch in progress (0-based)
    step_in_epoch: int = 0  # optimizer steps of `epoch` already done (batches, without gradient accumulation)
    global_step: int = 0  # optimizer steps done in total
    tokens_seen: int = 0  # training tokens seen in total (by all processes together)
    step_losses: list[float] = field(default_factory=list)  # training loss of every step (of the global batch)
    train_losses: list[float] = field(default_factory=list)  # at each evaluation
    val_losses: list[float] = field(default_factory=list)
    track_tokens_seen: list[int] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)  # step number (0-based, as printed) of each evaluation

    def to_dict(self) -> dict:
        """Plain Python types only, so the checkpoint loads with weights_only=True."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingState":
        """Rebuild a state saved with `to_dict`."""
        return cls(**data)


def get_rng_states() -> dict:
    """Return the states of Python's and PyTorch's (CPU and CUDA) random generators as tensors and plain types."""
    version, internal_state, gauss_next = random.getstate()
    states = {
        "python": {"version": version, "state": list(internal_state), "gauss_next": gauss_next},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore random generator states captured by `get_rng_states`."""
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def check_same_architecture(saved_cfg: dict, cfg: dict, source: str = "the checkpoint") -> None:
    """Raise ValueError naming every architecture setting in which `saved_cfg` and `cfg` differ."""
    diffs = [f"{key} {saved_cfg.get(key)} vs {cfg.get(key)}" for key in ARCHITECTURE_KEYS
             if saved_cfg.get(key) != cfg.get(key)]
    if diffs:
        raise ValueError(
            f"{source} was saved from a different architecture ({', '.join(diffs)}: checkpoint vs this model). "
            f"Build the model with the checkpoint's settings ({ {k: saved_cfg.get(k) for k in ARCHITECTURE_KEYS} }), "
            f"e.g. pass the same --model-size/--emb-dim/--n-layers/--n-heads/--context-length (and --pad-vocab) as the original run."
        )


def gather_rng_states() -> list[dict] | None:
    """Every process's RNG states in rank order (call it on every rank of a DDP run); None without a process group."""
    if not is_distributed():
        return None
    states = [None] * get_world_size()
    dist.all_gather_object(states, get_rng_states())
    return states


def save_checkpoint(path, model, optimizer, state: TrainingState, extra: dict | None = None,
                    rank_rng_states: list[dict] | None = None) -> None:
    """Save everything needed to resume training (model, optimizer, state, RNG states) atomically to `path`.

    The file also loads with `load_model` (it holds "config" and "model_state_dict").
    `extra` is a dict of plain values to keep beside (e.g. the run's settings).
    `rank_rng_states` (from `gather_rng_states`) keeps every DDP process's RNG states.
    """
    model = unwrap_model(model)
    payload = {
        "config": dict(model.cfg),
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "training_state": state.to_dict(),
        "rng_states": get_rng_states(),
        "extra": dict(extra or {}),
    }
    if rank_rng_states is not None:
        payload["rng_states_by_rank"] = list(rank_rng_states)
    atomic_torch_save(payload, path)


def load_checkpoint(path, model, optimizer=None, restore_rng: bool = True, rank: int = 0) -> tuple[TrainingState, dict]:
    """Load a `save_checkpoint` file into `model` (and `optimizer`); restore RNG states; return (state, extra).

    In a DDP run pass the process's `rank`: it gets back its own RNG states when the
    checkpoint holds one per process (else those of the process that saved it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}. Pass the checkpoint.pth that ch05/gpt_train.py wrote.")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    needed = ("config", "model_state_dict", "optimizer_state_dict", "training_state", "rng_states")
    if not isinstance(payload, dict) or any(key not in payload for key in needed):
        raise ValueError(
            f"{path} is not a training checkpoint written by buildllm.training.save_checkpoint (a model.pth "
            f"holds only the weights and cannot resume training). Use the checkpoint.pth of the run."
        )
    model = unwrap_model(model)
    check_same_architecture(payload["config"], model.cfg, source=str(path))
    model.load_state_dict(payload["model_state_dict"])
    if optimizer is not None:
        optimizer.load_state_dict(payload["optimizer_state_dict"])
    if restore_rng:
        by_rank = payload.get("rng_states_by_rank") or []
        set_rng_states(by_rank[rank] if rank < len(by_rank) else payload["rng_states"])
    return TrainingState.from_dict(payload["training_state"]), payload.get("extra", {})


def atomic_write_json(obj, path) -> None:
    """Write `obj` as indented JSON to `path` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def train_step(
    model,
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    optimizer,
    device,
    *,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
    lr: float | None = None,
) -> float:
    """One optimizer step on the (input, target) `micro_batches` (gradient accumulation); return their mean loss.

    Each micro-batch's loss is divided by the number of micro-batches before
    ``backward()``, so the summed gradients equal those of one big batch. In a DDP
    model the gradients are all-reduced only after the last micro-batch
    (``no_sync`` on the others). With one micro-batch and the defaults this is the
    book's step: zero_grad, loss, backward, optimizer.step.
    """
    optimizer.zero_grad()
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    num_micro = len(micro_batches)
    total_loss = 0.0  # becomes a tensor: one .item() per step, not one per micro-batch (each waits for the GPU)
    for i, (input_batch, target_batch) in enumerate(micro_batches):
        is_last = i == num_micro - 1
        sync = contextlib.nullcontext() if is_last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast_context(device, amp_dtype):
                loss = calc_loss_batch(input_batch, target_batch, model, device)
            (loss / num_micro).backward()
        total_loss = total_loss + loss.detach()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=grad_clip)
    optimizer.step()
    return (total_loss / num_micro).item()


def train_model(
    model,
    train_loader,
    val_loader,
    optimizer,
    device,
    num_epochs: int,
    eval_freq: int,
    eval_iter: int,
    start_context: str | None = None,
    tokenizer=None,
    state: TrainingState | None = None,
    max_steps: int | None = None,
    checkpoint_path=None,
    checkpoint_extra: dict | None = None,
    tb_writer=None,
    is_main_process: bool = True,
    progress: bool = True,
    *,
    grad_accum_steps: int = 1,
    lr_schedule: Callable[[int], float] | None = None,
    grad_clip: float | None = None,
    amp_dtype: torch.dtype | None = None,
) -> TrainingState:
    """Train like `train_model_simple`, resumably; return the final `TrainingState`.

    Pass the `state` returned by `load_checkpoint` to resume. `max_steps` stops after
    that many optimizer steps in total (counting steps before a resume). At the end of
    each epoch, and when stopping early, it prints a sample (if `start_context` and
    `tokenizer` are given) and saves a checkpoint (if `checkpoint_path` is given, with
    `checkpoint_extra` beside it).
    Only the main process (rank 0 in multi-GPU training) prints, logs and saves.

    Beyond the book (defaults = the book): each optimizer step takes
    `grad_accum_steps` batches (see `train_step`); `lr_schedule` maps the 0-based
    step number to its learning rate; `grad_clip` caps the gradients' total norm;
    `amp_dtype` (torch.bfloat16) runs forward passes under autocast. Under DDP
    (a process group is running), the recorded losses are the means over all
    processes and tokens_seen counts every process's tokens.
    """
    if eval_freq < 1 or eval_iter < 1:
        raise ValueError(f"eval_freq and eval_iter must be at least 1, got {eval_freq} and {eval_iter}.")
    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be at least 1 (1 = no accumulation), got {grad_accum_steps}.")
    steps_per_epoch = len(train_loader) // grad_accum_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"The training loader has {len(train_loader)} batches per epoch, fewer than grad_accum_steps="
            f"{grad_accum_steps}: not one optimizer step. Use fewer accumulation steps or a smaller batch size."
        )
    state = state or TrainingState()
    world_size = get_world_size()
    show = is_main_process and progress

    def reached_max_steps() -> bool:
        return max_steps is not None and state.global_step >= max_steps

    while state.epoch < num_epochs and not reached_max_steps():
        epoch = state.epoch
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)  # this epoch's order, the same on a resumed run
        model.train()
        # A resumed run skips the batches of this epoch it has already trained on; batches left
        # over at the end of an epoch (fewer than grad_accum_steps) are not used.
        batches = itertools.islice(train_loader, state.step_in_epoch * grad_accum_steps,
                                   steps_per_epoch * grad_accum_steps)
        bar = tqdm(total=steps_per_epoch, initial=state.step_in_epoch, disable=not show,
                   desc=f"Epoch {epoch + 1}/{num_epochs}", unit="step", leave=False)
        for _ in range(state.step_in_epoch, steps_per_epoch):
            micro_batches = list(itertools.islice(batches, grad_accum_steps))
            lr = None if lr_schedule is None else lr_schedule(state.global_step)
            loss = train_step(model, micro_batches, optimizer, device, amp_dtype=amp_dtype, grad_clip=grad_clip,
                              lr=lr)
            loss = all_reduce_mean(loss)  # the global batch's loss (unchanged on one process)
            bar.update()

            state.global_step += 1
            state.step_in_epoch += 1
            state.tokens_seen += sum(input_batch.numel() for input_batch, _ in micro_batches) * world_size
            state.step_losses.append(loss)
            if tb_writer is not None and is_main_process:
                tb_writer.add_scalar("loss/train_step", state.step_losses[-1], state.global_step)
                if lr is not None:
                    tb_writer.add_scalar("lr", lr, state.global_step)

            step = state.global_step - 1  # 0-based, as the book prints it
            if step % eval_freq == 0:
                with autocast_context(device, amp_dtype):
                    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                # Under DDP each process evaluated its share of the same batches: average them.
                train_loss, val_loss = all_reduce_mean(train_loss), all_reduce_mean(val_loss)
                state.train_losses.append(train_loss)
                state.val_losses.append(val_loss)
                state.track_tokens_seen.append(state.tokens_seen)
                state.eval_steps.append(step)
                if is_main_process:
                    tqdm.write(f"Ep {epoch + 1} (Step {step:06d}): Train loss {train_loss:.3f}, "
                               f"Val loss {val_loss:.3f}")
                    if tb_writer is not None:
                        tb_writer.add_scalar("loss/train", train_loss, state.global_step)
                        tb_writer.add_scalar("loss/val", val_loss, state.global_step)
            if reached_max_steps():
                break
        bar.close()

        if state.step_in_epoch >= steps_per_epoch:  # the epoch is complete
            state.epoch, state.step_in_epoch = epoch + 1, 0
        rank_rng_states = gather_rng_states() if checkpoint_path is not None else None  # every rank takes part
        if is_main_process:
            if start_context is not None and tokenizer is not None:
                generate_and_print_sample(unwrap_model(model), tokenizer, device, start_context)
            if checkpoint_path is not None:
                save_checkpoint(checkpoint_path, model, optimizer, state, checkpoint_extra, rank_rng_states)
    return state
