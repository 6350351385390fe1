"""OpenAI's GPT-2 weights in our `GPTModel` (chapter 5).

GPT-2 checkpoints come in two formats: OpenAI's TensorFlow checkpoint and the
Hugging Face state dict (safetensors). Both name the same tensors; this module
works with the Hugging Face names, which read like this::

    wte.weight, wpe.weight                  token and position embeddings
    h.{i}.ln_1.weight / .bias               LayerNorm before attention   (block i)
    h.{i}.attn.c_attn.weight / .bias        query, key and value, side by side
    h.{i}.attn.c_proj.weight / .bias        attention output projection
    h.{i}.ln_2.weight / .bias               LayerNorm before the feed forward network
    h.{i}.mlp.c_fc.weight / .bias           feed forward: emb_dim -> 4*emb_dim
    h.{i}.mlp.c_proj.weight / .bias         feed forward: 4*emb_dim -> emb_dim
    ln_f.weight / .bias                     final LayerNorm

GPT-2 stores its linear layers as "Conv1D": weight shape (in_features,
out_features), the transpose of `nn.Linear`'s (out_features, in_features).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from .download import ChecksumError, DownloadError, download_file, open_url, verify_file
from .model import GPT2_SIZE_ALIASES, GPT2_SIZES, GPTModel, get_gpt2_config, set_dropout

# Keys a GPT-2 state dict may hold that have no counterpart to load:
# lm_head.weight is the same matrix as wte.weight (weight tying), and
# h.{i}.attn.bias / h.{i}.attn.masked_bias are constant causal-mask buffers, not
# weights (older checkpoints have them). The leading dot keeps "c_attn.bias" out.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_IGNORED_KEYS = ("lm_head.weight",)


def _strip_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the `transformer.` prefix that `GPT2LMHeadModel.state_dict()` puts on every key."""
    stripped = {}
    for key, value in state_dict.items():
        if key.startswith("transformer."):
            key = key[len("transformer."):]
        stripped[key] = value
    return stripped


def _take(weights: dict[str, Tensor], key: str, expected_shape: tuple[int, ...]) -> Tensor:
    """Pop `key` from `weights`, checking that it has `expected_shape` (GPT-2's layout)."""
    if key not in weights:
        raise KeyError(
            f"The GPT-2 state dict has no key {key!r} (expected shape {expected_shape}). "
            f"Is it a complete GPT-2 checkpoint, and does the model have as many layers as the checkpoint?"
        )
    tensor = weights.pop(key)
    if tuple(tensor.shape) != tuple(expected_shape):
        raise ValueError(
            f"Shape mismatch for {key!r}: the checkpoint has {tuple(tensor.shape)}, the model expects "
            f"{tuple(expected_shape)}. Build GPTModel with the checkpoint's configuration "
            f"(get_gpt2_config(model_size, context_length=1024, qkv_bias=True))."
        )
    return tensor


