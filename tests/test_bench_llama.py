"""bench_llama_generate.py runs end to end (--quick: a tiny random Llama) and prints its table; no timing asserts."""

from __future__ import annotations

import pytest
from conftest import run_script

pytest.importorskip("transformers")


def test_bench_llama_generate_quick():
    proc = run_script(["benchmarks/bench_llama_generate.py", "--quick", "--threads", "1"])
    out = proc.stdout
    assert "tokens/s" in out and "vs transformers" in out and "median s" in out
    for name in ("ours, no cache", "ours, KV cache", "ours, KV cache + SDPA (fast)", "transformers generate"):
        assert f"\n{name}" in out
    assert "Identical tokens: yes" in out
    assert "cpu, 1 threads" in out and "prompt 12 tokens, 8 new tokens" in out


def test_bench_llama_generate_rejects_bad_settings():
    proc = run_script(["benchmarks/bench_llama_generate.py", "--quick", "--repeats", "0"], check=False)
    assert proc.returncode == 2 and "argument --repeats: must be a whole number >= 1, got 0" in proc.stderr
