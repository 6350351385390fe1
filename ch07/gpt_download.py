"""Download the pretrained weights chapter 7 instruction-tunes (GPT-2 medium by default).

`python ch07/gpt_download.py --help` lists the choices; SmolLM2 also reaches machines without internet.
"""

from __future__ import annotations

import sys

from buildllm.cli import download_main


def main(argv: list[str] | None = None) -> int:
    return download_main(argv, chapter="chapter 7 (instruction fine-tuning)", default_weights="gpt2-medium",
                         next_step="Fine-tune it: python ch07/gpt_instruction_finetuning.py --weights {weights}")


if __name__ == "__main__":
    sys.exit(main())