def load_weights_into_gpt(gpt: GPTModel, state_dict: Mapping[str, Tensor]) -> GPTModel:
    """Copy a Hugging Face-format GPT-2 state dict into `gpt` (in place) and return `gpt`.

    Every key and shape is checked before the first value is copied, so a
    checkpoint that does not fit raises an error and leaves `gpt` as it was.
    """
    if not gpt.cfg["qkv_bias"]:
        raise ValueError(
            "GPT-2 uses a bias in its query/key/value projections, but this GPTModel was built with "
            "qkv_bias=False. Build it with qkv_bias=True, e.g. GPTModel({**GPT_CONFIG_124M, 'qkv_bias': True})."
        )
    weights = _strip_prefix(state_dict)
    for key in list(weights):
        if key in _IGNORED_KEYS or key.endswith(_IGNORED_SUFFIXES):
            del weights[key]

    copies: list[tuple[Tensor, Tensor]] = []  # (parameter, value), copied once everything has been checked

    def _assign(param: Tensor, value: Tensor) -> None:
        copies.append((param, value))

    emb = gpt.cfg["emb_dim"]
    vocab = gpt.cfg["vocab_size"]
    context = gpt.cfg["context_length"]

    # Embeddings: same layout in both models.
    wte = _take(weights, "wte.weight", (vocab, emb))
    _assign(gpt.tok_emb.weight, wte)
    _assign(gpt.pos_emb.weight, _take(weights, "wpe.weight", (context, emb)))

    for i, block in enumerate(gpt.trf_blocks):
        h = f"h.{i}."

        _assign(block.norm1.scale, _take(weights, h + "ln_1.weight", (emb,)))
        _assign(block.norm1.shift, _take(weights, h + "ln_1.bias", (emb,)))

        # c_attn holds W_query, W_key and W_value side by side: (emb, 3*emb).
        # Split it into three (emb, emb) blocks, then transpose each to nn.Linear's layout.
        c_attn_w = _take(weights, h + "attn.c_attn.weight", (emb, 3 * emb))
        q_w, k_w, v_w = torch.split(c_attn_w, emb, dim=1)  # 3 x (emb, emb)
        _assign(block.att.W_query.weight, q_w.T)
        _assign(block.att.W_key.weight, k_w.T)
        _assign(block.att.W_value.weight, v_w.T)
        c_attn_b = _take(weights, h + "attn.c_attn.bias", (3 * emb,))
        q_b, k_b, v_b = torch.split(c_attn_b, emb, dim=0)  # 3 x (emb,)
        _assign(block.att.W_query.bias, q_b)
        _assign(block.att.W_key.bias, k_b)
        _assign(block.att.W_value.bias, v_b)

        _assign(block.att.out_proj.weight, _take(weights, h + "attn.c_proj.weight", (emb, emb)).T)
        _assign(block.att.out_proj.bias, _take(weights, h + "attn.c_proj.bias", (emb,)))

        _assign(block.norm2.scale, _take(weights, h + "ln_2.weight", (emb,)))
        _assign(block.norm2.shift, _take(weights, h + "ln_2.bias", (emb,)))

        # Feed forward: ff.layers[0] is emb -> 4*emb, ff.layers[2] is 4*emb -> emb (layers[1] is GELU).
        _assign(block.ff.layers[0].weight, _take(weights, h + "mlp.c_fc.weight", (emb, 4 * emb)).T)
        _assign(block.ff.layers[0].bias, _take(weights, h + "mlp.c_fc.bias", (4 * emb,)))
        _assign(block.ff.layers[2].weight, _take(weights, h + "mlp.c_proj.weight", (4 * emb, emb)).T)
        _assign(block.ff.layers[2].bias, _take(weights, h + "mlp.c_proj.bias", (emb,)))

    _assign(gpt.final_norm.scale, _take(weights, "ln_f.weight", (emb,)))
    _assign(gpt.final_norm.shift, _take(weights, "ln_f.bias", (emb,)))

    # Weight tying: GPT-2 predicts tokens with the token embedding matrix itself.
    _assign(gpt.out_head.weight, wte)

    if weights:
        extra = sorted(weights)
        raise ValueError(
            f"The GPT-2 state dict has {len(extra)} keys this model has no place for, e.g. {extra[:5]}. "
            f"Does the checkpoint have more layers than n_layers={gpt.cfg['n_layers']}? "
            f"Build GPTModel with the checkpoint's configuration."
        )
    with torch.no_grad():
        for param, value in copies:
            param.copy_(value)
    return gpt


# ---------------------------------------------------------------------------
# Getting the weights: OpenAI's TensorFlow checkpoint or Hugging Face safetensors
# ---------------------------------------------------------------------------
#
# Both sources hold the same numbers under different names. We turn either one
# into the Hugging Face-format state dict above, so one `load_weights_into_gpt`
# serves both. Files live in one folder per size, named as OpenAI names them:
#
#     gpt2/124M/checkpoint, hparams.json, model.ckpt.*, encoder.json, vocab.bpe   (OpenAI)
#     gpt2/124M/model.safetensors                                                   (Hugging Face)


SOURCES = ("auto", "openai", "huggingface")

