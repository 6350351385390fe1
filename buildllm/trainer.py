"""The resumable training loop of ``ch05/gpt_train.py`` (chapter 5 and appendix A's multi-GPU training).

`train_model` does the work of the book's `buildllm.training.train_model_simple`
but can stop and resume exactly: a checkpoint (`buildllm.checkpoints.save_checkpoint`)
holds the model, the optimizer, where the run stands (`TrainingState`) and the random
generators' states, and the training batches come in an order fixed by
``seed + epoch`` (`EpochShuffleSampler`), so a resumed run sees the very batches and
dropout masks that an uninterrupted run would have seen. Checkpoints are written at
every epoch's end and, with ``checkpoint_every``, every that many steps.

Under torchrun (several processes, DistributedDataParallel) each process trains on
its share of every global batch, losses are averaged over the processes, and only the
main process prints and saves. Everything about one run (device, evaluation, where to
save, speed options, logging) is one `TrainRun`; its speed options keep the book's
behaviour when left at their defaults.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm  # the plain text bar: tqdm.auto warns in notebooks without ipywidgets

from .checkpoints import gather_rng_states, save_checkpoint, unwrap_model
from .data import GPTDatasetV1
from .distributed import all_reduce_mean
from .speed import autocast_context
from .training import calc_loss_batch, evaluate_model, format_losses, generate_and_print_sample


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


def create_pretraining_dataloaders(text: str, tokenizer, context_length: int, batch_size: int,
                                   train_ratio: float = 0.90, seed: int = 123, num_workers: int = 0,
                                   num_replicas: int = 1, rank: int = 0) -> tuple[DataLoader, DataLoader]:
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
            f"processes, a smaller batch size, a shorter context length or a longer text."
        )
    if len(val_dataset) < num_replicas:
        raise ValueError(
            f"The validation part has {len(val_dataset)} samples, fewer than the {num_replicas} processes: "
            f"use fewer processes, a shorter context length or a larger share for validation (train_ratio)."
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
        """Rebuild a state saved with `to_dict`; ValueError if fields are missing, unknown or of the wrong type."""
        if not isinstance(data, dict):
            raise ValueError(f"a training state is a dict, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(f"fields {sorted(set(data) ^ names)} missing or unknown")
        for name in ("epoch", "step_in_epoch", "global_step", "tokens_seen"):
            if isinstance(data[name], bool) or not isinstance(data[name], int) or data[name] < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {data[name]!r}")
        return cls(**data)




@dataclass
class TrainRun:
    """Everything about one training run besides the model, the data and the optimizer."""

    device: torch.device
    num_epochs: int
    eval_freq: int = 5  # evaluate every this many optimizer steps (from step 0)
    eval_iter: int = 5  # batches per evaluation
    max_steps: int | None = None  # stop after this many optimizer steps in total (counting before a resume)
    start_context: str | None = None  # prompt of the sample printed after each epoch (needs `tokenizer`)
    tokenizer: object = None
    checkpoint_path: Path | None = None  # where to save checkpoints (None: never)
    checkpoint_every: int | None = None  # also save every this many steps (None: only at epoch ends)
    checkpoint_extra: dict | None = None  # plain values kept in every checkpoint (e.g. the run's settings)
    log_scalar: Callable[[str, float, int], None] | None = None  # e.g. a TensorBoard writer's add_scalar
    is_main_process: bool = True  # rank 0: the process that prints, logs and saves
    world_size: int = 1  # processes training together (torchrun)
    progress: bool = True  # a tqdm bar per epoch
    grad_accum_steps: int = 1  # batches per optimizer step
    lr_schedule: Callable[[int], float] | None = None  # 0-based step -> learning rate (None: the optimizer's)
    grad_clip: float | None = None  # cap on the gradients' total norm
    amp_dtype: torch.dtype | None = None  # e.g. torch.bfloat16: forward passes under autocast

    def __post_init__(self):
        for name in ("num_epochs", "eval_freq", "eval_iter", "grad_accum_steps", "world_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("max_steps", "checkpoint_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (or None), got {getattr(self, name)}.")


def train_step(model, micro_batches: list[tuple[torch.Tensor, torch.Tensor]], optimizer, device, *,
               amp_dtype: torch.dtype | None = None, grad_clip: float | None = None,
               lr: float | None = None) -> float:
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


def train_model(model, train_loader, val_loader, optimizer, run: TrainRun,
                state: TrainingState | None = None) -> TrainingState:
    """Train like `buildllm.training.train_model_simple`, resumably, as `run` says; return the final `TrainingState`.

    Pass the `state` returned by `buildllm.checkpoints.load_checkpoint` to resume.
    Under DDP the recorded losses are the means over all processes and tokens_seen
    counts every process's tokens.
    """
    steps_per_epoch = len(train_loader) // run.grad_accum_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"The training loader has {len(train_loader)} batches per epoch, fewer than grad_accum_steps="
            f"{run.grad_accum_steps}: not one optimizer step. Use fewer accumulation steps or a smaller batch size."
        )
    state = state or TrainingState()
    main = run.is_main_process

    def reached_max_steps() -> bool:
        return run.max_steps is not None and state.global_step >= run.max_steps

    def checkpoint() -> None:
        rank_rng_states = gather_rng_states()  # every rank takes part
        if main:
            save_checkpoint(run.checkpoint_path, model, optimizer, state, run.checkpoint_extra, rank_rng_states)

    while state.epoch < run.num_epochs and not reached_max_steps():
        epoch = state.epoch
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)  # this epoch's order, the same on a resumed run
        model.train()
        # A resumed run skips the batches of this epoch it has already trained on; batches left
        # over at the end of an epoch (fewer than grad_accum_steps) are not used.
        batches = itertools.islice(train_loader, state.step_in_epoch * run.grad_accum_steps,
                                   steps_per_epoch * run.grad_accum_steps)
        bar = tqdm(total=steps_per_epoch, initial=state.step_in_epoch, disable=not (main and run.progress),
                   desc=f"에포크 {epoch + 1}/{run.num_epochs}", unit="스텝", leave=False)
        for _ in range(state.step_in_epoch, steps_per_epoch):
            micro_batches = list(itertools.islice(batches, run.grad_accum_steps))
            lr = None if run.lr_schedule is None else run.lr_schedule(state.global_step)
            loss = train_step(model, micro_batches, optimizer, run.device, amp_dtype=run.amp_dtype,
                              grad_clip=run.grad_clip, lr=lr)
            loss = all_reduce_mean(loss)  # the global batch's loss (unchanged on one process)
            bar.update()

            state.global_step += 1
            state.step_in_epoch += 1
            state.tokens_seen += sum(input_batch.numel() for input_batch, _ in micro_batches) * run.world_size
            state.step_losses.append(loss)
            if run.log_scalar is not None and main:
                run.log_scalar("loss/train_step", loss, state.global_step)
                if lr is not None:
                    run.log_scalar("lr", lr, state.global_step)

            step = state.global_step - 1  # 0-based, as the chapter counts
            if step % run.eval_freq == 0:
                with autocast_context(run.device, run.amp_dtype):
                    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, run.device, run.eval_iter)
                # Under DDP each process evaluated its share of the same batches: average them.
                train_loss, val_loss = all_reduce_mean(train_loss), all_reduce_mean(val_loss)
                state.train_losses.append(train_loss)
                state.val_losses.append(val_loss)
                state.track_tokens_seen.append(state.tokens_seen)
                state.eval_steps.append(step)
                if main:
                    tqdm.write(format_losses(epoch + 1, run.num_epochs, step, train_loss, val_loss))
                    if run.log_scalar is not None:
                        run.log_scalar("loss/train", train_loss, state.global_step)
                        run.log_scalar("loss/val", val_loss, state.global_step)
            if reached_max_steps():
                break
            if (run.checkpoint_path is not None and run.checkpoint_every is not None
                    and state.global_step % run.checkpoint_every == 0 and state.step_in_epoch < steps_per_epoch):
                checkpoint()
        bar.close()

        if state.step_in_epoch >= steps_per_epoch:  # the epoch is complete
            state.epoch, state.step_in_epoch = epoch + 1, 0
        if main and run.start_context is not None and run.tokenizer is not None:
            generate_and_print_sample(unwrap_model(model), run.tokenizer, run.device, run.start_context)
        if run.checkpoint_path is not None:
            checkpoint()
    return state
