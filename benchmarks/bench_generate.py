"""Generation speed with and without the KV cache (bonus material of chapters 4-5).

Greedy decoding of `--max-new-tokens` tokens after the prompt "Hello, I am" with a
GPT-2-shaped model (random weights: speed does not depend on what the weights
learned), once with `buildllm.generation.generate_text_simple` (the whole sequence
again at every step) and once with ``use_cache=True`` (a `buildllm.kv_cache.KVCache`:
prefill, then one token per step). The script checks that both produce the same tokens,
prints tokens per second and the speed-up, times one step of each method at
about 20 sequence lengths, and writes a PNG with both.

    python benchmarks/bench_generate.py                      # 124M shape, 200 new tokens, batch 1
    python benchmarks/bench_generate.py --model-size gpt2-medium --max-new-tokens 500
    python benchmarks/bench_generate.py --quick              # smoke run: a tiny model, 20 tokens
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # this checkout's buildllm, even if it is not installed

from buildllm.cli import UserError, add_benchmark_arguments, positive_int, prepare_benchmark, seed  # noqa: E402
from buildllm.device import describe_device  # noqa: E402
from buildllm.generation import generate_text_simple  # noqa: E402
from buildllm.kv_cache import KVCache  # noqa: E402
from buildllm.model import GPT2_SIZE_ALIASES, GPT2_SIZES, GPTModel, get_gpt2_config  # noqa: E402

QUICK_CONFIG = {"emb_dim": 64, "n_layers": 2, "n_heads": 4, "context_length": 64}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_generation(model, idx: torch.Tensor, max_new_tokens: int, use_cache: bool,
                    repeats: int = 3) -> tuple[float, torch.Tensor]:
    """Fewest seconds of `repeats` greedy generations (uncached or cached; the minimum filters out other processes) and the tokens."""
    context_size = model.cfg["context_length"]
    times = []
    for _ in range(repeats):
        _sync(idx.device)
        start = time.perf_counter()
        out = generate_text_simple(model, idx, max_new_tokens, context_size, use_cache=use_cache)
        _sync(idx.device)
        times.append(time.perf_counter() - start)
    return min(times), out


@torch.no_grad()
def step_latency(model, lengths: list[int], use_cache: bool, batch_size: int = 1, repeats: int = 1) -> list[float]:
    """Seconds to produce the next token's logits when the sequence already has n tokens, for each n in `lengths`.

    Uncached: one forward pass over all n tokens. Cached: the first n - 1 tokens are
    prefilled (not timed), then one decode step feeds the n-th token. Token values do
    not change the cost, so random tokens stand in for a generated text. The fastest
    of `repeats` runs is kept.
    """
    cfg = model.cfg
    if max(lengths) > cfg["context_length"] or min(lengths) < 2:
        raise ValueError(f"lengths must lie between 2 and the context length {cfg['context_length']}, "
                         f"got {min(lengths)} .. {max(lengths)}.")
    device = next(model.parameters()).device
    tokens = torch.randint(0, cfg["vocab_size"], (batch_size, max(lengths)), device=device)
    results = []
    for n in lengths:
        best = float("inf")
        for _ in range(repeats):
            if use_cache:
                cache = KVCache(cfg["context_length"])
                model(tokens[:, : n - 1], kv_cache=cache)  # prefill, not timed
            _sync(device)
            start = time.perf_counter()
            if use_cache:
                model(tokens[:, n - 1 : n], kv_cache=cache)  # (b, 1, vocab)
            else:
                model(tokens[:, :n])  # (b, n, vocab)
            _sync(device)
            best = min(best, time.perf_counter() - start)
        results.append(best)
    return results


def compare_step_latency(model, lengths: list[int], batch_size: int = 1, repeats: int = 1) -> dict[str, list[float]]:
    """`step_latency` of both methods, length by length (alternating, so both see the same machine load)."""
    results: dict[str, list[float]] = {"uncached (recompute)": [], "KV cache": []}
    for n in lengths:
        results["uncached (recompute)"] += step_latency(model, [n], False, batch_size, repeats)
        results["KV cache"] += step_latency(model, [n], True, batch_size, repeats)
    return results


def evenly_spaced(first: int, last: int, count: int) -> list[int]:
    """`count` integers from `first` to `last` (both included), evenly spaced, without repeats."""
    if count <= 1 or last <= first:
        return [last]
    return sorted({round(first + i * (last - first) / (count - 1)) for i in range(count)})


def build_model(model_size: str, device: torch.device, quick: bool = False, seed: int = 123) -> GPTModel:
    """A GPT-2-shaped model with random weights, in eval mode (tiny when `quick`)."""
    cfg = get_gpt2_config(model_size, drop_rate=0.0)
    if quick:
        cfg.update(QUICK_CONFIG)
    torch.manual_seed(seed)
    return GPTModel(cfg).to(device).eval()


def format_table(results: dict[str, float], batch_size: int, max_new_tokens: int) -> str:
    """Text table: seconds, tokens/s and speed-up (vs uncached) of each method."""
    lines = [f"{'method':24} {'seconds':>9} {'tokens/s':>10} {'speed-up':>9}", "-" * 55]
    base = results["uncached (recompute)"]
    for name, seconds in results.items():
        tokens_per_s = batch_size * max_new_tokens / seconds
        lines.append(f"{name:24} {seconds:9.2f} {tokens_per_s:10.1f} {base / seconds:8.2f}x")
    return "\n".join(lines)


def plot_results(results: dict[str, float], lengths: list[int], latencies: dict[str, list[float]],
                 batch_size: int, max_new_tokens: int, title: str = ""):
    """Tokens/s bars (left) and one step's latency against sequence length (right). Returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_bar, ax_line = fig.subplots(1, 2)
    names = list(results)
    ax_bar.bar(names, [batch_size * max_new_tokens / s for s in results.values()], color=["tab:gray", "tab:blue"])
    ax_bar.set_ylabel("tokens per second (higher is better)")
    ax_bar.set_title(f"{max_new_tokens} new tokens, batch {batch_size}")
    for (name, times), color in zip(latencies.items(), ["tab:gray", "tab:blue"]):
        ax_line.plot(lengths, [t * 1e3 for t in times], marker="o", markersize=3, label=name, color=color)
    ax_line.set_xlabel("tokens in the sequence")
    ax_line.set_ylabel("milliseconds for the next token")
    ax_line.set_title("cost of one step as the sequence grows")
    ax_line.set_ylim(bottom=0)
    ax_line.legend()
    if title:
        fig.suptitle(title)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model-size", default="gpt2-small", choices=list(GPT2_SIZES) + list(GPT2_SIZE_ALIASES),
                        help="GPT-2 architecture, random weights (default: gpt2-small, 124M)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=200, help="tokens to generate (default: 200)")
    parser.add_argument("--batch-size", type=positive_int, default=1, help="copies of the prompt generated together (default: 1)")
    parser.add_argument("--prompt", default="Hello, I am", help='prompt text (default: "Hello, I am")')
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed generations per method; the fastest is kept (default: 3)")
    parser.add_argument("--seed", type=seed, default=123, help="seed of the random weights (default: 123)")
    add_benchmark_arguments(parser, "generate.png", REPO / "runs" / "benchmarks")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a tiny model (64 dims, 2 layers), 20 new tokens, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_new_tokens, args.repeats = min(args.max_new_tokens, 20), 1
    try:
        device, out_dir = prepare_benchmark(args, "generate.png")
    except UserError as exc:
        parser.error(str(exc))

    from buildllm.tokenizer import get_gpt2_tokenizer

    model = build_model(args.model_size, device, args.quick, args.seed)
    prompt = get_gpt2_tokenizer().encode(args.prompt)
    if len(prompt) + args.max_new_tokens > model.cfg["context_length"]:
        parser.error(f"prompt ({len(prompt)} tokens) + --max-new-tokens must fit the context of "
                     f"{model.cfg['context_length']} tokens (past it the cache recomputes; see buildllm.kv_cache)")
    idx = torch.tensor([prompt] * args.batch_size, device=device)  # (batch, prompt tokens)

    device_name = describe_device(device)
    size = "tiny (--quick)" if args.quick else args.model_size
    print(f"Greedy generation, {size} architecture with random weights, prompt of {len(prompt)} tokens, "
          f"{args.max_new_tokens} new tokens, batch {args.batch_size}, on {device_name}; "
          f"fastest of {args.repeats} run(s) after one warm-up.")
    generate_text_simple(model, idx, 2, model.cfg["context_length"], use_cache=True)  # warm-up: allocate, pick kernels
    results, outputs = {}, {}
    for name, use_cache in (("uncached (recompute)", False), ("KV cache", True)):
        results[name], outputs[name] = time_generation(model, idx, args.max_new_tokens, use_cache, args.repeats)
    same = torch.equal(*outputs.values())
    print(format_table(results, args.batch_size, args.max_new_tokens))
    print(f"Identical tokens: {'yes' if same else 'NO (a bug: please report it)'}")

    lengths = evenly_spaced(len(prompt) + 1, len(prompt) + args.max_new_tokens, 5 if args.quick else 20)
    latencies = compare_step_latency(model, lengths, args.batch_size, args.repeats)
    print(f"One step (ms) when the sequence has n tokens, n = {lengths[0]} .. {lengths[-1]}:")
    print(f"{'n':>6} " + " ".join(f"{name:>22}" for name in latencies))
    for i, n in enumerate(lengths):
        print(f"{n:6d} " + " ".join(f"{times[i] * 1e3:22.1f}" for times in latencies.values()))

    png = out_dir / "generate.png"
    plot_results(results, lengths, latencies, args.batch_size, args.max_new_tokens,
                 f"KV cache vs recompute: {size}, {device_name}").savefig(png, dpi=120)
    print(f"Wrote {png}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