OPENAI_FILES = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
)
# Primary URL, then the backup mirror the book uses.
OPENAI_URLS = (
    "https://openaipublic.blob.core.windows.net/gpt-2/models/{size}/{file}",
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2/{size}/{file}",
)
# Known file sizes in bytes, used to detect truncated downloads. Only the sizes we
# know for sure are listed; other files are checked when they are read.
OPENAI_FILE_SIZES = {
    "124M": {
        "checkpoint": 77,
        "hparams.json": 90,
        "model.ckpt.data-00000-of-00001": 497759232,
        "model.ckpt.index": 5215,
        "model.ckpt.meta": 471155,
    },
}

HF_FILE = "model.safetensors"
HF_URLS = ("https://huggingface.co/openai-community/{repo}/resolve/main/model.safetensors",)
HF_REPOS = {"gpt2-small": "gpt2", "gpt2-medium": "gpt2-medium", "gpt2-large": "gpt2-large", "gpt2-xl": "gpt2-xl"}
# (size, SHA-256) of the published files we know; others are checked when read.
HF_FILE_CHECKS = {
    "gpt2-small": (548105171, "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"),
}

DOWNLOAD_RETRIES = 3
_FOLDER_NAMES = {name: folder for folder, name in GPT2_SIZE_ALIASES.items()}  # "gpt2-small" -> "124M"


class WeightsUnavailableError(RuntimeError):
    """GPT-2 weights are neither on disk nor downloadable; the message says which files to put where."""


def resolve_model_size(model_size: str) -> tuple[str, str]:
    """Return (name, folder) for a GPT-2 size given as "gpt2-small".."gpt2-xl" or "124M".."1558M"."""
    name = GPT2_SIZE_ALIASES.get(model_size, model_size)
    if name not in GPT2_SIZES:
        valid = ", ".join(f"{n} ({f})" for n, f in _FOLDER_NAMES.items())
        raise ValueError(f"Unknown GPT-2 model size {model_size!r}. Valid sizes: {valid}.")
    return name, _FOLDER_NAMES[name]


def _file_urls(source: str, name: str, folder: str, file: str) -> list[str]:
    """The URLs (primary first) of one weights file."""
    if source == "openai":
        return [template.format(size=folder, file=file) for template in OPENAI_URLS]
    return [template.format(repo=HF_REPOS[name]) for template in HF_URLS]


def _expected(source: str, name: str, folder: str, file: str) -> tuple[int | None, str | None]:
    """(size, sha256) we expect for one weights file, None where unknown."""
    if source == "openai":
        return OPENAI_FILE_SIZES.get(folder, {}).get(file), None
    return HF_FILE_CHECKS.get(name, (None, None))


def _is_valid(path: Path, size: int | None, sha256: str | None) -> bool:
    if not path.is_file():
        return False
    try:
        verify_file(path, sha256, size)
        return True
    except ChecksumError:
        return False


def _reachable(urls: list[str], timeout: float = 10.0) -> bool:
    """True if any server in `urls` answers at all (even with an HTTP error): then downloading is worth trying."""
    for url in urls:
        try:
            request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "buildllm"})
            with open_url(request, timeout):
                return True
        except urllib.error.HTTPError:
            return True  # the server answered; download_file reports the details
        except (urllib.error.URLError, OSError, TimeoutError):
            continue
    return False


def _unavailable_message(source: str, name: str, folder_path: Path, missing: list[str], reason: str) -> str:
    """Say which files are missing, where we looked, where to get them and where to put them."""
    folder = folder_path.name
    where = folder_path.resolve()
    lines = [
        f"GPT-2 weights {name} ({folder}) from {'OpenAI' if source == 'openai' else 'Hugging Face'} "
        f"are not available: {reason}",
        f"Looked in: {where}",
        "Missing: " + ", ".join(f + (" (present, but not the expected size)" if (folder_path / f).exists() else "")
                                for f in missing),
        "To fix, on a machine with internet access run",
        f"    python ch05/gpt_download.py --model-size {name} --source {source} --models-dir <folder>",
        f"and copy the folder <folder>/{folder} to {where}; or download these files by hand into {where}:",
    ]
    lines += [f"    {_file_urls(source, name, folder, f)[0]}" for f in missing]
    backups = _file_urls(source, name, folder, missing[0])[1:]
    if backups:
        lines.append(f"(backup mirror: {backups[0].rsplit('/', 1)[0]}/<file>)")
    return "\n".join(lines)


