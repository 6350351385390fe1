"""Mixture of experts: the readable loop against the batched mixture, and dense against MoE at equal active parameters.

Two tables, forward + backward on the CPU (or --device), timed in rounds where every
variant runs once per round, so all see the same machine load; each row shows the
median of `--repeats` rounds and the spread (fastest .. slowest):

1. one `buildllm.moe.MoEFeedForward` layer, "loop" vs "batched", for each expert count
   in `--experts` (both must give the same output: the script checks it);
2. a small `buildllm.qwen3.Qwen3Model`: dense with SwiGLU width top_k * expert width
   (same active parameters) against the MoE model, tokens/s and parameter memory.

    python benchmarks/bench_moe.py                      # 8, 32 and 128 experts, 2048 tokens
    python benchmarks/bench_moe.py --experts 16 64 --top-k 4 --threads 1
    python benchmarks/bench_moe.py --quick              # smoke run: tiny sizes, one round
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # this checkout's buildllm, even if it is not installed

from buildllm.cli import UserError, add_device_argument, make_parser, pick_device, positive_int, run_main  # noqa: E402
from buildllm.moe import MoEFeedForward, parameter_counts, set_moe_implementation  # noqa: E402
from buildllm.qwen3 import Qwen3Model  # noqa: E402


def machine() -> str:
    """CPU model name, cores, PyTorch threads and load average (timings depend on all four)."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")]
        name = models[0] if models else name
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} PyTorch threads, load average {load}"


def timed_rounds(funcs: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function in each round (one warm-up call each first)."""
    for func in funcs.values():
        func()
    times: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(repeats):
        for name, func in funcs.items():
            start = time.perf_counter()
            func()
            times[name].append(time.perf_counter() - start)
    return times


def row(name: str, values: list[float], tokens: int) -> str:
    median = statistics.median(values)
    return (f"{name:34} {median * 1000:10.1f} {f'{min(values) * 1000:.1f} .. {max(values) * 1000:.1f}':>20} "
            f"{tokens / median:12,.0f}")


HEADER = f"{'variant':34} {'median ms':>10} {'spread ms (min..max)':>20} {'tokens/s':>12}"


def layer_table(args, device) -> list[str]:
    lines = [f"1. One MoE layer, fwd+bwd of {args.tokens} tokens: emb_dim {args.emb_dim}, expert width "
             f"{args.expert_dim}, top-{args.top_k}", HEADER, "-" * len(HEADER)]
    x = torch.randn(args.tokens, args.emb_dim, device=device)
    for experts in args.experts:
        if args.top_k > experts:
            raise UserError(f"--top-k ({args.top_k}) must not exceed the smallest --experts value ({experts}).")
        torch.manual_seed(0)
        layer = MoEFeedForward(args.emb_dim, args.expert_dim, experts, args.top_k).to(device)
        outputs = {}

        def step(implementation):
            layer.implementation = implementation
            out = layer(x)
            out.sum().backward()
            outputs[implementation] = out.detach()

        times = timed_rounds({f"{experts} experts, {impl}": (lambda impl=impl: step(impl))
                              for impl in ("loop", "batched")}, args.repeats)
        diff = (outputs["loop"] - outputs["batched"]).abs().max().item()
        if diff > 1e-4:
            raise RuntimeError(f"loop and batched differ by {diff:.2e}: a bug in buildllm.moe")
        lines += [row(name, values, args.tokens) for name, values in times.items()]
        lines.append(f"{'':34} (max |loop - batched| = {diff:.1e})")
    return lines


def model_table(args, device) -> list[str]:
    base = {"vocab_size": 1000, "context_length": args.seq_len, "emb_dim": args.emb_dim, "n_heads": 4,
            "n_kv_groups": 2, "n_layers": args.layers, "hidden_dim": args.top_k * args.expert_dim}
    moe = {**base, "num_experts": args.experts[0], "num_experts_per_tok": args.top_k, "moe_hidden_dim": args.expert_dim}
    batch = max(1, args.tokens // args.seq_len)
    idx = torch.randint(0, 1000, (batch, args.seq_len), device=device)
    tokens = idx.numel()
    models, funcs = {}, {}
    for name, cfg in [("dense", base), (f"MoE {args.experts[0]} experts, loop", moe),
                      (f"MoE {args.experts[0]} experts, batched", moe)]:
        torch.manual_seed(0)
        model = Qwen3Model(cfg).to(device)
        if "batched" in name:
            set_moe_implementation(model, "batched")
        models[name] = model
        funcs[name] = lambda model=model: model(idx).float().logsumexp(-1).mean().backward()
    times = timed_rounds(funcs, args.repeats)
    lines = [f"2. Qwen3Model, {args.layers} blocks, fwd+bwd of {batch} x {args.seq_len} tokens: dense SwiGLU width "
             f"{args.top_k * args.expert_dim} vs {args.experts[0]} experts of width {args.expert_dim}, "
             f"top-{args.top_k}", HEADER + f" {'params':>10} {'active':>10} {'param MiB':>10}",
             "-" * (len(HEADER) + 33)]
    for name, values in times.items():
        counts = parameter_counts(models[name])
        lines.append(row(name, values, tokens) + f" {counts['total']:>10,} {counts['active']:>10,} "
                     f"{counts['total'] * 4 / 2**20:10.1f}")
    return lines


def run(args) -> int:
    if args.quick:
        args.experts, args.tokens, args.repeats = args.experts[:2], min(args.tokens, 128), 1
        args.emb_dim, args.expert_dim, args.layers, args.seq_len = 32, 32, 1, 32
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    print(f"Machine: {machine()} | device {device} | torch {torch.__version__}")
    print(f"Median of {args.repeats} rounds; the variants alternate within a round.\n")
    print("\n".join(layer_table(args, device)))
    print()
    print("\n".join(model_table(args, device)))
    return 0


def main(argv: list[str] | None = None) -> int:
    doc = __doc__.split("\n\n")
    parser = make_parser(doc[0], "\n\n".join(doc[1:]))
    parser.add_argument("--experts", type=positive_int, nargs="+", default=[8, 32, 128],
                        help="expert counts of table 1 (table 2 uses the first)")
    parser.add_argument("--top-k", type=positive_int, default=2, help="experts each token uses")
    parser.add_argument("--tokens", type=positive_int, default=2048, help="tokens per forward pass")
    parser.add_argument("--emb-dim", type=positive_int, default=256, help="embedding dimension")
    parser.add_argument("--expert-dim", type=positive_int, default=256, help="SwiGLU width of one expert")
    parser.add_argument("--layers", type=positive_int, default=4, help="transformer blocks of table 2's models")
    parser.add_argument("--seq-len", type=positive_int, default=256, help="sequence length of table 2")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed rounds; the tables show the median")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for PyTorch")
    add_device_argument(parser)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, two expert counts, one round")
    args = parser.parse_args(argv)
    if args.emb_dim % 4:
        parser.error("--emb-dim must be divisible by 4 (the models have 4 attention heads)")
    return run_main(run, args)


if __name__ == "__main__":
    sys.exit(main())
