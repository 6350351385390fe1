"""Byte pair encoding from scratch (buildllm.bpe): identical to GPT-2's tokenizer, training, files, bad input."""

from __future__ import annotations

import json
import sysconfig
import warnings
from collections import Counter
from pathlib import Path

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from buildllm.bpe import FILE_HEADER, BPETokenizer, count_pairs, merge_pair
from buildllm.tokenizer import GPT2_PATTERN, get_gpt2_tokenizer
from conftest import REPO, run_script

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def gpt2() -> BPETokenizer:
    return BPETokenizer.from_gpt2()


@pytest.fixture(scope="module")
def ref():
    return get_gpt2_tokenizer()  # tiktoken's "gpt2" encoding (tests/test_tokenizer.py proves it identical)


@pytest.fixture(scope="module")
def verdict_tok(verdict_text) -> BPETokenizer:
    return BPETokenizer.train(verdict_text, vocab_size=1000, special_tokens=[EOT])


def korean_text() -> str:
    return (REPO / "ch02" / "korean-sample.txt").read_text(encoding="utf-8")


SYNTHETIC = {
    "emoji": "Hi 👋🏽! Family: 👨‍👩‍👧‍👦, flag 🇰🇷, heart ❤️‍🔥, cat🐈‍⬛ ok👌" * 20,
    "whitespace": "".join(f"a{' ' * n}b{chr(9) * (n % 4)}c{chr(10) * (n % 5)}d \r\n{chr(11)}{chr(12)}" for n in range(60))
    + "   \n\n\t  end   " + "\u00a0\u2003\u3000x\u0085y\u2028z " + " " * 300,
    "numbers": "0 1 12 123 1234 12345 3.14159 1,000,000 -42 +7e10 0x1F 2024-05-01 ١٢٣ ４２ ½ ²³ " * 10,
    "contractions": "I'm you're he's we'll they'd it's I'M THEY'RE don't 's 't 'd 'll 've 're ''s " * 10,
    "korean-english": "오늘 GPT-2로 토큰화(tokenization)를 배웠다: 'BPE'는 byte pair encoding의 줄임말! 2024년 " * 10,
    "mixed-scripts": "Ελληνικά Русский عربى हिन्दी 日本語の文章 中文句子 ไทย ქართული Ωmega ﬁnance" * 10,
    "long-runs": "=" * 3000 + "-" * 2000 + "a" * 5000 + "ab" * 2000 + "🙂" * 500 + "0123456789" * 300,
    "base64-like": "".join(chr(65 + (i * 7919) % 26) + chr(97 + (i * 104729) % 26) for i in range(4000)),
}


