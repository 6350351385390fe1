"""Chapter 2 tokenizers: the regex tokenizers and the offline GPT-2 BPE tokenizer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from buildllm.tokenizer import (
    ENDOFTEXT,
    UNK,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    build_vocab,
    bytes_to_unicode,
    get_gpt2_tokenizer,
    read_gpt2_bpe_file,
    split_text,
)

SAMPLE = '"It\'s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
TWO_TEXTS = " <|endoftext|> ".join(("Hello, do you like tea?", "In the sunlit terraces of the palace."))
BPE_SAMPLE = "Hello, do you like tea? <|endoftext|> In the sunlit terracesof someunknownPlace."


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    """tiktoken's own "gpt2" encoding, read from TIKTOKEN_CACHE_DIR (conftest points it at the shared cache)."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    if not cache or not os.path.isdir(cache):
        pytest.skip("TIKTOKEN_CACHE_DIR is not set to a folder holding GPT-2's BPE files")
    return tiktoken.get_encoding("gpt2")


# --- the regex tokenizers ----------------------------------------------------------------


def test_split_text_keeps_punctuation_and_drops_whitespace():
    assert split_text("Hello, world. Is this-- a test?") == [
        "Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"]


def test_the_verdict_figures(verdict_text):
    assert len(verdict_text) == 20479
    tokens = split_text(verdict_text)
    assert len(tokens) == 4690
    assert tokens[:10] == ["I", "HAD", "always", "thought", "Jack", "Gisburn", "rather", "a", "cheap", "genius"]


def test_vocabulary_sizes_and_order(verdict_text):
    vocab = build_vocab(verdict_text)
    assert len(vocab) == 1130
    assert list(vocab.items())[:3] == [("!", 0), ('"', 1), ("'", 2)]
    assert list(vocab.items())[-1] == ("yourself", 1129)

    vocab2 = build_vocab(verdict_text, special_tokens=(ENDOFTEXT, UNK))
    assert len(vocab2) == 1132
    assert vocab2[ENDOFTEXT] == 1130 and vocab2[UNK] == 1131


def test_simple_tokenizer_v1_encode_decode(verdict_text):
    tokenizer = SimpleTokenizerV1(build_vocab(verdict_text))
    ids = tokenizer.encode(SAMPLE)
    assert ids == [1, 56, 2, 850, 988, 602, 533, 746, 5, 1126, 596, 5, 1, 67, 7, 38, 851, 1108, 754, 793, 7]
    # The regex tokenizer loses the original spacing around the apostrophe and the opening quote.
    assert tokenizer.decode(ids) == '" It\' s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    assert tokenizer.encode(tokenizer.decode(ids)) == ids


def test_simple_tokenizer_v1_unknown_word_says_what_to_do(verdict_text):
    tokenizer = SimpleTokenizerV1(build_vocab(verdict_text))
    with pytest.raises(KeyError, match="'Hello' is not in the vocabulary") as info:
        tokenizer.encode("Hello, do you like tea?")
    assert "SimpleTokenizerV2" in str(info.value)


def test_simple_tokenizer_v2_maps_unknown_words(verdict_text):
    tokenizer = SimpleTokenizerV2(build_vocab(verdict_text, special_tokens=(ENDOFTEXT, UNK)))
    ids = tokenizer.encode(TWO_TEXTS)
    assert ids == [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]
    assert tokenizer.decode(ids) == (
        "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>.")


def test_simple_tokenizer_v2_needs_unk_token(verdict_text):
    with pytest.raises(ValueError, match=r"needs <\|unk\|> in its vocabulary"):
        SimpleTokenizerV2(build_vocab(verdict_text))


# --- GPT-2's byte pair encoding ----------------------------------------------------------


def test_gpt2_files_are_verified():
    assert len(read_gpt2_bpe_file("vocab.bpe")) == 456318
    assert len(read_gpt2_bpe_file("encoder.json")) == 1042301


def test_bytes_to_unicode_is_a_bijection_on_bytes():
    mapping = bytes_to_unicode()
    assert sorted(mapping) == list(range(256))
    assert len(set(mapping.values())) == 256
    assert mapping[ord("A")] == "A" and mapping[ord(" ")] == "Ġ"  # GPT-2's visible space


def test_gpt2_tokenizer_figures(verdict_text):
    tokenizer = get_gpt2_tokenizer()
    assert tokenizer.n_vocab == 50257
    assert len(tokenizer.encode(verdict_text)) == 5145
    ids = tokenizer.encode(BPE_SAMPLE, allowed_special={ENDOFTEXT})
    assert ids == [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 1659, 617,
                   34680, 27271, 13]
    assert tokenizer.decode(ids) == BPE_SAMPLE


