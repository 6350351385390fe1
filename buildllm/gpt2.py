"""OpenAI's GPT-2 weights in our `GPTModel` (chapter 5): reading both published formats and mapping them.

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

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from .download import ChecksumError, DownloadError, download_file, reachable, verify_file
from .model import GPT2_SIZES, GPTModel, get_gpt2_config, resolve_gpt2_size
from .sources import GPT2_FOLDERS, RemoteFile, WeightsError, WeightsUnavailableError, gpt2_files, models_dir

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
# serves both. Where the files come from (URLs, sizes, SHA-256) is the registry
# `buildllm.sources.gpt2_files`; they lie under `buildllm.sources.models_dir()`.

SOURCES = ("auto", "openai", "huggingface")


class WeightsMismatchError(WeightsError, ValueError):
    """A weights file does not fit the model it should fill (a key missing or extra, a shape or head count off)."""

DOWNLOAD_RETRIES = 3


def gpt2_folder(model_size: str, models_root: str | Path | None = None) -> Path:
    """The folder holding the files of one GPT-2 size: <models_dir>/gpt2/<124M|355M|774M|1558M>."""
    return models_dir(models_root) / "gpt2" / GPT2_FOLDERS[resolve_gpt2_size(model_size)]


def _is_valid(path: Path, spec: RemoteFile) -> bool:
    if not path.is_file():
        return False
    try:
        verify_file(path, spec.sha256, spec.size)
        return True
    except ChecksumError:
        return False


def _reachable(urls: tuple[str, ...], timeout: float = 10.0) -> bool:
    """True if any server in `urls` answers at all (even with an HTTP error): then downloading is worth trying."""
    return reachable(urls, timeout)


def _unavailable_message(source: str, name: str, root: Path, missing: list[RemoteFile], reason: str) -> str:
    """Say which files are missing, where we looked, where to get them and where to put them."""
    folder = (root / missing[0].relpath).parent.resolve()
    lines = [
        f"GPT-2 weights {name} from {'OpenAI' if source == 'openai' else 'Hugging Face'} are not available: {reason}",
        f"Looked in: {folder} (the models folder; the environment variable BUILDLLM_MODELS_DIR changes it)",
        "Missing: " + ", ".join(Path(f.relpath).name + (" (present, but not the expected size or checksum, or "
                                                         "unreadable; left as it is: delete it to download it again)"
                                                         if (root / f.relpath).exists() else "") for f in missing),
        f"To fix: on a machine with internet access, download them into its models folder and copy {folder} here; "
        f"or download these files by hand into {folder}:",
    ]
    lines += [f"    {f.urls[0]}" for f in missing]
    if len(missing[0].urls) > 1:
        lines.append(f"(backup mirror: {missing[0].urls[1].rsplit('/', 1)[0]}/<file>)")
    return "\n".join(lines)


def download_gpt2_files(model_size: str, models_root: str | Path | None = None, source: str = "openai",
                        retries: int | None = None, progress: bool = True) -> Path:
    """Make sure the weight files of one GPT-2 size lie verified in the models folder; return their folder.

    Files already there (and of the right size and checksum where we know them) are
    used as they are, without any network access. Missing ones are downloaded
    atomically and verified.
    """
    if source not in ("openai", "huggingface"):
        raise ValueError(f"Unknown source {source!r}; choose 'openai' or 'huggingface'.")
    name = resolve_gpt2_size(model_size)
    root = models_dir(models_root)
    files = gpt2_files(name, source)
    missing = [f for f in files if not _is_valid(root / f.relpath, f)]
    if missing and not _reachable(missing[0].urls):
        raise WeightsUnavailableError(
            _unavailable_message(source, name, root, missing, "no network connection to the download server.")
        )
    for i, spec in enumerate(missing):
        try:
            download_file(spec.urls, root / spec.relpath, size=spec.size, sha256=spec.sha256,
                          retries=DOWNLOAD_RETRIES if retries is None else retries, progress=progress)
        except (DownloadError, ChecksumError) as exc:
            raise WeightsUnavailableError(
                _unavailable_message(source, name, root, missing[i:], f"the download failed.\n{exc}")
            ) from None
    return gpt2_folder(name, root)


# --- OpenAI's TensorFlow checkpoint -----------------------------------------

def _import_tensorflow():
    """Import TensorFlow only when an OpenAI checkpoint is read (it is slow to import and optional)."""
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError(
            "Reading OpenAI's original GPT-2 checkpoint needs TensorFlow: pip install tensorflow. "
            "Or use the Hugging Face weights (source='huggingface'), which need no TensorFlow."
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
    hparams = model_dir / "hparams.json"
    try:
        settings = json.loads(hparams.read_text(encoding="utf-8"))
        if not isinstance(settings, dict):
            raise ValueError("not a JSON object")
    except PermissionError:
        raise WeightsUnavailableError(f"Cannot read {hparams.resolve()}: permission denied. Fix the file's permissions.") \
            from None
    except (OSError, ValueError) as exc:
        raise WeightsUnavailableError(f"{hparams.resolve()} is not GPT-2's hparams.json ({exc}). Delete it and download it "
                           f"again.") from None
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
    except (tf.errors.OpError, ValueError, IndexError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsUnavailableError(
            f"Could not read the OpenAI checkpoint in {model_dir.resolve()}: {first}\n"
            f"A file is probably truncated or corrupt. Delete the folder and download the files again."
        ) from None
    return settings, state_dict


def download_and_load_gpt2(model_size: str, models_root: str | Path | None = None) -> tuple[dict, dict[str, Tensor]]:
    """Download (if needed) and read OpenAI's GPT-2 checkpoint; return (hparams settings, HF-format state dict)."""
    folder_path = download_gpt2_files(model_size, models_root, source="openai")
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
    """Read a GPT-2 model.safetensors; a truncated or corrupt file is reported (and left alone), never loaded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path))
    except PermissionError:
        raise WeightsUnavailableError(f"Cannot read {path.resolve()}: permission denied. Fix the file's "
                                      f"permissions.") from None
    except FileNotFoundError:
        raise WeightsUnavailableError(f"No file at {path.resolve()}.") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsUnavailableError(
            f"{path.resolve()} is truncated or corrupt ({exc}). Delete it and download it again."
        ) from None


def download_and_load_gpt2_safetensors(
    model_size: str, models_root: str | Path | None = None
) -> tuple[dict, dict[str, Tensor]]:
    """Download (if needed) and read Hugging Face's GPT-2 safetensors; return (settings, state dict). No TensorFlow."""
    name = resolve_gpt2_size(model_size)
    folder_path = download_gpt2_files(model_size, models_root, source="huggingface")
    path = folder_path / "model.safetensors"
    state_dict = load_safetensors_checkpoint(path)
    try:
        return settings_from_state_dict(state_dict, GPT2_SIZES[name]["n_heads"]), state_dict
    except (KeyError, ValueError) as exc:
        raise WeightsMismatchError(f"{path.resolve()} does not hold GPT-2 weights (it lacks {exc}): it is damaged "
                                   f"or another model. Delete it and download it again.") from None