def python_sources() -> str:
    """Our package's source plus a few standard-library modules (code: indentation, operators, strings)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((REPO / "buildllm").glob("*.py")) + [
        stdlib / name for name in ("argparse.py", "textwrap.py", "difflib.py", "json/decoder.py", "csv.py")
    ]
    return "\n".join(p.read_text(encoding="utf-8") for p in files if p.is_file())


# ------------------------------------------------------------------ identical to GPT-2 / tiktoken


def test_gpt2_vocabulary_matches_tiktoken(gpt2, ref):
    assert gpt2.n_vocab == ref.n_vocab == 50257
    assert len(gpt2.merges) == 50000
    assert gpt2.special_tokens == {EOT: 50256}
    assert gpt2.byte_ids[:3] == [188, 189, 190] and gpt2.byte_ids[ord("!")] == 0 and gpt2.byte_ids[ord(" ")] == 220
    for idx in (0, 220, 256, 1000, 30000, 50255):
        assert gpt2.vocab[idx] == ref.decode_single_token_bytes(idx)


def test_identical_ids_to_tiktoken_on_a_megabyte_of_mixed_text(gpt2, ref):
    from buildllm.datasets import load_text

    corpus = {
        "tinyshakespeare": load_text("tinyshakespeare"),
        "the-verdict": load_text("the-verdict"),
        "korean": korean_text() + "".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "notes-ko").glob("*.md"))),
        "python": python_sources(),
        **SYNTHETIC,
    }
    total = sum(len(text.encode("utf-8")) for text in corpus.values())
    assert total >= 1_000_000
    for name, text in corpus.items():
        ours = gpt2.encode(text, disallowed_special=())
        assert ours == ref.encode(text, disallowed_special=()), name
        assert gpt2.decode(ours) == text, name
    # Lines one by one: each is its own text, so "end of text" (\s++$) is hit often.
    for line in corpus["python"].splitlines(keepends=True)[:3000]:
        assert gpt2.encode_ordinary(line) == ref.encode_ordinary(line), repr(line)


def test_special_tokens_behave_like_tiktoken(gpt2, ref):
    text = f"Hello world.{EOT}  \n{EOT}Next document<|endoftext|"
    for kwargs in ({"allowed_special": "all"}, {"allowed_special": {EOT}}, {"disallowed_special": ()},
                   {"allowed_special": {EOT, "<|unknown|>"}}):
        assert gpt2.encode(text, **kwargs) == ref.encode(text, **kwargs), kwargs
    assert gpt2.encode(text, allowed_special="all").count(50256) == 2
    assert 50256 not in gpt2.encode(text, disallowed_special=())
    assert gpt2.encode_ordinary(text) == ref.encode_ordinary(text)
    assert gpt2.encode("no special token here") == ref.encode("no special token here")
    # Refused by default, with a message that says how to allow it.
    with pytest.raises(ValueError):
        ref.encode(text)
    with pytest.raises(ValueError, match=r"allowed_special=\{'<\|endoftext\|>'\}") as exc:
        gpt2.encode(text)
    assert "disallowed_special=()" in str(exc.value)
    with pytest.raises(ValueError, match="special token"):
        gpt2.encode(text, allowed_special=set(), disallowed_special={EOT})


@settings(max_examples=250, deadline=None)
@given(st.text(max_size=80))
def test_random_unicode_matches_tiktoken_and_round_trips(gpt2, ref, verdict_tok, text):
    ids = gpt2.encode(text, disallowed_special=())
    assert ids == ref.encode(text, disallowed_special=())
    assert gpt2.decode(ids) == text
    assert verdict_tok.decode(verdict_tok.encode(text, allowed_special="all")) == text


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(list("aab  \n=한😀'sl") + ["ab", "th", "e "]), min_size=40, max_size=300).map("".join))
def test_heap_merge_loop_equals_plain_loop(gpt2, verdict_tok, text):
    # Long pieces use an O(n log n) heap loop; it must give exactly the plain loop's result.
    for tok in (gpt2, verdict_tok):
        ids = [tok.byte_ids[b] for b in text.encode("utf-8")]
        assert tok._apply_merges_heap(ids) == tok.apply_merges(ids)


# ------------------------------------------------------------------ training


def naive_train(text: str, num_merges: int) -> dict[tuple[int, int], int]:
    """Textbook BPE: recount all pairs after every merge (slow, obviously correct), same tie rule."""
    words = Counter(regex.findall(GPT2_PATTERN, text))
    seqs = {w: list(w.encode("utf-8")) for w in words}
    merges = {}
    for k in range(num_merges):
        counts: dict = {}
        for w, ids in seqs.items():
            count_pairs(ids, counts, words[w])
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))  # most frequent, then smallest pair
        merges[pair] = 256 + k
        seqs = {w: merge_pair(ids, pair, 256 + k) for w, ids in seqs.items()}
    return merges


def test_helpers():
    assert count_pairs([1, 2, 1, 2, 3]) == {(1, 2): 2, (2, 1): 1, (2, 3): 1}
    assert merge_pair([1, 2, 1, 2, 3], (1, 2), 9) == [9, 9, 3]
    assert merge_pair([5, 5, 5], (5, 5), 7) == [7, 5]


def test_train_on_the_verdict_exact_and_deterministic(verdict_text, verdict_tok):
    assert len(verdict_tok.merges) == 743 and verdict_tok.n_vocab == 1000
    assert verdict_tok.special_tokens == {EOT: 999}
    assert list(verdict_tok.merges.items())[:8] == [
        ((32, 116), 256), ((104, 101), 257), ((32, 97), 258), ((105, 110), 259),
        ((32, 104), 260), ((32, 115), 261), ((32, 119), 262), ((32, 111), 263)]
    assert [verdict_tok.vocab[i] for i in (256, 257, 264, 998)] == [b" t", b"he", b" the", b" iron"]
    text = f"It's the last he painted, you know,{EOT} Mrs. Gisburn said."
    assert verdict_tok.encode(text, allowed_special="all") == [
        601, 330, 264, 633, 281, 645, 44, 345, 524, 44, 999, 389, 46, 405, 432, 46]
    assert len(verdict_tok.encode(verdict_text)) == 6999
    again = BPETokenizer.train(verdict_text, vocab_size=1000, special_tokens=[EOT])
    assert list(again.merges.items()) == list(verdict_tok.merges.items())


def test_fast_training_equals_naive_training(verdict_text):
    fast = BPETokenizer.train(verdict_text, vocab_size=256 + 120)
    assert list(fast.merges.items()) == list(naive_train(verdict_text, 120).items())


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aab cd\n한'1😀")), max_size=120))
def test_fast_training_equals_naive_training_on_random_text(text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short texts run out of pairs: tested below
        fast = BPETokenizer.train(text, vocab_size=256 + 30)
    assert list(fast.merges.items()) == list(naive_train(text, 30).items())


def test_special_tokens_are_cut_out_of_the_training_text():
    tok = BPETokenizer.train(f"ab{EOT}ab{EOT}ab", vocab_size=258, special_tokens=[EOT])
    assert list(tok.merges.items()) == [((97, 98), 256)]  # "<|", "|>" ... were never counted
    assert tok.special_tokens == {EOT: 257}
    assert tok.encode(f"ab{EOT}", allowed_special="all") == [256, 257]


def test_training_stops_early_with_a_warning_when_pairs_run_out():
    with pytest.warns(UserWarning, match="ran out of pairs to merge after 2 merges"):
        tok = BPETokenizer.train("abc", vocab_size=300)
    assert tok.n_vocab == 258


# ------------------------------------------------------------------ files


def test_save_load_round_trip(tmp_path, verdict_tok, gpt2, ref):
    for tok, name in ((verdict_tok, "verdict.bpe"), (gpt2, "gpt2.bpe")):
        path = tmp_path / "sub" / name
        tok.save(path)
        back = BPETokenizer.load(path)
        assert back.merges == tok.merges and list(back.merges) == list(tok.merges)
        assert back.special_tokens == tok.special_tokens and back.byte_ids == tok.byte_ids
        assert back.pattern == tok.pattern and back.vocab == tok.vocab
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["gpt2.bpe", "verdict.bpe"]  # no temp files
    assert (tmp_path / "sub" / "verdict.bpe").read_text().splitlines()[0] == FILE_HEADER
    text = f"Hello, 세계! {EOT} 123"
    assert BPETokenizer.load(tmp_path / "sub" / "gpt2.bpe").encode(text, allowed_special="all") == ref.encode(
        text, allowed_special="all")


def test_load_reports_the_bad_line(tmp_path, verdict_tok):
    path = tmp_path / "tok.bpe"
    verdict_tok.save(path)
    lines = path.read_text().splitlines()
    for lineno, bad, phrase in [(6, "256 x 300", "invalid literal"), (7, "1 2", "3 integers"),
                                (8, "999999 5 1234", "token ID 999999"), (9, "1 2 257", "already used"), (10, "32 116 260", "appears twice")]:
        broken = lines.copy()
        broken[lineno - 1] = bad
        path.write_text("\n".join(broken) + "\n")
        with pytest.raises(ValueError, match=rf"line {lineno}: .*{phrase}"):
            BPETokenizer.load(path)
    path.write_text("#version: 0.2\nĠ t\n")
    with pytest.raises(ValueError, match="line 1: expected 'buildllm-bpe 1'.*from_gpt2"):
        BPETokenizer.load(path)
    with pytest.raises(FileNotFoundError, match="No tokenizer file"):
        BPETokenizer.load(tmp_path / "missing.bpe")


def test_from_gpt2_files_and_bad_merge_lines(tmp_path):
    from buildllm.tokenizer import read_gpt2_bpe_file

    encoder = tmp_path / "encoder.json"
    encoder.write_bytes(read_gpt2_bpe_file("encoder.json"))
    merges = read_gpt2_bpe_file("vocab.bpe").decode("utf-8").split("\n")
    vocab = tmp_path / "vocab.bpe"
    vocab.write_text("\n".join(merges[:200]) + "\n", encoding="utf-8")
    small = BPETokenizer.from_gpt2(vocab, encoder)
    assert len(small.merges) == 199 and small.encode(" the") == [262]
    for bad, phrase in [("Ġt he xyz", "two tokens separated by one space"), ("Ġ q★", "not in encoder.json"),
                        (merges[1], "appears twice")]:
        vocab.write_text("\n".join([*merges[:3], bad, *merges[3:10]]) + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=rf"vocab.bpe, line 4: .*{phrase}"):
            BPETokenizer.from_gpt2(vocab, encoder)
    assert json.loads(encoder.read_text())[EOT] == 50256


# ------------------------------------------------------------------ bad input


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="vocab_size must be at least 257"):
        BPETokenizer.train("hello", vocab_size=256, special_tokens=[EOT])
    with pytest.raises(ValueError, match="at least 256"):
        BPETokenizer.train("hello", vocab_size=100)
    with pytest.raises(ValueError, match="too small"):
        BPETokenizer.train("hello", vocab_size=300.5)
    with pytest.raises(ValueError, match="non-empty strings"):
        BPETokenizer.train("hello", vocab_size=300, special_tokens=[""])
    with pytest.raises(TypeError, match="training text as a str"):
        BPETokenizer.train(b"hello", vocab_size=300)


def test_bad_encode_and_decode_arguments(gpt2):
    with pytest.raises(TypeError, match="needs a str"):
        gpt2.encode(b"bytes")
    with pytest.raises(TypeError, match=r"'all' or a set of strings, e.g. allowed_special=\{'<\|endoftext\|>'\}"):
        gpt2.encode("hi", allowed_special=EOT)
    with pytest.raises(ValueError, match="Token ID 50257 is not in this tokenizer's vocabulary"):
        gpt2.decode([15496, 50257])
    with pytest.raises(ValueError, match="not in this tokenizer's vocabulary"):
        gpt2.decode(["a"])
    # "한" is two tokens, b"\xed\x95" + b"\x9c": the first alone is half a character and decodes to U+FFFD.
    assert gpt2.encode("한") == [47991, 250]
    assert gpt2.decode([220, 47991]) == " \ufffd" and gpt2.decode_bytes([47991]) == b"\xed\x95"


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="256 distinct token IDs"):
        BPETokenizer({}, byte_ids=[0] * 256)
    with pytest.raises(ValueError, match="no byte or earlier merge defines"):
        BPETokenizer({(1, 300): 256})
    with pytest.raises(ValueError, match="clashes"):
        BPETokenizer({(1, 2): 256}, special_tokens={EOT: 256})


# ------------------------------------------------------------------ benchmark smoke test


@pytest.mark.script
def test_benchmark_quick():
    out = run_script(["benchmarks/bench_bpe.py", "--quick"], timeout=300).stdout
    assert "tiktoken/ours" in out and "English (tinyshakespeare)" in out and "Korean" in out
    assert "usage:" in run_script(["benchmarks/bench_bpe.py", "--help"]).stdout
