"""Download the pretrained weights chapter 5 generates with (GPT-2 small by default).

`python ch05/gpt_download.py --help` lists the choices; SmolLM2 also reaches machines without internet.
"""

from __future__ import annotations

import sys

from buildllm.cli import download_main


def main(argv: list[str] | None = None) -> int:
    return download_main(argv, chapter="chapter 5 (text generation)", default_weights="gpt2-small",
                         next_step="Generate with it: python ch05/gpt_generate.py --weights {weights}")


if __name__ == "__main__":
    sys.exit(main())
