"""Training speed, memory and convergence of chapter 5's GPT with each opt-in speed setting, beside Hugging Face's GPT-2.

Every variant trains the same architecture on the same random batches with AdamW
(lr 4e-4, weight decay 0.1, the book's settings) through `buildllm.trainer.train_step`:

    plain            the teaching model, float32 (the book)
    fast             the config's "fast": True (scaled_dot_product_attention with one QKV product,
                     F.layer_norm, F.gelu): the same parameters
    fast-tied        fast, with the output layer tied to the token embedding (GPT-2 as published)
    bf16             torch.autocast to bfloat16
    compile          torch.compile (falls back to plain, and says so, where it cannot compile)
    fused-adamw      AdamW(fused=True)
    pad-vocab        vocabulary padded 50257 -> 50304 (zero rows, padding logits masked)
    all              fast, bf16, compile, fused-adamw and pad-vocab together
    hf-eager         transformers' GPT2LMHeadModel, attn_implementation="eager", float32
    hf-sdpa          the same with attn_implementation="sdpa"
    hf-sdpa-bf16     the same under bfloat16 autocast
    hf-eager-tied    hf-eager with GPT-2's weight tying (output layer = token embedding)
    hf-sdpa-tied     hf-sdpa with weight tying: the reference for fast-tied

The hf-* variants are built with our configuration: the same sizes and dropout,
and an output layer of its own (tie_word_embeddings=False), as the book's
GPTModel has. They differ only in the query/key/value biases (HF always has
them: 27,648 more parameters at 124M). hf-eager-tied is GPT-2 as published:
38.6M fewer parameters for AdamW to update, the same work per token in the
matrix products. Each variant runs in its own process, so
its peak memory is its own: on CUDA torch.cuda.max_memory_allocated (tensors
only), elsewhere the peak resident set size of that process (resource.getrusage:
it includes Python and PyTorch themselves, printed as the baseline).

On CUDA it also prints the model FLOPs utilization: (6 x matmul parameters + 12 x
layers x context x emb_dim) FLOPs per token x tokens/s, over the GPU's peak dense
bfloat16 FLOP/s (a small table of GPUs, or --peak-tflops); for float32 rows too,
so the rows compare.

Then the convergence check: plain and our fast variants train on the-verdict with
the book's settings (context 256, batch 2, dropout 0.1) for --converge-steps steps
from the same initial weights; their training-loss curves are overlaid in
train_convergence.png and compared in a table. With dropout, torch.compile draws
its masks with its own random-number code (and bfloat16 rounds differently), so
those curves should track the plain one, not match it step for step.

    python benchmarks/bench_train.py                          # GPT-2 small, context 1024, batch 8 (a GPU)
    python benchmarks/bench_train.py --batch-size 4 --steps 10 --variants plain,bf16,compile
    python benchmarks/bench_train.py --device cpu --context-length 256 --batch-size 2 --converge-steps 0   # a CPU
    python benchmarks/bench_train.py --device cpu --steps 0 --converge-steps 50 --variants plain,bf16,all  # curves only
    python benchmarks/bench_train.py --device cpu --emb-dim 256 --n-layers 4 --n-heads 4 --context-length 128 \\
        --batch-size 8 --converge-steps 0 --variants plain,fast,hf-sdpa,fast-tied,hf-sdpa-tied   # small, CPU
    python benchmarks/bench_train.py --quick                  # smoke run: a tiny model, a few steps
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # this checkout's buildllm, even if it is not installed

from buildllm.cli import (UserError, check_output_paths, dropout_rate, nonnegative_int, positive_float,  # noqa: E402
                          positive_int, seed)
from buildllm.device import get_device, set_seed  # noqa: E402
from buildllm.model import GPT2_SIZES, GPTModel, get_gpt2_config  # noqa: E402
from buildllm.speed import check_dtype_supported, compile_model, make_adamw, pad_vocab_size  # noqa: E402
from buildllm.trainer import train_step  # noqa: E402

VARIANTS = {
    "plain": {},
    "fast": {"fast": True},
    "fast-tied": {"fast": True, "tied": True},
    "bf16": {"dtype": "bfloat16"},
    "compile": {"compile": True},
    "fused-adamw": {"fused_adamw": True},
    "pad-vocab": {"pad_vocab": True},
    "all": {"fast": True, "dtype": "bfloat16", "compile": True, "fused_adamw": True, "pad_vocab": True},
    "hf-eager": {"hf": "eager"},
    "hf-sdpa": {"hf": "sdpa"},
    "hf-sdpa-bf16": {"hf": "sdpa", "dtype": "bfloat16"},
    "hf-eager-tied": {"hf": "eager", "tied": True},
    "hf-sdpa-tied": {"hf": "sdpa", "tied": True},
}
# Peak dense bfloat16 tensor-core FLOP/s (no sparsity), from NVIDIA's data sheets; matched in this order.
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0), ("L40S", 362.0),
                    ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.0)]
QUICK = {"emb_dim": 32, "n_layers": 1, "n_heads": 2, "context_length": 32, "batch_size": 2, "steps": 2, "warmup": 1,
         "converge_steps": 10}
LR, WEIGHT_DECAY = 4e-4, 0.1


class HFLogits(nn.Module):
    """A Hugging Face causal LM that returns only its logits (b, T, vocab), like GPTModel."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=idx).logits


