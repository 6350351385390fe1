"""The one way to get the model a chapter starts from (chapters 5-7, appendix E, the notebooks and scripts).

``load_base_model(weights)`` takes what a user types after ``--weights``:

- a GPT-2 size (``gpt2-small`` ... ``gpt2-xl``, or OpenAI's folder names ``124M`` ...):
  OpenAI's weights, read from the models folder or downloaded there;
- ``smollm2-135m-instruct`` / ``smollm2-135m``: SmolLM2, a Llama-style model whose
  weights reach machines without internet (see `buildllm.smollm2`);
- ``qwen3-0.6b``: Qwen3-0.6B from Hugging Face's files (see `buildllm.qwen3`, section 4),
  read from the models folder or downloaded there where Hugging Face is reachable;
- ``random``: a randomly initialized GPT-2 architecture (``random_config`` changes it);
- the PATH of a model file written by `buildllm.checkpoints.save_model`, or of a folder
  of Hugging Face Qwen3 files (config.json, model.safetensors, tokenizer.json).

It always returns a `BaseModel` (model, tokenizer, description, meta) and raises only
`buildllm.sources.WeightsError` (with what to do). Given several candidates, e.g.
``["gpt2-small", "smollm2-135m-instruct", "random"]``, it tries them in order and
says why each one it skips is unavailable: that is how the notebooks fall back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from .checkpoints import ModelFileError, read_model_file
from .config import ConfigError
from .model import GPT2_SIZE_ALIASES, GPT2_SIZES, GPTModel, get_gpt2_config, set_dropout
from .sources import WeightsError, WeightsUnavailableError, models_dir
from .tokenizer import get_gpt2_tokenizer

SMOLLM2_NAMES = ("smollm2-135m-instruct", "smollm2-135m")
QWEN3_NAMES = ("qwen3-0.6b",)  # = buildllm.qwen3.QWEN3_NAMES (not imported here: it would load the module early)
PRETRAINED_NAMES = (*GPT2_SIZES, *GPT2_SIZE_ALIASES, *SMOLLM2_NAMES, *QWEN3_NAMES)
WEIGHT_CHOICES = (*PRETRAINED_NAMES, "random")
RANDOM_KEYS = ("model_size", "emb_dim", "n_layers", "n_heads", "context_length")


@dataclass
class BaseModel:
    """A starting model with everything needed to use it."""

    model: nn.Module
    tokenizer: object  # encode/decode/eot_token: tiktoken's GPT-2 encoding, SmolLM2's or Qwen3's tokenizer
    name: str  # what was loaded: a weights name, "random", or a file path
    description: str  # one line for people
    meta: dict = field(default_factory=dict)  # what a model file says about itself (task, tokenizer, ...)

    @property
    def tokenizer_name(self) -> str:
        """The name that model files store for this tokenizer ("gpt2", a SmolLM2 or Qwen3 name, or a folder)."""
        return self.meta.get("tokenizer", "gpt2")

    @property
    def chat_format(self) -> str | None:
        """How to talk to this model: "chat-template" (SmolLM2, Qwen3), a ch07 prompt style ("alpaca" ...), or None."""
        if self.meta.get("prompt_style"):
            return self.meta["prompt_style"]
        if hasattr(self.tokenizer, "apply_chat_template") and self.meta.get("instruction_tuned"):
            return "chat-template"
        return None

    def chat_prompt(self, turns: Sequence[tuple[str, str | None]]) -> tuple[str, int]:
        """Return (prompt text, token that ends an answer) for (user message, answer) turns; the last answer is None.

        Raises WeightsError for a model that was never instruction-tuned (it would only continue the text).
        """
        style = self.chat_format
        if style is None:
            raise WeightsError(
                f"{self.description} was not instruction-tuned: it continues text instead of answering. Use an "
                f"instruction-tuned model (smollm2-135m-instruct, qwen3-0.6b, or a model.pth written by "
                f"chapter 7's fine-tuning), or generate without the chat format."
            )
        if style == "chat-template":
            messages = []
            for user, answer in turns:
                messages.append({"role": "user", "content": user})
                if answer is not None:
                    messages.append({"role": "assistant", "content": answer})
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True), self.tokenizer.im_end_id
        from .instruction import format_conversation

        return format_conversation(list(turns), style), self.tokenizer.eot_token


def chapter_model_path(chapter: str, models_root: str | os.PathLike | None = None) -> Path:
    """Where a chapter's notebook saves the model it trained, for later chapters: <models_dir>/chapters/<chapter>/model.pth.

    The chapter 5 notebook writes ``chapter_model_path("ch05")``; chapters 6 and 7 fall
    back to it when no pretrained weights are available.
    """
    return models_dir(models_root) / "chapters" / chapter / "model.pth"


def describe_weights_choices() -> str:
    """One sentence listing what --weights accepts (for help texts and errors)."""
    return (f"a GPT-2 size ({', '.join(GPT2_SIZES)}; OpenAI's weights), {' or '.join(SMOLLM2_NAMES)} (SmolLM2, "
            f"also offline), {' or '.join(QWEN3_NAMES)} (Qwen3, from Hugging Face), 'random' (random init), or the "
            f"PATH of a model file (or of a folder of Hugging Face Qwen3 files)")


def get_tokenizer(name: str = "gpt2", models_root: str | Path | None = None):
    """Return the tokenizer a model file names: "gpt2" (tiktoken's encoding, offline), a SmolLM2 or Qwen3 name,
    or the folder of a Qwen3 model (its tokenizer.json)."""
    if name == "gpt2":
        return get_gpt2_tokenizer()
    if name in SMOLLM2_NAMES:
        from .smollm2 import load_smollm2_tokenizer

        return load_smollm2_tokenizer(models_dir(models_root))
    if name in QWEN3_NAMES:
        from .qwen3 import fetch_qwen3, load_qwen3_tokenizer

        return load_qwen3_tokenizer(fetch_qwen3(name, models_root))
    if (Path(name).expanduser() / "tokenizer.json").is_file():
        from .qwen3 import load_qwen3_tokenizer

        return load_qwen3_tokenizer(Path(name).expanduser())
    raise WeightsError(f"Unknown tokenizer {name!r}; known: gpt2, {', '.join((*SMOLLM2_NAMES, *QWEN3_NAMES))}, or "
                       f"a folder holding a Qwen3 tokenizer.json.")


def _random_gpt(random_config: dict, drop_rate: float, device) -> BaseModel:
    unknown = sorted(set(random_config) - set(RANDOM_KEYS))
    if unknown:
        raise WeightsError(f"Unknown random_config key(s) {unknown}; valid: {', '.join(RANDOM_KEYS)}.")
    overrides = {k: v for k, v in random_config.items() if v is not None and k != "model_size"}
    size = random_config.get("model_size") or "gpt2-small"
    try:
        cfg = get_gpt2_config(size, qkv_bias=True, drop_rate=drop_rate, **overrides)
    except ConfigError as exc:
        raise WeightsError(f"Cannot build the random model: {exc}") from None
    shown = ", ".join(f"{k}={v}" for k, v in overrides.items())
    return BaseModel(GPTModel(cfg).to(device), get_gpt2_tokenizer(), "random",
                     f"random initialization ({size}{', ' + shown if shown else ''})", {"tokenizer": "gpt2"})


def _load_hf_folder(path: Path, device, drop_rate: float) -> BaseModel:
    """A folder of Hugging Face files: Qwen3 (config.json says model_type "qwen3") is the one architecture read so."""
    import json

    try:
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    if model_type != "qwen3":
        raise WeightsError(f"{path} is a folder, but not one of Hugging Face Qwen3 files (config.json with model_type "
                           f"'qwen3', model.safetensors, tokenizer.json). Give {describe_weights_choices()}.")
    from .qwen3 import load_qwen3_folder

    model, tokenizer = load_qwen3_folder(path, device)
    set_dropout(model, drop_rate)
    # Qwen names its base (not instruction-tuned) models "...-Base", e.g. Qwen/Qwen3-0.6B-Base.
    tuned = not path.resolve().name.lower().endswith("-base")
    return BaseModel(model, tokenizer, str(path), f"the Qwen3 model in {path}",
                     {"tokenizer": str(path.resolve()), "instruction_tuned": tuned})


def _load_one(weights: str, models_root, device, drop_rate: float, random_config: dict) -> BaseModel:
    if weights == "random":
        return _random_gpt(random_config, drop_rate, device)
    if weights in GPT2_SIZES or weights in GPT2_SIZE_ALIASES:
        from .gpt2 import load_pretrained_gpt

        try:
            model = load_pretrained_gpt(weights, models_root, device=device, drop_rate=drop_rate)
        except ImportError as exc:  # OpenAI's format without TensorFlow
            raise WeightsUnavailableError(str(exc)) from None
        return BaseModel(model, get_gpt2_tokenizer(), weights, f"OpenAI's GPT-2 weights ({weights})",
                         {"tokenizer": "gpt2"})
    if weights in SMOLLM2_NAMES:
        from .smollm2 import load_smollm2

        model, tokenizer = load_smollm2(weights, models_dir(models_root), device=device)
        set_dropout(model, drop_rate)
        return BaseModel(model, tokenizer, weights, f"SmolLM2 ({weights}, Llama architecture, its own tokenizer)",
                         {"tokenizer": weights, "instruction_tuned": weights.endswith("-instruct")})
    if weights in QWEN3_NAMES:
        from .qwen3 import load_qwen3

        model, tokenizer = load_qwen3(weights, models_root, device=device)
        set_dropout(model, drop_rate)
        return BaseModel(model, tokenizer, weights, f"Qwen3 ({weights}, Qwen3 architecture, its own tokenizer)",
                         {"tokenizer": weights, "instruction_tuned": True})
    path = Path(weights).expanduser()
    if not path.exists():
        raise WeightsError(f"Weights {weights!r}: neither a known name nor an existing file. Give "
                           f"{describe_weights_choices()}.")
    if path.is_dir():
        return _load_hf_folder(path, device, drop_rate)
    try:
        model, meta = read_model_file(path, device)
    except ModelFileError as exc:
        raise WeightsError(str(exc)) from None
    set_dropout(model, drop_rate)  # the file may have been trained with another dropout rate
    tokenizer = get_tokenizer(meta.get("tokenizer", "gpt2"), models_root)
    what = meta.get("task", "model")
    return BaseModel(model, tokenizer, str(path), f"the {what} in {path}", meta)


def load_base_model(
    weights: str | Sequence[str],
    *,
    models_root: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    drop_rate: float = 0.0,
    random_config: dict | None = None,
    verbose: bool = True,
) -> BaseModel:
    """Return the starting model named by `weights` (or the first available of several), on `device`.

    Every dropout rate is set to `drop_rate`. `random_config` (keys model_size, emb_dim,
    n_layers, n_heads, context_length) shapes a "random" model. With several
    candidates, each unavailable one is skipped with a printed reason (if `verbose`);
    when none works, the last error is raised. Raises `WeightsError` only.
    """
    candidates = [weights] if isinstance(weights, (str, os.PathLike)) else list(weights)
    if not candidates:
        raise WeightsError("No weights given; pass a name or a path.")
    for i, candidate in enumerate(candidates):
        try:
            return _load_one(str(candidate), models_root, device, drop_rate, dict(random_config or {}))
        except WeightsError as exc:
            if i == len(candidates) - 1:
                raise
            if verbose:
                first = str(exc).splitlines()[0]
                print(f"[{candidate}] 사용할 수 없음: {first}\n  -> 다음 후보 {candidates[i + 1]!r}(으)로 넘어갑니다.")
    raise AssertionError("unreachable")
