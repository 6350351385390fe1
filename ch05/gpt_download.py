"""Download OpenAI's GPT-2 weights (chapter 5), verified, into one folder per size.

    python ch05/gpt_download.py                                    # 124M, OpenAI's checkpoint, into gpt2/124M
    python ch05/gpt_download.py --model-size gpt2-medium --source huggingface

Files that are already there (and of the right size where it is known) are kept.
On a machine without internet access, run this elsewhere and copy the folder
(e.g. gpt2/124M) to the same place; the error message lists the URLs.
The command line lives in `buildllm.gpt2.download_cli`.
"""

from __future__ import annotations

import sys

from buildllm.gpt2 import download_cli


def main(argv: list[str] | None = None) -> int:
    return download_cli(
        argv, default_model_size="124M", default_source="openai",
        next_step="Load it with buildllm.gpt2.load_pretrained_gpt(model_size, models_dir) or ch05/gpt_generate.py.",
    )


if __name__ == "__main__":
    sys.exit(main())
