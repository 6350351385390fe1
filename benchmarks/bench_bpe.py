"""Encoding throughput of our from-scratch BPE (buildllm.bpe, pure Python) against tiktoken (Rust).

Both tokenizers use GPT-2's merges and produce identical IDs (checked here on
every text before timing). Prints one row per text: size, MB/s of ours with an
empty cache ("cold", every distinct piece is BPE-merged once), ours again with
the piece cache filled ("warm"), tiktoken, and how many times faster tiktoken is.

    python benchmarks/bench_bpe.py            # full texts, best of 3
    python benchmarks/bench_bpe.py --quick    # 50 KB of each text, one repeat (smoke run)
    python benchmarks/bench_bpe.py --clock cpu   # CPU time instead of wall time (busy machines)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # this checkout's buildllm, even if it is not installed

from buildllm.cli import positive_int  # noqa: E402  (standard library only: --help stays fast)


def load_texts(max_chars: int | None) -> dict[str, str]:
    """The benchmark texts: English prose, Korean prose, Python source (each cut to `max_chars`)."""
    from buildllm.datasets import load_text

    korean = [REPO / "ch02" / "korean-sample.txt", *sorted((REPO / "notes-ko").glob("*.md"))]
    texts = {
        "English (tinyshakespeare)": load_text("tinyshakespeare"),
        "Korean (ch02 sample + notes-ko)": "\n".join(p.read_text(encoding="utf-8") for p in korean if p.is_file()),
        "Python (buildllm/*.py)": "\n".join(p.read_text(encoding="utf-8")
                                            for p in sorted((REPO / "buildllm").glob("*.py"))),
    }
    return {name: text[:max_chars] if max_chars else text for name, text in texts.items()}


def best_time(fn, repeats: int, clock=time.perf_counter) -> float:
    """The fastest of `repeats` calls of `fn()`, in seconds of `clock`."""
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 KB of each text, one repeat")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed runs per measurement, the best is kept (default: 3)")
    parser.add_argument("--max-chars", type=positive_int, default=None, help="cut each text to this many characters (default: the whole text; 50,000 with --quick)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time, steadier on a busy machine (default: wall)")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    max_chars = args.max_chars or (50_000 if args.quick else None)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    from buildllm.bpe import BPETokenizer
    from buildllm.tokenizer import get_gpt2_tokenizer

    start = time.perf_counter()
    ours = BPETokenizer.from_gpt2()
    load_s = time.perf_counter() - start
    ref = get_gpt2_tokenizer()
    texts = load_texts(max_chars)

    print(f"Loading GPT-2's 50,000 merges into BPETokenizer: {load_s:.2f} s. Best of {repeats} run(s), "
          f"{args.clock} clock; tiktoken runs single-threaded (one encode call).")
    header = f"{'text':34} {'MB':>6} {'ours cold':>12} {'ours warm':>12} {'tiktoken':>12} {'tiktoken/ours':>14}"
    print(header)
    print("-" * len(header))
    for name, text in texts.items():
        mb = len(text.encode("utf-8")) / 1e6
        expected = ref.encode(text, disallowed_special=())
        if ours.encode(text, disallowed_special=()) != expected:
            raise SystemExit(f"IDs differ from tiktoken on {name}: this is a bug in buildllm.bpe.")

        def cold():
            ours._cache.clear()
            ours.encode(text, disallowed_special=())

        cold_s = best_time(cold, repeats, clock)
        ours.encode(text, disallowed_special=())  # fill the cache
        warm_s = best_time(lambda: ours.encode(text, disallowed_special=()), repeats, clock)
        ref_s = best_time(lambda: ref.encode(text, disallowed_special=()), repeats, clock)
        speeds = [f"{mb / t:.2f} MB/s" for t in (cold_s, warm_s, ref_s)]
        print(f"{name:34} {mb:6.2f} {speeds[0]:>12} {speeds[1]:>12} {speeds[2]:>12} {cold_s / ref_s:13.1f}x")
    print("ratio = time of ours (cold cache) / time of tiktoken: how many times faster tiktoken is.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
