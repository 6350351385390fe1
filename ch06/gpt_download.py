"""Download the pretrained weights chapter 6 fine-tunes as a spam classifier (GPT-2 small by default).

`python ch06/gpt_download.py --help` lists the choices; SmolLM2 also reaches machines without internet.
"""

from __future__ import annotations

import sys

from buildllm.cli import download_main


def main(argv: list[str] | None = None) -> int:
    return download_main(argv, chapter="chapter 6 (spam classification)", default_weights="gpt2-small",
                         next_step="Fine-tune it: python ch06/gpt_class_finetune.py --weights {weights}")


if __name__ == "__main__":
    sys.exit(main())
