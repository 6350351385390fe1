"""Download OpenAI's GPT-2 weights (chapter 5), verified, into one folder per size.

    python ch05/gpt_download.py                                    # 124M, OpenAI's checkpoint, into gpt2/124M
    python ch05/gpt_download.py --model-size gpt2-medium --source huggingface

Files that are already there (and of the right size where it is known) are kept.
On a machine without internet access, run this elsewhere and copy the folder
(e.g. gpt2/124M) to the same place; the error message lists the URLs.
"""

from __future__ import annotations

import argparse
import sys

from buildllm.gpt2 import WeightsUnavailableError, download_gpt2_files
from buildllm.model import GPT2_SIZE_ALIASES, GPT2_SIZES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Download GPT-2 weights: OpenAI's TensorFlow checkpoint or Hugging Face's safetensors.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model-size", default="124M", choices=list(GPT2_SIZE_ALIASES) + list(GPT2_SIZES),
                        help="which GPT-2")
    parser.add_argument("--source", default="openai", choices=("openai", "huggingface"),
                        help="openai: the original files (reading them needs TensorFlow); "
                             "huggingface: one model.safetensors file")
    parser.add_argument("--models-dir", default="gpt2", help="parent folder; files go into <models-dir>/<size>")
    parser.add_argument("--retries", type=int, default=3, help="attempts per URL")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        folder = download_gpt2_files(args.model_size, args.models_dir, args.source, retries=max(args.retries, 1))
    except WeightsUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"GPT-2 {args.model_size} ({args.source}) is ready in {folder.resolve()}:")
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.endswith(".part"):
            print(f"  {path.name:34s} {path.stat().st_size:>13,} bytes")
    print("Load it with buildllm.gpt2.load_pretrained_gpt(model_size, models_dir) or ch05/gpt_generate.py.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