# --- One call for the chapters ------------------------------------------------

def _has_local_files(source: str, model_size: str, models_root: str | Path | None) -> bool:
    root = models_dir(models_root)
    return all(_is_valid(root / f.relpath, f) for f in gpt2_files(resolve_gpt2_size(model_size), source))


def load_pretrained_gpt(
    model_size: str = "gpt2-small",
    models_root: str | Path | None = None,
    source: str = "auto",
    device: str | torch.device = "cpu",
    **config_overrides,
) -> GPTModel:
    """Return a GPTModel with OpenAI's GPT-2 weights, in eval mode (qkv_bias=True, context 1024 unless overridden).

    ``source="auto"`` uses files already in the models folder first (either format), then
    tries to download the Hugging Face safetensors (no TensorFlow needed), then
    OpenAI's checkpoint. Raises `WeightsUnavailableError` when nothing works.
    `config_overrides` change the config, e.g. ``drop_rate=0.0`` or a shorter
    ``context_length`` (the position embeddings are then cut to that length).
    """
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}; choose one of {', '.join(SOURCES)}.")
    name = resolve_gpt2_size(model_size)
    cfg = get_gpt2_config(name, **{"context_length": 1024, "qkv_bias": True, **config_overrides})

    if source == "auto":
        order = ["huggingface", "openai"]
        if _has_local_files("openai", name, models_root) and not _has_local_files("huggingface", name, models_root):
            order.reverse()
    else:
        order = [source]
    loaders = {"openai": download_and_load_gpt2, "huggingface": download_and_load_gpt2_safetensors}
    problems = []
    for src in order:
        try:
            settings, state_dict = loaders[src](name, models_root)
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

    folder = gpt2_folder(name, models_root).resolve()
    where = folder / "model.safetensors" if src == "huggingface" else folder
    try:
        # OpenAI's hparams.json states the head count, which the weights' shapes cannot show.
        if src == "openai" and settings.get("n_head") != cfg["n_heads"]:
            raise ValueError(f"its hparams.json has n_head={settings.get('n_head')} but the config has "
                             f"n_heads={cfg['n_heads']}.")
        weights = _strip_prefix(state_dict)
        if "wpe.weight" not in weights:
            raise KeyError("it has no position embedding 'wpe.weight'")
        if cfg["context_length"] < weights["wpe.weight"].shape[0]:
            # A shorter context only needs the first position embeddings.
            weights["wpe.weight"] = weights["wpe.weight"][: cfg["context_length"]]
        model = GPTModel(cfg)
        load_weights_into_gpt(model, weights)
    except (KeyError, ValueError) as exc:
        reason = exc.args[0] if exc.args else type(exc).__name__
        raise WeightsMismatchError(
            f"{where} does not fit the model: {reason} If the file is GPT-2 {name} as published, it is damaged: "
            f"delete it and download it again."
        ) from None
    return model.to(device).eval()