def download_gpt2_files(
    model_size: str, models_dir: str | Path = "gpt2", source: str = "openai", retries: int | None = None,
    progress: bool = True,
) -> Path:
    """Make sure the weight files of one GPT-2 size lie verified in `models_dir`/<size>; return that folder.

    Files already there (and of the right size where we know it) are used as they
    are, without any network access. Missing ones are downloaded atomically.
    """
    if source not in ("openai", "huggingface"):
        raise ValueError(f"Unknown source {source!r}; choose 'openai' or 'huggingface'.")
    name, folder = resolve_model_size(model_size)
    folder_path = Path(models_dir) / folder
    files = OPENAI_FILES if source == "openai" else (HF_FILE,)
    missing = [f for f in files if not _is_valid(folder_path / f, *_expected(source, name, folder, f))]
    if not missing:
        return folder_path
    if not _reachable(_file_urls(source, name, folder, missing[0])):
        raise WeightsUnavailableError(
            _unavailable_message(source, name, folder_path, missing, "no network connection to the download server.")
        )
    for i, file in enumerate(missing):
        size, sha256 = _expected(source, name, folder, file)
        try:
            download_file(
                _file_urls(source, name, folder, file), folder_path / file, size=size, sha256=sha256,
                retries=DOWNLOAD_RETRIES if retries is None else retries, progress=progress,
            )
        except (DownloadError, ChecksumError) as exc:
            raise WeightsUnavailableError(
                _unavailable_message(source, name, folder_path, missing[i:], f"the download failed.\n{exc}")
            ) from None
    return folder_path


# --- OpenAI's TensorFlow checkpoint -----------------------------------------

def _import_tensorflow():
    """Import TensorFlow only when an OpenAI checkpoint is read (it is slow to import and optional)."""
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError(
            "Reading OpenAI's original GPT-2 checkpoint needs TensorFlow: pip install tensorflow. "
            "Or use the Hugging Face weights (source='huggingface' / --source huggingface), which need no TensorFlow."
        ) from None
    return tf


def openai_to_hf_name(tf_name: str) -> str:
    """Map an OpenAI variable name ("model/h3/attn/c_attn/w") to its Hugging Face key ("h.3.attn.c_attn.weight")."""
    parts = tf_name.split("/")  # e.g. ["model", "h3", "attn", "c_attn", "w"]
    if parts[0] != "model" or len(parts) < 2:
        raise ValueError(f"Unexpected variable {tf_name!r} in the OpenAI checkpoint: not a GPT-2 weight.")
    if parts[1:] in (["wte"], ["wpe"]):
        return parts[1] + ".weight"  # the two embedding matrices
    *path, kind = parts[1:]  # kind: g (LayerNorm gain), b (bias) or w (weight)
    if not path or kind not in ("g", "b", "w"):
        raise ValueError(f"Unexpected variable {tf_name!r} in the OpenAI checkpoint: not a GPT-2 weight.")
    if re.fullmatch(r"h\d+", path[0]):
        path[0] = "h." + path[0][1:]  # block "h3" -> "h.3"
    return ".".join(path) + (".bias" if kind == "b" else ".weight")


