"""Download GPT-2 weights for chapter 7 (default: GPT-2 medium, the chapter's model).

    python ch07/gpt_download.py                          # gpt2-medium, Hugging Face safetensors, into gpt2/355M
    python ch07/gpt_download.py --model-size gpt2-small --source openai

The same downloader as ch05/gpt_download.py (`buildllm.gpt2.download_cli`) with
this chapter's defaults. Offline, the error lists the URLs to fetch on another
machine; ch07/gpt_instruction_finetuning.py then finds them in --models-dir.
"""

from __future__ import annotations

import sys

from buildllm.gpt2 import download_cli


def main(argv: list[str] | None = None) -> int:
    return download_cli(
        argv, default_model_size="gpt2-medium", default_source="huggingface",
        next_step="Fine-tune it: python ch07/gpt_instruction_finetuning.py --weights {model_size} "
                  "--models-dir {models_dir}",
    )


if __name__ == "__main__":
    sys.exit(main())