def model_config(args: argparse.Namespace) -> dict:
    """The GPT config of the run: --model-size at --context-length (a tiny model with --quick)."""
    overrides = {"context_length": args.context_length, "drop_rate": args.drop_rate}
    for key in ("emb_dim", "n_layers", "n_heads"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
        elif args.quick:
            overrides[key] = QUICK[key]
    return get_gpt2_config(args.model_size, **overrides)


def build_hf_model(cfg: dict, attn_implementation: str, tied: bool = False) -> nn.Module:
    """transformers' GPT2LMHeadModel with the architecture of `cfg` (same dropout everywhere), returning logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_cfg = GPT2Config(vocab_size=cfg["vocab_size"], n_positions=cfg["context_length"], n_embd=cfg["emb_dim"],
                        n_layer=cfg["n_layers"], n_head=cfg["n_heads"], resid_pdrop=cfg["drop_rate"],
                        embd_pdrop=cfg["drop_rate"], attn_pdrop=cfg["drop_rate"],
                        attn_implementation=attn_implementation, tie_word_embeddings=tied)
    return HFLogits(GPT2LMHeadModel(hf_cfg))


def build_variant(name: str, cfg: dict, device: torch.device, example: torch.Tensor, compile_backend: str):
    """Return (model, optimizer, autocast dtype, note) of variant `name`, on `device`."""
    spec = VARIANTS[name]
    amp_dtype = check_dtype_supported(device, spec.get("dtype", "float32"))
    note = ""
    if "hf" in spec:
        model = build_hf_model(cfg, spec["hf"], tied=spec.get("tied", False)).to(device)
    else:
        options = {"fast": spec.get("fast", False), "tie_weights": spec.get("tied", False)}
        if spec.get("pad_vocab"):
            options["padded_vocab_size"] = pad_vocab_size(cfg["vocab_size"])
        model = GPTModel({**cfg, **options}).to(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = make_adamw(model.parameters(), LR, WEIGHT_DECAY, fused=spec.get("fused_adamw", False))
        if spec.get("compile"):
            compiled = compile_model(model, example, backend=compile_backend, amp_dtype=amp_dtype)
            if compiled is model:
                note = "compile failed: ran uncompiled"
            model = compiled
    if any("Fused AdamW is not available" in str(w.message) for w in caught):
        note = (note + "; " if note else "") + "fused AdamW unavailable"
    return model, optimizer, amp_dtype, note


def matmul_flops_per_token(cfg: dict) -> float:
    """Training FLOPs per token: 6 x (12 layers x d^2 + vocab x d) for the matrix products, + 12 x layers x T x d for attention."""
    d, layers, context = cfg["emb_dim"], cfg["n_layers"], cfg["context_length"]
    matmul_params = 12 * layers * d * d + cfg["vocab_size"] * d  # QKV + out_proj + feed forward, and the output head
    return 6 * matmul_params + 12 * layers * context * d


def peak_tflops(device_name: str, override: float | None) -> float | None:
    """The GPU's peak dense bfloat16 TFLOP/s: `override`, else from the table, else None."""
    if override:
        return override
    for key, value in PEAK_BF16_TFLOPS:
        if key in device_name:
            return value
    return None


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size in bytes (None where the resource module is missing, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_variant(name: str, args: argparse.Namespace) -> dict:
    """Train variant `name` for --warmup + --steps steps on random tokens; return its speed (median step) and memory."""
    device = get_device(args.device)
    baseline_rss = peak_rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = model_config(args)
    set_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, cfg["vocab_size"], (args.warmup + args.steps, args.batch_size, args.context_length + 1),
                           generator=generator)
    model, optimizer, amp_dtype, note = build_variant(name, cfg, device, tokens[0, :, :-1].to(device),
                                                      args.compile_backend)
    model.train()

    def step(i: int) -> float:
        batch = tokens[i].to(device)
        return train_step(model, [(batch[:, :-1], batch[:, 1:])], optimizer, device, amp_dtype=amp_dtype)

    for i in range(args.warmup):
        step(i)
    _sync(device)
    losses, step_seconds = [], []
    for i in range(args.steps):
        start = time.perf_counter()
        losses.append(step(args.warmup + i))  # .item() inside waits for the device
        _sync(device)
        step_seconds.append(time.perf_counter() - start)
    median = statistics.median(step_seconds)  # robust to a step slowed down by something else on the machine
    result = {
        "variant": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": args.batch_size * args.context_length / median,
        "step_ms": 1000 * median,
        "step_ms_all": [1000 * t for t in step_seconds],
        "last_loss": losses[-1],
        "note": note,
        "baseline_rss_bytes": baseline_rss,
    }
    if device.type == "cuda":
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
        result["memory_kind"] = "cuda max_memory_allocated"
    else:
        result["peak_memory_bytes"] = peak_rss_bytes()
        result["memory_kind"] = "peak RSS of the process"
    return result


def measure_interleaved(names: list[str], args: argparse.Namespace) -> list[dict]:
    """Train every variant in this one process, one step of each in turn, on the same batches; return their speeds.

    Taking turns step by step means a busy moment of the machine slows every variant
    alike, so the ratios hold even on a shared CPU. The order rotates every round.
    Each row reports the median step time and the spread (first to third quartile).
    """
    device = get_device(args.device)
    cfg = model_config(args)
    generator = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, cfg["vocab_size"], (args.warmup + args.steps, args.batch_size, args.context_length + 1),
                           generator=generator)
    built = {}
    for name in names:
        set_seed(args.seed)
        built[name] = build_variant(name, cfg, device, tokens[0, :, :-1].to(device), args.compile_backend)
        built[name][0].train()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.warmup + args.steps):
        batch = tokens[i].to(device)
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            model, optimizer, amp_dtype, _ = built[name]
            _sync(device)
            start = time.perf_counter()
            train_step(model, [(batch[:, :-1], batch[:, 1:])], optimizer, device, amp_dtype=amp_dtype)
            _sync(device)
            if i >= args.warmup:
                seconds[name].append(time.perf_counter() - start)
    rows = []
    for name in names:
        times = sorted(seconds[name])
        quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        rows.append({"variant": name, "parameters": sum(p.numel() for p in built[name][0].parameters()),
                     "tokens_per_s": args.batch_size * args.context_length / quartiles[1],
                     "step_ms": 1000 * quartiles[1], "step_ms_q1": 1000 * quartiles[0],
                     "step_ms_q3": 1000 * quartiles[2], "step_ms_all": [1000 * t for t in seconds[name]],
                     "note": built[name][3]})
    return rows


