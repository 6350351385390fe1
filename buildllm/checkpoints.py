"""Saving and loading models and training runs (chapter 5, used by chapters 6-7 and appendix E).

Two kinds of file, both written atomically and read with ``torch.load(...,
weights_only=True)`` (tensors and plain Python values only: reading a file never runs
code from it):

- a *model file* (`save_model` / `load_model`, usually ``model.pth``): the
  architecture's name, its config, the weights and a small ``meta`` dict (what the
  model was trained for, its tokenizer, settings a user needs later);
- a *training checkpoint* (`save_checkpoint` / `load_checkpoint`, ``checkpoint.pth``):
  a model file plus the optimizer, where the run stands (`TrainingState`) and the
  random number generators' states, enough to resume exactly.

Every problem reading either kind raises `ModelFileError` naming the file and what to do.
"""

from __future__ import annotations

import importlib
import pickle
import random
import zipfile
from pathlib import Path

import torch
import torch.distributed as dist

from .distributed import get_world_size, is_distributed
from .files import atomic_torch_save

# Model classes by the name model files store; imported only when a file needs them.
ARCHITECTURES = {
    "gpt": ("buildllm.model", "GPTModel"),
    "llama": ("buildllm.llama", "LlamaModel"),
    "qwen3": ("buildllm.qwen3", "Qwen3Model"),
}
# Config keys that change what a model computes or how it stores parameters (all others may differ on resume).
_RUNTIME_KEYS = ("drop_rate", "fast")
CHECKPOINT_KEYS = ("architecture", "config", "model_state_dict", "optimizer_state_dict", "training_state",
                   "rng_states", "extra")


class ModelFileError(ValueError):
    """A model file or training checkpoint cannot be used; the message names the file and what to do."""


def unwrap_model(model):
    """Return the plain model inside a DistributedDataParallel (.module) or torch.compile (._orig_mod) wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _model_class(architecture: str):
    if architecture not in ARCHITECTURES:
        raise ModelFileError(f"Unknown architecture {architecture!r}; this version knows {', '.join(ARCHITECTURES)}.")
    module, name = ARCHITECTURES[architecture]
    return getattr(importlib.import_module(module), name)


def read_torch_file(path: str | Path, what: str = "model file") -> object:
    """`torch.load` with weights_only=True, turning every failure into a `ModelFileError` that says what to do."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"No {what} at {path}.")
    if not path.is_file():
        raise ModelFileError(f"{path} is a folder, not a {what}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise ModelFileError(f"Cannot read {path}: permission denied. Fix the file's permissions.") from None
    except pickle.UnpicklingError:
        # PyTorch's own message suggests weights_only=False, which would run whatever code the file holds.
        raise ModelFileError(
            f"{path} holds Python objects other than tensors and plain values, so it was not loaded (loading it "
            f"could run code from the file). Only load files written by this project (save_model/save_checkpoint) "
            f"or from a source you trust; re-save trusted weights as a state dict or safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ModelFileError(
            f"{path} is not a readable {what}: it is truncated or corrupt ({type(exc).__name__}). Write it "
            f"again (re-run the training or copy it again)."
        ) from None


def _upgrade_config(config: dict, meta: dict) -> dict:
    """Read configs written by earlier versions: padded vocabularies and classifier lengths were stored differently."""
    config = dict(config)
    if "unpadded_vocab_size" in config:
        config["padded_vocab_size"] = config["vocab_size"]
        config["vocab_size"] = config.pop("unpadded_vocab_size")
    if "max_length" in config:
        meta.setdefault("max_length", config.pop("max_length"))
    return config


def build_model(architecture: str, config: dict, path: str | Path = "the file"):
    """Build an empty model of `architecture` from `config`, reporting a bad config as a `ModelFileError`."""
    cls = _model_class(architecture)
    try:
        return cls(config)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"{path} holds a config this version cannot build: {exc}") from None


def _load_state(model, state_dict, path) -> None:
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"The weights in {path} do not fit the model its config describes ({first}). "
                             f"The file is damaged; write it again.") from None


def _model_payload(model, kind: str) -> dict:
    """What every file of `kind` ("model" or "checkpoint") starts with: architecture, config, weights."""
    model = unwrap_model(model)
    return {"format": f"buildllm-{kind}", "architecture": getattr(model, "architecture", "gpt"),
            "config": model.cfg.to_dict(), "model_state_dict": model.state_dict()}


