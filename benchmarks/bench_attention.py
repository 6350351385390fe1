"""Speed and memory of six implementations of causal multi-head attention (bonus material of chapter 3).

All six compute the same function with the same weights (copied from one
`buildllm.attention.MultiHeadAttention`), which the script checks before timing:

    wrapper       MultiHeadAttentionWrapper: one CausalAttention per head, concatenated, then out_proj
    ours          MultiHeadAttention (chapter 3): one projection per Q/K/V, heads split by reshaping
    combined-qkv  one (d_in -> 3 * d_out) projection instead of three
    einsum        the projections and both attention products as torch.einsum
    sdpa          MultiHeadAttentionSDPA: F.scaled_dot_product_attention (fused kernel where one applies)
    torch-mha     torch.nn.MultiheadAttention with a causal mask

For each it prints the forward time (under no_grad), the forward + backward time,
the bytes autograd saves for the backward pass (measured with saved-tensor hooks,
on any device), and on CUDA the peak memory of forward + backward
(torch.cuda.max_memory_allocated). It writes a PNG of the table.

    python benchmarks/bench_attention.py                    # GPT-2 small shape: batch 8, 1024 tokens, 768, 12 heads
    python benchmarks/bench_attention.py --batch-size 2     # lighter on a CPU
    python benchmarks/bench_attention.py --quick            # smoke run: tiny shapes, one repeat
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # this checkout's buildllm, even if it is not installed

from buildllm.attention_variants import IMPLEMENTATIONS, build_implementations, max_differences  # noqa: E402
from buildllm.cli import (UserError, add_benchmark_arguments, nonnegative_int, positive_int,  # noqa: E402
                          prepare_benchmark, seed)
from buildllm.device import describe_device  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def fastest_time(fn, repeats: int, warmup: int, device: torch.device) -> float:
    """Fewest wall-clock seconds of `repeats` calls of `fn()` after `warmup` untimed calls (GPU work awaited).

    The minimum, as `timeit` advises: slower runs measure other processes, not the code.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def saved_for_backward_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of `module(x)` (each storage once; weights and `x` not counted)."""
    skip = {p.untyped_storage().data_ptr() for p in module.parameters()} | {x.untyped_storage().data_ptr()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    del out
    return sum(saved.values())


def cuda_peak_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Peak CUDA memory allocated during forward + backward of `module(x)`, above what was allocated before."""
    module.zero_grad(set_to_none=True)
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    before = torch.cuda.memory_allocated(x.device)
    module(x).sum().backward()
    torch.cuda.synchronize(x.device)
    return torch.cuda.max_memory_allocated(x.device) - before


def attention_matrix_bytes(batch_size: int, num_heads: int, num_tokens: int, dtype=torch.float32) -> int:
    """Bytes of one (batch, heads, tokens, tokens) attention matrix: what the plain implementations materialize."""
    return batch_size * num_heads * num_tokens * num_tokens * torch.empty(0, dtype=dtype).element_size()


def benchmark(modules: dict[str, nn.Module], x: torch.Tensor, repeats: int = 5, warmup: int = 1,
              backward: bool = True) -> list[dict]:
    """Time (and measure the memory of) each module on input `x` (b, num_tokens, d_in); one result dict per module."""
    device = x.device
    rows = []
    for name, module in modules.items():
        module.train()  # dropout is 0: train mode only keeps autograd's usual behaviour
        with torch.no_grad():
            forward_s = fastest_time(lambda: module(x), repeats, warmup, device)
        row = {"name": name, "forward_ms": forward_s * 1e3}
        if backward:
            xg = x.detach().requires_grad_(True)  # like a layer inside a model: gradients flow to the input

            def step():
                module.zero_grad(set_to_none=True)
                module(xg).sum().backward()

            row["fwd_bwd_ms"] = fastest_time(step, repeats, warmup, device) * 1e3
            row["saved_mb"] = saved_for_backward_bytes(module, xg) / 2**20
            if device.type == "cuda":
                row["cuda_peak_mb"] = cuda_peak_bytes(module, xg) / 2**20
        rows.append(row)
    return rows


def format_table(rows: list[dict], differences: dict[str, float] | None = None) -> str:
    """The results as a text table; speed-ups relative to the row named "ours"."""
    base = next((r for r in rows if r["name"] == "ours"), rows[0])
    columns = [("implementation", 13, lambda r: r["name"]),
               ("forward ms", 11, lambda r: f"{r['forward_ms']:.2f}")]
    if "fwd_bwd_ms" in base:
        columns += [("fwd+bwd ms", 11, lambda r: f"{r['fwd_bwd_ms']:.2f}"),
                    ("vs ours", 8, lambda r: f"{base['fwd_bwd_ms'] / r['fwd_bwd_ms']:.2f}x"),
                    ("saved MB", 9, lambda r: f"{r['saved_mb']:.1f}")]
    else:
        columns += [("vs ours", 8, lambda r: f"{base['forward_ms'] / r['forward_ms']:.2f}x")]
    if "cuda_peak_mb" in base:
        columns += [("peak MB", 9, lambda r: f"{r['cuda_peak_mb']:.1f}")]
    if differences:
        columns += [("max |diff|", 10, lambda r: f"{differences[r['name']]:.1e}")]
    lines = [" ".join(f"{title:>{width}}" if i else f"{title:<{width}}" for i, (title, width, _) in enumerate(columns))]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append(" ".join(f"{fn(r):>{width}}" if i else f"{fn(r):<{width}}"
                              for i, (_, width, fn) in enumerate(columns)))
    return "\n".join(lines)


