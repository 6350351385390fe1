"""Opt-in ways to train faster (bonus material of chapter 5), used by ch05/gpt_train.py and the benchmarks.

None of them changes what the model computes; each one changes how:

- `autocast_context`: mixed precision. Matrix multiplications run in bfloat16
  (about twice as fast on GPUs with tensor cores, half the activation memory)
  while the weights and the optimizer stay in float32. bfloat16 keeps float32's
  exponent range, so no loss scaling is needed (float16 would need one).
- `compile_model`: `torch.compile` fuses many small operations into few kernels;
  where the platform has no working compiler it falls back to the plain model.
- `make_adamw`: AdamW with ``fused=True``: one kernel updates all parameters.
- `lr_at_step` / `make_lr_schedule`: linear warmup, then cosine decay of the
  learning rate (the book's appendix D explains why).
- `pad_vocab_size`: GPT-2's 50,257 tokens rounded up to 50,304 (a multiple of
  64), a shape GPU matrix kernels handle faster; build the model with
  ``padded_vocab_size`` in its config and the extra tokens are never predicted.
- fused kernels for attention, layer norm and GELU are the model config's
  ``"fast": True`` (`buildllm.config.GPTConfig`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Callable

import torch
import torch.nn as nn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LR_SCHEDULES = ("constant", "cosine")


# --- Mixed precision ------------------------------------------------------------------------------

def check_dtype_supported(device: torch.device, dtype: str) -> torch.dtype | None:
    """Return the autocast dtype for `dtype` ("float32" -> None: no autocast); raise ValueError if `device` lacks it."""
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    if dtype == "float32":
        return None
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ValueError(
            f"This GPU ({_gpu_name(device)}) does not support bfloat16 (it needs compute capability 8.0 or newer: "
            f"A100, RTX 30xx, H100 ...; V100 and T4 do not have it). Use float32 instead."
        )
    if device.type == "mps":
        try:
            torch.ones(1, device=device, dtype=torch.bfloat16)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"This Mac's MPS backend does not support bfloat16 ({exc}); use float32.") from None
    if device.type not in ("cuda", "cpu", "mps"):
        raise ValueError(f"bfloat16 autocast is not set up for device type {device.type!r}; use float32.")
    return DTYPES[dtype]


def _gpu_name(device: torch.device) -> str:
    try:
        return torch.cuda.get_device_name(device)
    except (RuntimeError, AssertionError):
        return "unknown"


def autocast_context(device: torch.device, amp_dtype: torch.dtype | None):
    """Return a context in which matrix products run in `amp_dtype` (None: a context that changes nothing)."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype)


# --- torch.compile with a fallback ----------------------------------------------------------------

def compile_model(model: nn.Module, example_input: torch.Tensor, backend: str = "inductor",
                  amp_dtype: torch.dtype | None = None) -> nn.Module:
    """Return `torch.compile(model)`, compiled now on `example_input` (b, T); on failure warn and return `model`.

    torch.compile compiles lazily, at the first call, so a missing C compiler (CPU)
    or Triton (GPU) would otherwise only show up in the middle of training. Running
    one forward and backward pass here turns such a failure into a warning and the
    plain model. The random generators are restored afterwards (dropout draws here
    do not shift the run) and the gradients are cleared.
    """
    device = example_input.device
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        try:
            compiled = torch.compile(model, backend=backend)
            with autocast_context(device, amp_dtype):
                logits = compiled(example_input)
            logits.float().mean().backward()
        except Exception as exc:  # noqa: BLE001 -- any compiler failure means "train without it"
            warnings.warn(
                f"torch.compile (backend {backend!r}) does not work here ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no message'}); training without it. "
                "On CPU it needs a C++ compiler (gcc/clang), on NVIDIA GPUs the triton package; "
                "train without compiling to silence this.",
                stacklevel=2,
            )
            return model
        finally:
            model.zero_grad(set_to_none=True)
    return compiled


# --- Fused AdamW ----------------------------------------------------------------------------------

def make_adamw(params, lr: float, weight_decay: float, fused: bool = False) -> torch.optim.AdamW:
    """Return AdamW; with ``fused=True`` PyTorch's fused kernel where this device supports it, else (with a warning) the default."""
    params = list(params)
    if fused:
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, ValueError, TypeError) as exc:
            warnings.warn(f"Fused AdamW is not available for these parameters ({exc}); using the default AdamW.",
                          stacklevel=2)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


# --- Learning-rate schedule -----------------------------------------------------------------------

def lr_at_step(step: int, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0,
               schedule: str = "cosine") -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup to `base_lr`, then constant or cosine to `min_lr`.

    Warmup: step s < warmup_steps uses base_lr * (s + 1) / warmup_steps.
    Cosine: afterwards the rate follows half a cosine from base_lr (at step
    warmup_steps) down to min_lr (at step total_steps) and stays there.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"Unknown learning-rate schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)}.")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0 (0 = no warmup), got {warmup_steps}.")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))  # 0 -> 1
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_lr_schedule(base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0,
                     schedule: str = "constant") -> Callable[[int], float] | None:
    """Return step -> learning rate, or None for a constant rate without warmup (the book: the optimizer's lr is left alone)."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0 (0 = no warmup), got {warmup_steps}.")
    if not 0.0 <= min_lr <= base_lr:
        raise ValueError(f"min_lr must be between 0 and the learning rate {base_lr}, got {min_lr}.")
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"Unknown learning-rate schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)}.")
    if schedule == "constant" and warmup_steps == 0:
        return None
    return lambda step: lr_at_step(step, base_lr, total_steps, warmup_steps, min_lr, schedule)


# --- Vocabulary padding ---------------------------------------------------------------------------

def pad_vocab_size(vocab_size: int, multiple: int = 64) -> int:
    """Round `vocab_size` up to a multiple of `multiple` (50257 -> 50304)."""
    if multiple < 1:
        raise ValueError(f"multiple must be at least 1, got {multiple}.")
    return -(-vocab_size // multiple) * multiple
