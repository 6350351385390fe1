"""Download the pretrained weights chapter 7 starts from, verified, into the models folder.

    python ch07/gpt_download.py                                  # gpt2-medium from Hugging Face (one safetensors file)
    python ch07/gpt_download.py --weights gpt2-medium --source openai
    python ch07/gpt_download.py --weights smollm2-135m-instruct  # SmolLM2: also works without internet

The models folder is --models-dir, else $BUILDLLM_MODELS_DIR, else ~/.cache/buildllm/models;
every script and notebook looks for weights there. Files already there are verified and
kept. On a machine without internet access, run this elsewhere and copy the folder it
prints to the same place; the error message lists the URLs.
"""

from __future__ import annotations

import sys

from buildllm.cli import download_main


def main(argv: list[str] | None = None) -> int:
    return download_main(argv, chapter="chapter 7 (instruction fine-tuning)", default_weights="gpt2-medium",
                         next_step="Fine-tune it: python ch07/gpt_instruction_finetuning.py --weights {weights}")


if __name__ == "__main__":
    sys.exit(main())