def load_openai_checkpoint(model_dir: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """Read an OpenAI GPT-2 folder (hparams.json + model.ckpt.*) into (settings, Hugging Face-format state dict)."""
    model_dir = Path(model_dir)
    tf = _import_tensorflow()
    settings = json.loads((model_dir / "hparams.json").read_text(encoding="utf-8"))
    try:
        reader = tf.train.load_checkpoint(str(model_dir / "model.ckpt"))
        state_dict = {}
        for tf_name in sorted(reader.get_variable_to_shape_map()):
            if not tf_name.startswith("model/"):
                continue  # bookkeeping variables, not weights
            array = reader.get_tensor(tf_name)
            if array.ndim == 3 and array.shape[0] == 1:
                array = array[0]  # conv weights are (1, in, out): drop the leading 1 -> Conv1D layout (in, out)
            state_dict[openai_to_hf_name(tf_name)] = torch.from_numpy(array.copy())
    except (tf.errors.OpError, ValueError) as exc:
        raise WeightsUnavailableError(
            f"Could not read the OpenAI checkpoint in {model_dir.resolve()}: {exc}\n"
            f"A file is probably truncated or corrupt. Delete the folder and download it again "
            f"(python ch05/gpt_download.py)."
        ) from None
    return settings, state_dict


def download_and_load_gpt2(model_size: str, models_dir: str | Path = "gpt2") -> tuple[dict, dict[str, Tensor]]:
    """Download (if needed) and read OpenAI's GPT-2 checkpoint; return (hparams settings, HF-format state dict)."""
    folder_path = download_gpt2_files(model_size, models_dir, source="openai")
    return load_openai_checkpoint(folder_path)


# --- Hugging Face safetensors -----------------------------------------------

def settings_from_state_dict(state_dict: Mapping[str, Tensor], n_head: int) -> dict:
    """Describe a GPT-2 state dict in hparams.json's words (the head count is not visible in the weights)."""
    weights = _strip_prefix(state_dict)
    n_layer = sum(1 for key in weights if re.fullmatch(r"h\.\d+\.ln_1\.weight", key))
    vocab, emb = weights["wte.weight"].shape
    return {"n_vocab": vocab, "n_ctx": weights["wpe.weight"].shape[0], "n_embd": emb, "n_head": n_head,
            "n_layer": n_layer}


def load_safetensors_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read a GPT-2 model.safetensors; a truncated or corrupt file is deleted and reported, never loaded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        path.unlink(missing_ok=True)
        raise WeightsUnavailableError(
            f"{path.resolve()} is truncated or corrupt ({exc}); it was deleted. Download it again "
            f"(python ch05/gpt_download.py --source huggingface)."
        ) from None


def download_and_load_gpt2_safetensors(
    model_size: str, models_dir: str | Path = "gpt2"
) -> tuple[dict, dict[str, Tensor]]:
    """Download (if needed) and read Hugging Face's GPT-2 safetensors; return (settings, state dict). No TensorFlow."""
    name, _ = resolve_model_size(model_size)
    folder_path = download_gpt2_files(model_size, models_dir, source="huggingface")
    state_dict = load_safetensors_checkpoint(folder_path / HF_FILE)
    return settings_from_state_dict(state_dict, GPT2_SIZES[name]["n_heads"]), state_dict


# --- One call for the chapters ------------------------------------------------

def _has_local_files(source: str, model_size: str, models_dir: str | Path) -> bool:
    name, folder = resolve_model_size(model_size)
    files = OPENAI_FILES if source == "openai" else (HF_FILE,)
    return all(_is_valid(Path(models_dir) / folder / f, *_expected(source, name, folder, f)) for f in files)


def load_pretrained_gpt(
    model_size: str = "gpt2-small",
    models_dir: str | Path = "gpt2",
    source: str = "auto",
    device: str | torch.device = "cpu",
    **config_overrides,
) -> GPTModel:
    """Return a GPTModel with OpenAI's GPT-2 weights, in eval mode (qkv_bias=True, context 1024 unless overridden).

    ``source="auto"`` uses files already in `models_dir` first (either format), then
    tries to download the Hugging Face safetensors (no TensorFlow needed), then
    OpenAI's checkpoint. Raises `WeightsUnavailableError` when nothing works.
    `config_overrides` change the config, e.g. ``drop_rate=0.0`` or a shorter
    ``context_length`` (the position embeddings are then cut to that length).
    """
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}; choose one of {', '.join(SOURCES)}.")
    name, _ = resolve_model_size(model_size)
    cfg = get_gpt2_config(name, **{"context_length": 1024, "qkv_bias": True, **config_overrides})

    if source == "auto":
        order = ["huggingface", "openai"]
        if _has_local_files("openai", name, models_dir) and not _has_local_files("huggingface", name, models_dir):
            order.reverse()
    else:
        order = [source]
    loaders = {"openai": download_and_load_gpt2, "huggingface": download_and_load_gpt2_safetensors}
    problems = []
    for src in order:
        try:
            settings, state_dict = loaders[src](name, models_dir)
            break
        except (WeightsUnavailableError, ImportError) as exc:
            if source != "auto":
                raise
            problems.append(str(exc))
    else:
        raise WeightsUnavailableError(
            f"No GPT-2 {name} weights could be found or downloaded (tried {' and '.join(order)}).\n\n"
            + "\n\n".join(problems)
        )

    # OpenAI's hparams.json states the head count, which the weights' shapes cannot show.
    if src == "openai" and settings["n_head"] != cfg["n_heads"]:
        raise ValueError(
            f"The checkpoint has n_head={settings['n_head']} but the config has n_heads={cfg['n_heads']}; "
            f"build the model with the checkpoint's configuration."
        )
    weights = _strip_prefix(state_dict)
    if cfg["context_length"] < weights["wpe.weight"].shape[0]:
        # A shorter context only needs the first position embeddings.
        weights["wpe.weight"] = weights["wpe.weight"][: cfg["context_length"]]
    model = GPTModel(cfg)
    load_weights_into_gpt(model, weights)
    return model.to(device).eval()


