"""Download OpenAI's GPT-2 weights for chapter 7 (default: GPT-2 medium, the chapter's model).

    python ch07/gpt_download.py                          # gpt2-medium, Hugging Face safetensors, into gpt2/355M
    python ch07/gpt_download.py --model-size gpt2-small --source openai

The same downloader as ch05/gpt_download.py (buildllm.gpt2.download_gpt2_files):
verified files, kept when already there. Offline, the error lists the URLs to
fetch on another machine; ch07/gpt_instruction_finetuning.py then finds them in
--models-dir.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from buildllm.model import GPT2_SIZE_ALIASES, GPT2_SIZES

    parser = argparse.ArgumentParser(
        description="Download GPT-2 weights (chapter 7 uses gpt2-medium).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model-size", default="gpt2-medium", choices=list(GPT2_SIZES) + list(GPT2_SIZE_ALIASES),
                        help="which GPT-2")
    parser.add_argument("--source", default="huggingface", choices=("openai", "huggingface"),
                        help="huggingface: one model.safetensors file; openai: the original TensorFlow "
                             "checkpoint (reading it needs TensorFlow)")
    parser.add_argument("--models-dir", default="gpt2", help="parent folder; files go into <models-dir>/<size>")
    parser.add_argument("--retries", type=int, default=3, help="attempts per URL")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from buildllm.gpt2 import WeightsUnavailableError, download_gpt2_files

    try:
        folder = download_gpt2_files(args.model_size, args.models_dir, args.source, retries=max(args.retries, 1))
    except WeightsUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"GPT-2 {args.model_size} ({args.source}) is ready in {folder.resolve()}.")
    print(f"Fine-tune it: python ch07/gpt_instruction_finetuning.py --weights {args.model_size} "
          f"--models-dir {args.models_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