def plot_results(rows: list[dict], title: str = ""):
    """Bar charts of the results: times on the left, memory on the right. Returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    names = [r["name"] for r in rows]
    has_bwd = "fwd_bwd_ms" in rows[0]
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_time, ax_mem = fig.subplots(1, 2) if has_bwd else (fig.subplots(1, 1), None)
    positions = range(len(rows))
    width = 0.4 if has_bwd else 0.8
    ax_time.bar([p - width / 2 * has_bwd for p in positions], [r["forward_ms"] for r in rows], width,
                label="forward (no_grad)")
    if has_bwd:
        ax_time.bar([p + width / 2 for p in positions], [r["fwd_bwd_ms"] for r in rows], width,
                    label="forward + backward")
    ax_time.set_xticks(list(positions), names, rotation=30, ha="right")
    ax_time.set_ylabel("milliseconds (fastest run)")
    ax_time.set_title("time, lower is better")
    ax_time.legend()
    if ax_mem is not None:
        key, label = ("cuda_peak_mb", "CUDA peak MB (fwd+bwd)") if "cuda_peak_mb" in rows[0] else \
            ("saved_mb", "MB saved for backward")
        ax_mem.bar(list(positions), [r[key] for r in rows], 0.6, color="tab:green")
        ax_mem.set_xticks(list(positions), names, rotation=30, ha="right")
        ax_mem.set_ylabel(label)
        ax_mem.set_title("memory, lower is better")
    if title:
        fig.suptitle(title)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--batch-size", type=positive_int, default=8, help="sequences per batch (default: 8)")
    parser.add_argument("--num-tokens", type=positive_int, default=1024, help="tokens per sequence (default: 1024, GPT-2's context)")
    parser.add_argument("--emb-dim", type=positive_int, default=768, help="d_in = d_out (default: 768, GPT-2 small)")
    parser.add_argument("--num-heads", type=positive_int, default=12, help="attention heads (default: 12)")
    parser.add_argument("--impl", nargs="+", choices=list(IMPLEMENTATIONS), default=list(IMPLEMENTATIONS),
                        help="implementations to run (default: all)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs per measurement; the fastest is kept (default: 5)")
    parser.add_argument("--warmup", type=nonnegative_int, default=1, help="untimed runs before timing (default: 1)")
    parser.add_argument("--no-backward", action="store_true", help="time the forward pass only")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32", help="number format of weights and input (default: float32)")
    parser.add_argument("--seed", type=seed, default=123, help="seed of the weights and the input (default: 123)")
    add_benchmark_arguments(parser, "attention.png", REPO / "runs" / "benchmarks")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 1, 64 tokens, 96 dims, 4 heads, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.num_tokens, args.emb_dim, args.num_heads = 1, 64, 96, 4
        args.repeats, args.warmup = 1, 0
    if args.emb_dim % args.num_heads:
        parser.error(f"--emb-dim ({args.emb_dim}) must be divisible by --num-heads ({args.num_heads})")
    try:
        device, out_dir = prepare_benchmark(args, "attention.png")
    except UserError as exc:
        parser.error(str(exc))
    dtype = DTYPES[args.dtype]

    modules = build_implementations(args.emb_dim, args.emb_dim, args.num_tokens, args.num_heads, args.impl,
                                    seed=args.seed)
    modules = {name: m.to(device=device, dtype=dtype) for name, m in modules.items()}
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch_size, args.num_tokens, args.emb_dim, device=device, dtype=dtype)
    differences = max_differences(modules, x, "ours") if "ours" in modules else None

    shape = f"batch {args.batch_size}, {args.num_tokens} tokens, {args.emb_dim} dims, {args.num_heads} heads"
    device_name = describe_device(device)
    print(f"Causal multi-head attention, {shape}, {args.dtype} on {device_name}; "
          f"fastest of {args.repeats} run(s) after {args.warmup} warm-up(s).")
    att_mb = attention_matrix_bytes(args.batch_size, args.num_heads, args.num_tokens, dtype) / 2**20
    print(f"One attention matrix (b, heads, tokens, tokens) takes {att_mb:.1f} MB.")
    rows = benchmark(modules, x, args.repeats, args.warmup, backward=not args.no_backward)
    print(format_table(rows, differences))
    print("vs ours: time of ours / time of this one (above 1 = faster). saved MB: tensors autograd keeps for the "
          "backward pass (weights and input excluded). max |diff|: largest difference to ours' output.")

    png = out_dir / "attention.png"
    plot_results(rows, f"Causal multi-head attention: {shape}, {args.dtype}, {device_name}").savefig(png, dpi=120)
    print(f"Wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
