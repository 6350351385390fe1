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
- `pad_vocab` / `mask_padded_vocab`: GPT-2's 50,257 tokens padded to
  50,304 (a multiple of 64), a shape GPU matrix kernels handle faster; the extra
  tokens' logits are masked to -inf, so they never get probability.
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
            f"A100, RTX 30xx, H100 ...; V100 and T4 do not have it). Train with --dtype float32 instead."
        )
    if device.type == "mps":
        try:
            torch.ones(1, device=device, dtype=torch.bfloat16)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"This Mac's MPS backend does not support bfloat16 ({exc}); use --dtype float32.") from None
    if device.type not in ("cuda", "cpu", "mps"):
        raise ValueError(f"bfloat16 autocast is not set up for device type {device.type!r}; use --dtype float32.")
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
                "leave out --compile to silence this.",
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
        raise ValueError(f"--warmup-steps must be >= 0 (0 = no warmup), got {warmup_steps}.")
    if not 0.0 <= min_lr <= base_lr:
        raise ValueError(f"--min-lr must be between 0 and the learning rate {base_lr}, got {min_lr}.")
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


def pad_vocab(model: nn.Module, multiple: int = 64) -> nn.Module:
    """Grow a `GPTModel`'s vocabulary to a multiple of `multiple` in place, keeping its weights; return it.

    The token embedding and the output layer get zero rows for the padding tokens
    (nothing random is drawn, so the run's random numbers stay those of the
    unpadded model), the output layer masks them (`PaddedVocabHead`), and
    ``model.cfg`` records both sizes: "vocab_size" (padded) and "unpadded_vocab_size".
    """
    if "unpadded_vocab_size" in model.cfg:
        return model  # already padded
    real = model.cfg["vocab_size"]
    padded = pad_vocab_size(real, multiple)
    for layer in (model.tok_emb, model.out_head):  # both hold a (vocab_size, emb_dim) weight
        old = layer.weight
        grown = torch.zeros(padded, old.shape[1], device=old.device, dtype=old.dtype)
        grown[:real] = old.detach()
        layer.weight = nn.Parameter(grown)
    model.tok_emb.num_embeddings = padded
    model.out_head.out_features = padded
    model.cfg.update(vocab_size=padded, unpadded_vocab_size=real)
    return mask_padded_vocab(model)


class PaddedVocabHead(nn.Linear):
    """The output layer of a padded vocabulary: logits of the padding tokens (IDs >= unpadded_vocab_size) are -inf.

    With -inf logits the padding tokens get probability 0: in the loss (their
    gradient is 0, so training never needs them), in sampling and in argmax.
    Same parameters as the `nn.Linear` it replaces (same state dict).
    """

    unpadded_vocab_size: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)  # (..., padded vocab_size)
        padding = torch.arange(logits.shape[-1], device=logits.device) >= self.unpadded_vocab_size
        return logits.masked_fill(padding, -torch.inf)

    @classmethod
    def from_linear(cls, linear: nn.Linear, unpadded_vocab_size: int) -> "PaddedVocabHead":
        """Return a head sharing `linear`'s weight (no copy) that masks the IDs from `unpadded_vocab_size` on."""
        head = cls.__new__(cls)
        head.__dict__.update(linear.__dict__)
        head.unpadded_vocab_size = unpadded_vocab_size
        return head


def mask_padded_vocab(model: nn.Module) -> nn.Module:
    """If `model.cfg` records a padded vocabulary, make its output head mask the padding tokens; return `model`."""
    real = model.cfg.get("unpadded_vocab_size")
    if real is not None and real < model.cfg["vocab_size"] and not isinstance(model.out_head, PaddedVocabHead):
        model.out_head = PaddedVocabHead.from_linear(model.out_head, real)
    return model