def run_worker(name: str, args: argparse.Namespace, timeout: int = 3600) -> dict:
    """Measure one variant in a fresh Python process (its own peak memory); return its result or the error."""
    shape = [f"--{key.replace('_', '-')}={getattr(args, key)}" for key in ("emb_dim", "n_layers", "n_heads")
             if getattr(args, key) is not None]
    cmd = [sys.executable, __file__, "--worker", name, "--model-size", args.model_size, *shape,
           "--context-length", str(args.context_length), "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
           "--drop-rate", str(args.drop_rate), "--seed", str(args.seed), "--compile-backend", args.compile_backend]
    if args.quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"variant": name, "error": f"exit {proc.returncode}: {error}"}


def format_speed_table(rows: list[dict], mfu_peak: float | None, cfg: dict) -> str:
    """A text table: variant, parameters, tokens/s, speed-up over plain, ms per step, peak memory, MFU, note."""
    plain = next((r["tokens_per_s"] for r in rows if r["variant"] == "plain" and "error" not in r), None)
    header = (f"{'variant':<14} {'params':>12} {'tokens/s':>11} {'vs plain':>9} {'ms/step':>9} {'q1-q3 ms':>15} "
              f"{'peak MiB':>9}")
    header += f" {'MFU':>6}" if mfu_peak else ""
    lines = [header + "  note", "-" * (len(header) + 6)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['variant']:<14} failed: {r['error']}")
            continue
        speedup = f"{r['tokens_per_s'] / plain:.2f}x" if plain else "-"
        memory = r.get("peak_memory_bytes")
        spread = f"{r['step_ms_q1']:.1f}-{r['step_ms_q3']:.1f}" if "step_ms_q1" in r else "-"
        line = (f"{r['variant']:<14} {r['parameters']:>12,} {r['tokens_per_s']:>11,.0f} {speedup:>9} "
                f"{r['step_ms']:>9.1f} {spread:>15} {memory / 2**20 if memory else float('nan'):>9.0f}")
        if mfu_peak:
            mfu = matmul_flops_per_token(cfg) * r["tokens_per_s"] / (mfu_peak * 1e12)
            line += f" {100 * mfu:>5.1f}%"
        lines.append(line + f"  {r['note']}")
    return "\n".join(lines)


