"""Download the pretrained weights chapter 5 starts from, verified, into the models folder.

    python ch05/gpt_download.py                                  # gpt2-small from Hugging Face (one safetensors file)
    python ch05/gpt_download.py --weights gpt2-medium --source openai
    python ch05/gpt_download.py --weights smollm2-135m-instruct  # SmolLM2: also works without internet

The models folder is --models-dir, else $BUILDLLM_MODELS_DIR, else ~/.cache/buildllm/models;
every script and notebook looks for weights there. Files already there are verified and
kept. On a machine without internet access, run this elsewhere and copy the folder it
prints to the same place; the error message lists the URLs.
"""

from __future__ import annotations

import sys

from buildllm.cli import download_main


def main(argv: list[str] | None = None) -> int:
    return download_main(argv, chapter="chapter 5 (text generation)", default_weights="gpt2-small",
                         next_step="Generate with it: python ch05/gpt_generate.py --weights {weights}")


if __name__ == "__main__":
    sys.exit(main())
