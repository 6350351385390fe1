"""The speed benchmarks of the fast paths run end to end (--quick) and print their tables; no timing assertions."""

from __future__ import annotations

import sys

import torch

from conftest import REPO, run_script

sys.path.insert(0, str(REPO))
from benchmarks.bench_attention import build_implementations, max_differences, saved_for_backward_bytes  # noqa: E402


def test_bench_generate_quick(tmp_path):
    proc = run_script(["benchmarks/bench_generate.py", "--quick", "--device", "cpu", "--output-dir", str(tmp_path)])
    out = proc.stdout
    assert "tokens/s" in out and "speed-up" in out
    assert "uncached (recompute)" in out and "KV cache" in out
    assert "Identical tokens: yes" in out
    assert (tmp_path / "generate.png").stat().st_size > 0


def test_bench_generate_rejects_bad_settings():
    proc = run_script(["benchmarks/bench_generate.py", "--quick", "--max-new-tokens", "0"], check=False)
    assert proc.returncode == 2 and "argument --max-new-tokens: must be a whole number >= 1, got 0" in proc.stderr


def test_bench_attention_quick(tmp_path):
    proc = run_script(["benchmarks/bench_attention.py", "--quick", "--device", "cpu", "--output-dir", str(tmp_path)])
    out = proc.stdout
    assert "fwd+bwd ms" in out and "saved MB" in out
    for name in ("wrapper", "ours", "combined-qkv", "einsum", "sdpa", "torch-mha"):
        assert f"\n{name} " in out
    assert (tmp_path / "attention.png").stat().st_size > 0


def test_bench_attention_bad_heads():
    proc = run_script(["benchmarks/bench_attention.py", "--emb-dim", "10", "--num-heads", "3"], check=False)
    assert proc.returncode == 2 and "divisible by --num-heads" in proc.stderr


def test_attention_implementations_agree_and_sdpa_saves_no_attention_matrix():
    modules = build_implementations(48, 48, 128, 4, qkv_bias=True)
    torch.manual_seed(0)
    x = torch.randn(2, 128, 48)
    for name, diff in max_differences(modules, x).items():
        assert diff < 1e-5, name
    # ours keeps the (2, 4, 128, 128) softmax output for backward; SDPA's fused kernel does not.
    matrix = 2 * 4 * 128 * 128 * 4
    xg = x.requires_grad_(True)
    assert saved_for_backward_bytes(modules["ours"], xg) >= matrix
    assert saved_for_backward_bytes(modules["sdpa"], xg) < matrix