def converge_shape(args: argparse.Namespace) -> tuple[int, int]:
    """(context length, batch size) of the convergence check: the book's chapter 5 settings, tiny with --quick."""
    return (QUICK["context_length"], QUICK["batch_size"]) if args.quick else (256, 2)


def converge(args: argparse.Namespace, names: list[str], device: torch.device) -> dict[str, list[float]]:
    """Train each variant on the-verdict for --converge-steps steps from the same weights; return the step losses."""
    from buildllm.datasets import load_text
    from buildllm.tokenizer import get_gpt2_tokenizer
    from buildllm.trainer import TrainRun, create_pretraining_dataloaders, train_model

    context, batch = converge_shape(args)
    cfg = {**model_config(args), "context_length": context, "drop_rate": 0.1}
    text = load_text("the-verdict")
    curves = {}
    for name in names:
        set_seed(args.seed)
        train_loader, val_loader = create_pretraining_dataloaders(text, get_gpt2_tokenizer(), context, batch,
                                                                  seed=args.seed)
        example = next(iter(train_loader))[0].to(device)
        model, optimizer, amp_dtype, note = build_variant(name, cfg, device, example, args.compile_backend)
        epochs = math.ceil(args.converge_steps / len(train_loader))
        run = TrainRun(device=device, num_epochs=epochs, eval_freq=10**9, eval_iter=1, max_steps=args.converge_steps,
                       progress=False, is_main_process=False, amp_dtype=amp_dtype)  # silent
        state = train_model(model, train_loader, val_loader, optimizer, run)
        curves[name] = state.step_losses
        print(f"  {name}: {len(state.step_losses)} steps{' (' + note + ')' if note else ''}", flush=True)
        del model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return curves


def format_convergence_table(curves: dict[str, list[float]], window: int = 10) -> str:
    """Loss at the start and (averaged over the last `window` steps) at the end, and the largest gap to plain."""
    lines = [f"{'variant':<14} {'first loss':>10} {f'last {window} mean':>13} {'max |diff| vs plain':>20}", "-" * 60]
    plain = curves.get("plain")
    for name, losses in curves.items():
        tail = losses[-window:]
        gap = max(abs(a - b) for a, b in zip(losses, plain)) if plain else float("nan")
        lines.append(f"{name:<14} {losses[0]:>10.4f} {sum(tail) / len(tail):>13.4f} {gap:>20.4f}")
    return "\n".join(lines)