def save_model(model, path: str | Path, meta: dict | None = None) -> Path:
    """Save a model's architecture name, config, weights and `meta` (plain values) to `path`, atomically."""
    return atomic_torch_save({**_model_payload(model, "model"), "meta": dict(meta or {})}, path)


def read_model_file(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model saved in `path` by `save_model` (or a training checkpoint); return (model, meta)."""
    payload = read_torch_file(path)
    if not isinstance(payload, dict) or "config" not in payload or "model_state_dict" not in payload:
        raise ModelFileError(
            f"{path} is not a model file of this project (it lacks 'config' and 'model_state_dict'). Give a "
            f"model.pth written by buildllm.checkpoints.save_model, or a training checkpoint."
        )
    meta = dict(payload.get("meta") or {})
    config = _upgrade_config(payload["config"], meta)
    model = build_model(payload.get("architecture", "gpt"), config, path)
    _load_state(model, payload["model_state_dict"], path)
    return model.to(device), meta


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model saved in `path` (safe loading: weights_only=True), on `device`."""
    return read_model_file(path, device)[0]


# --- Training checkpoints ----------------------------------------------------------------------------


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


def gather_rng_states() -> list[dict] | None:
    """Every process's RNG states in rank order (call it on every rank of a DDP run); None without a process group."""
    if not is_distributed():
        return None
    states = [None] * get_world_size()
    dist.all_gather_object(states, get_rng_states())
    return states


def check_same_architecture(saved_cfg: dict, cfg: dict, source: str = "the checkpoint") -> None:
    """Raise ModelFileError naming every setting that changes the weights in which `saved_cfg` and `cfg` differ."""
    keys = sorted((set(saved_cfg) | set(cfg)) - set(_RUNTIME_KEYS))
    diffs = [f"{key} {saved_cfg.get(key)} vs {cfg.get(key)}" for key in keys if saved_cfg.get(key) != cfg.get(key)]
    if diffs:
        raise ModelFileError(
            f"{source} was saved from a different architecture ({', '.join(diffs)}: checkpoint vs this model). "
            f"Build the model with the checkpoint's settings."
        )


def save_checkpoint(path, model, optimizer, state, extra: dict | None = None,
                    rank_rng_states: list[dict] | None = None) -> Path:
    """Save everything needed to resume training (model, optimizer, `state`, RNG states) atomically to `path`.

    The file also loads with `load_model`. `extra` is a dict of plain values to keep
    beside (e.g. the run's settings). `rank_rng_states` (from `gather_rng_states`)
    keeps every DDP process's RNG states.
    """
    payload = {
        **_model_payload(model, "checkpoint"),
        "optimizer_state_dict": optimizer.state_dict(),
        "training_state": state.to_dict(),
        "rng_states": get_rng_states(),
        "extra": dict(extra or {}),
    }
    if rank_rng_states is not None:
        payload["rng_states_by_rank"] = list(rank_rng_states)
    return atomic_torch_save(payload, path)


def load_checkpoint(path, model, optimizer=None, restore_rng: bool = True, rank: int = 0):
    """Load a `save_checkpoint` file into `model` (and `optimizer`); restore RNG states; return (state, extra).

    In a DDP run pass the process's `rank`: it gets back its own RNG states when the
    checkpoint holds one per process (else those of the process that saved it).
    """
    from .trainer import TrainingState

    payload = read_torch_file(path, "training checkpoint")
    if not isinstance(payload, dict) or any(key not in payload for key in CHECKPOINT_KEYS[1:]):
        raise ModelFileError(
            f"{path} is not a training checkpoint (a model.pth holds only the weights and cannot resume "
            f"training). Give the checkpoint.pth of the run."
        )
    model = unwrap_model(model)
    meta: dict = {}
    check_same_architecture(_upgrade_config(payload["config"], meta), model.cfg.to_dict(), source=str(path))
    try:
        state = TrainingState.from_dict(payload["training_state"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path} has a malformed training state ({exc}); it cannot be resumed.") from None
    _load_state(model, payload["model_state_dict"], path)
    if optimizer is not None:
        try:
            optimizer.load_state_dict(payload["optimizer_state_dict"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(f"The optimizer state in {path} does not fit this optimizer ({exc}).") from None
    if restore_rng:
        by_rank = payload.get("rng_states_by_rank") or []
        try:
            set_rng_states(by_rank[rank] if rank < len(by_rank) else payload["rng_states"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{path} has malformed random-generator states ({exc}).") from None
    return state, payload.get("extra", {})