def test_gpt2_tokenizer_splits_unknown_words_into_known_pieces():
    tokenizer = get_gpt2_tokenizer()
    ids = tokenizer.encode("Akwirw ier")
    assert ids == [33901, 86, 343, 86, 220, 959]
    assert [tokenizer.decode([i]) for i in ids] == ["Ak", "w", "ir", "w", " ", "ier"]
    assert tokenizer.decode(ids) == "Akwirw ier"


VARIED_TEXTS = [
    "",
    "Hello, world",
    "안녕하세요. 대규모 언어 모델을 밑바닥부터 만들어 봅시다!",
    "emoji 🤖🚀 and flags 🇰🇷, combining é vs e\u0301",
    "def f(x):\n\treturn x ** 2  # square\n\n\n",
    "many     spaces\t\ttabs\n\n\nand newlines   ",
    "it's they'll we've I'M 12345 3.14159 $100",
    "<|endoftext|>",
    "first document<|endoftext|>second document",
]


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_gpt2_tokenizer_identical_to_tiktoken(text, tiktoken_gpt2):
    ours = get_gpt2_tokenizer()
    ids = ours.encode(text, allowed_special={ENDOFTEXT})
    assert ids == tiktoken_gpt2.encode(text, allowed_special={ENDOFTEXT})
    assert ours.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
    assert ours.decode(ids) == text


def test_gpt2_tokenizer_identical_to_tiktoken_on_the_verdict(verdict_text, tiktoken_gpt2):
    assert get_gpt2_tokenizer().encode(verdict_text) == tiktoken_gpt2.encode(verdict_text)


def test_gpt2_tokenizer_has_the_same_vocabulary_as_tiktoken(tiktoken_gpt2):
    ours = get_gpt2_tokenizer()
    assert ours._mergeable_ranks == tiktoken_gpt2._mergeable_ranks
    assert ours._special_tokens == tiktoken_gpt2._special_tokens == {ENDOFTEXT: 50256}
    assert ours._pat_str == tiktoken_gpt2._pat_str


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_gpt2_tokenizer_matches_tiktoken_on_any_text(tiktoken_gpt2, text):
    ours = get_gpt2_tokenizer()
    ids = ours.encode_ordinary(text)
    assert ids == tiktoken_gpt2.encode_ordinary(text)
    # Lone surrogates cannot be encoded as UTF-8; tiktoken replaces them, so compare only valid text.
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert ours.decode(ids) == text


def test_disallowed_special_token_raises_like_tiktoken(tiktoken_gpt2):
    text = "one text<|endoftext|>another"
    with pytest.raises(ValueError, match="disallowed special token") as theirs:
        tiktoken_gpt2.encode(text)
    with pytest.raises(ValueError, match="disallowed special token") as ours:
        get_gpt2_tokenizer().encode(text)
    assert type(ours.value) is type(theirs.value)
    # Allowed, it is the one ID 50256; disallowed checks off, it is plain text (several IDs).
    assert get_gpt2_tokenizer().encode(text, allowed_special={ENDOFTEXT}).count(50256) == 1
    assert 50256 not in get_gpt2_tokenizer().encode(text, disallowed_special=())


def test_gpt2_tokenizer_works_with_empty_caches_and_no_network(tmp_path):
    """A fresh machine: empty HOME and TIKTOKEN_CACHE_DIR, every network connection refused."""
    home, cache = tmp_path / "home", tmp_path / "tiktoken-cache"
    home.mkdir()
    cache.mkdir()
    code = textwrap.dedent("""
        import socket

        def no_network(*args, **kwargs):
            raise OSError("network disabled by the test")

        socket.socket.connect = no_network
        socket.create_connection = no_network

        from buildllm.tokenizer import get_gpt2_tokenizer
        print(get_gpt2_tokenizer().encode("Hello, world <|endoftext|>", allowed_special="all"))

        # tiktoken's own loader needs the network when its cache is empty: proves the network is off.
        import tiktoken
        try:
            tiktoken.get_encoding("gpt2")
        except Exception as exc:
            print("tiktoken needs the network:", type(exc).__name__)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTTP", "http"))}
    env.update(HOME=str(home), TIKTOKEN_CACHE_DIR=str(cache), DATA_GYM_CACHE_DIR=str(cache))
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "[15496, 11, 995, 220, 50256]"
    assert lines[1].startswith("tiktoken needs the network:")
    assert list(cache.iterdir()) == [] and list(home.iterdir()) == []