def plot_convergence(curves: dict[str, list[float]], path: Path, title: str) -> None:
    """Overlay the training-loss curves of all variants; save a PNG."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, label=name, linewidth=1.2 if name == "plain" else 0.9,
                linestyle="-" if name == "plain" else "--")
    ax.set_xlabel("Optimizer step")
    ax.set_ylabel("Training loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model-size", default="gpt2-small", choices=list(GPT2_SIZES), help="default gpt2-small")
    parser.add_argument("--emb-dim", type=positive_int, help="override the embedding size of --model-size")
    parser.add_argument("--n-layers", type=positive_int, help="override the number of transformer blocks")
    parser.add_argument("--n-heads", type=positive_int, help="override the number of attention heads")
    parser.add_argument("--context-length", type=positive_int, default=1024, help="tokens per sequence (default 1024)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="sequences per step (default 8)")
    parser.add_argument("--steps", type=nonnegative_int, default=20,
                        help="timed training steps per variant; the median counts (default 20; 0 skips the speed table)")
    parser.add_argument("--warmup", type=nonnegative_int, default=5,
                        help="untimed steps first (compilation happens here; default 5)")
    parser.add_argument("--drop-rate", type=dropout_rate, default=0.1, help="dropout in every variant (default 0.1)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of: {', '.join(VARIANTS)} (default all)")
    parser.add_argument("--converge-steps", type=nonnegative_int, default=300,
                        help="steps of the convergence check on the-verdict (default 300; 0 skips it)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend of the compile variants (default inductor)")
    parser.add_argument("--peak-tflops", type=positive_float,
                        help="the GPU's peak dense bfloat16 TFLOP/s for MFU (default: from a table of GPUs)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    parser.add_argument("--seed", type=seed, default=123, help="seed of the weights and batches (default 123)")
    parser.add_argument("--output-dir", default=str(REPO / "runs" / "benchmarks"),
                        help="folder for train_speed.json and train_convergence.png (default runs/benchmarks)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a 1-layer model (emb 32), context 32, batch 2, 2 steps, 10 convergence steps "
                             "(options given explicitly keep their values)")
    parser.add_argument("--separate-processes", action="store_true",
                        help="measure each variant in its own process (adds its peak memory; without it all variants "
                             "train in this process, taking turns step by step, so machine load hits all alike)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure one variant, print RESULT json
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:  # small values for the options left at their defaults
        for key in ("context_length", "batch_size", "steps", "warmup", "converge_steps"):
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, QUICK[key])
    if args.worker:
        print("RESULT " + json.dumps(measure_variant(args.worker, args)), flush=True)
        return 0

    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}.")
    if args.steps == args.converge_steps == 0:
        parser.error("--steps and --converge-steps must not both be 0: nothing would be measured.")
    out_dir = Path(args.output_dir)
    try:  # before training anything: a folder that cannot be written would lose the measurements at the end
        check_output_paths(out_dir / "train_speed.json", *([out_dir / "train_convergence.png"]
                                                           if args.converge_steps else []))
    except UserError as exc:
        parser.error(str(exc))
    try:
        device = get_device(args.device)
    except (ValueError, RuntimeError) as exc:
        parser.error(str(exc))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    cfg = model_config(args)
    if args.steps:
        print(f"Training speed: {'quick tiny model' if args.quick else args.model_size} shape (emb {cfg['emb_dim']}, "
              f"{cfg['n_layers']} layers, {cfg['n_heads']} heads), context {args.context_length}, batch "
              f"{args.batch_size}, dropout {args.drop_rate}, {args.steps} timed steps after {args.warmup} warmup, "
              f"on {device_name}, torch {torch.__version__}", flush=True)

    rows = []
    if args.steps and args.separate_processes:
        for name in names:
            rows.append(run_worker(name, args))
            print(f"  measured {name}", flush=True)
    elif args.steps:
        rows = measure_interleaved(names, args)
    if rows:
        mfu_peak = peak_tflops(device_name, args.peak_tflops) if device.type == "cuda" else None
        print()
        print(format_speed_table(rows, mfu_peak, cfg))
        print(f"tokens/s and ms/step: from the median of the {args.steps} timed steps"
              + ("." if args.separate_processes else "; all variants in one process, taking turns step by step."))
        baseline = next((r.get("baseline_rss_bytes") for r in rows if r.get("baseline_rss_bytes")), None)
        if not args.separate_processes:
            print("peak MiB: measured only with --separate-processes (one process per variant).")
        elif device.type == "cuda":
            print("peak MiB: torch.cuda.max_memory_allocated (weights, optimizer state, activations).")
            print(f"MFU: model FLOPs / peak bf16 {mfu_peak} TFLOP/s." if mfu_peak else
                  "MFU: unknown GPU; pass --peak-tflops (its dense bfloat16 peak) to print it.")
        else:
            print(f"peak MiB: peak resident memory of each variant's process, including Python and PyTorch "
                  f"(about {baseline / 2**20:.0f} MiB before building the model)." if baseline else
                  "peak MiB: not available on this platform.")

    report = {"device": device_name, "torch": torch.__version__, "config": cfg, "args": vars(args), "speed": rows}
    if args.converge_steps > 0:
        ours = [n for n in names if "hf" not in VARIANTS[n]]
        if "plain" not in ours:
            ours.insert(0, "plain")
        context, batch = converge_shape(args)
        print(f"\nConvergence on the-verdict: {'quick tiny model' if args.quick else args.model_size}, context "
              f"{context}, batch {batch}, {args.converge_steps} steps, dropout 0.1, same initial weights, on "
              f"{device_name}, torch {torch.__version__}:", flush=True)
        curves = converge(args, ours, device)
        print(format_convergence_table(curves))
        png = out_dir / "train_convergence.png"
        plot_convergence(curves, png, f"{'quick tiny model' if args.quick else args.model_size} on the-verdict, "
                                      f"{device_name}")
        print(f"Wrote {png}")
        report["convergence"] = curves
    (out_dir / "train_speed.json").write_text(json.dumps(report, indent=2))
    print(f"Wrote {out_dir / 'train_speed.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