def load_base_gpt(
    weights: str,
    model_size: str = "gpt2-small",
    models_dir: str | Path = "gpt2",
    device: str | torch.device = "cpu",
    drop_rate: float = 0.0,
    **config_overrides,
) -> tuple[GPTModel, str]:
    """Return (the model a fine-tuning run starts from, a description of it), as chapters 6 and 7 choose it.

    `weights` is a GPT-2 size ("gpt2-small" ... "gpt2-xl": OpenAI's weights),
    "random" (random init of `model_size` with GPT-2's layout, query/key/value
    bias included, changed by `config_overrides` such as ``emb_dim=64``; None
    values are ignored), or the path of a model.pth written by
    `buildllm.training.save_model`. Every dropout rate is set to `drop_rate`.
    Raises WeightsUnavailableError (GPT-2 weights neither in `models_dir` nor
    downloadable), FileNotFoundError (no such file) or ValueError (a bad config).
    """
    from .training import load_model

    config_overrides = {k: v for k, v in config_overrides.items() if v is not None}
    if weights in GPT2_SIZES or weights in GPT2_SIZE_ALIASES:
        model = load_pretrained_gpt(model_size=weights, models_dir=models_dir, device=device, drop_rate=drop_rate)
        return model, f"OpenAI's {weights} weights"
    if weights == "random":
        cfg = get_gpt2_config(model_size, qkv_bias=True, drop_rate=drop_rate, **config_overrides)
        described = ", ".join(f"{k}={v}" for k, v in config_overrides.items())
        return GPTModel(cfg).to(device), f"random initialization ({model_size}{', ' + described if described else ''})"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"No model file at {path}. Write one with ch05/gpt_train.py (it saves model.pth), or use "
            f"'random' or a GPT-2 size ({', '.join(GPT2_SIZES)})."
        )
    model = load_model(path, device=device)
    set_dropout(model, drop_rate)  # the checkpoint may have been trained with another dropout rate
    return model, f"the model in {path}"


def download_cli(argv: list[str] | None, *, default_model_size: str, default_source: str, next_step: str) -> int:
    """The command line of the chapters' ``gpt_download.py`` scripts; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Download GPT-2 weights: OpenAI's TensorFlow checkpoint or Hugging Face's safetensors.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model-size", default=default_model_size,
                        choices=list(GPT2_SIZE_ALIASES) + list(GPT2_SIZES), help="which GPT-2")
    parser.add_argument("--source", default=default_source, choices=("openai", "huggingface"),
                        help="openai: the original files (reading them needs TensorFlow); "
                             "huggingface: one model.safetensors file")
    parser.add_argument("--models-dir", default="gpt2", help="parent folder; files go into <models-dir>/<size>")
    parser.add_argument("--retries", type=int, default=3, help="attempts per URL")
    args = parser.parse_args(argv)
    try:
        folder = download_gpt2_files(args.model_size, args.models_dir, args.source, retries=max(args.retries, 1))
    except WeightsUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"GPT-2 {args.model_size} ({args.source}) is ready in {folder.resolve()}:")
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.endswith(".part"):
            print(f"  {path.name:34s} {path.stat().st_size:>13,} bytes")
    print(next_step.format(model_size=args.model_size, models_dir=args.models_dir))
    return 0

