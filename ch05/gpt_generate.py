"""Generate text with a GPT (chapter 5): OpenAI's pretrained GPT-2 weights or a model you trained.

    python ch05/gpt_generate.py --prompt "Every effort moves you"              # GPT-2 small (124M)
    python ch05/gpt_generate.py --weights gpt2-medium --source huggingface
    python ch05/gpt_generate.py --checkpoint runs/ch05/model.pth --temperature 0   # greedy, your model

GPT-2 weights are looked for in --models-dir (default gpt2/, relative to the current
folder) and downloaded there when missing (see gpt_download.py). A prompt longer than
the model's context is cropped to its last tokens, with a warning.
"""

from __future__ import annotations

import argparse
import sys


from buildllm.device import get_device, set_seed
from buildllm.generation import check_sampling_args, generate, text_to_token_ids, token_ids_to_text
from buildllm.gpt2 import SOURCES, WeightsUnavailableError, load_pretrained_gpt
from buildllm.model import GPT2_SIZE_ALIASES, GPT2_SIZES
from buildllm.tokenizer import get_gpt2_tokenizer
from buildllm.training import load_model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Generate text with GPT-2 weights or a checkpoint of ch05/gpt_train.py (chapter 5).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--prompt", default="Every effort moves you", help="text to continue")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--weights", default="gpt2-small", choices=list(GPT2_SIZES) + list(GPT2_SIZE_ALIASES),
                       help="OpenAI GPT-2 size to load")
    which.add_argument("--checkpoint", metavar="PATH", help="a model.pth (or checkpoint.pth) from gpt_train.py")
    parser.add_argument("--source", default="auto", choices=SOURCES,
                        help="where GPT-2 weights come from: files on disk first, then Hugging Face, then OpenAI")
    parser.add_argument("--models-dir", default="gpt2", help="folder holding (or receiving) GPT-2 weights")
    parser.add_argument("--max-new-tokens", type=int, default=25, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=1.5, help="0 = greedy; higher = more random")
    parser.add_argument("--top-k", type=int, default=50, help="sample only among the k most likely tokens")
    parser.add_argument("--seed", type=int, default=123, help="random seed for sampling")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")
    try:
        check_sampling_args(args.temperature, args.top_k)
        device = get_device(args.device)
    except (ValueError, RuntimeError) as exc:
        parser.error(str(exc).replace("temperature", "--temperature").replace("top_k", "--top-k"))

    try:
        if args.checkpoint:
            model = load_model(args.checkpoint, device).eval()
        else:
            model = load_pretrained_gpt(args.weights, args.models_dir, args.source, device)
    except (WeightsUnavailableError, FileNotFoundError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # what is missing and how to get it; no traceback
        return 1

    vocab_size = model.cfg["vocab_size"]
    try:
        check_sampling_args(args.temperature, args.top_k, vocab_size)
    except ValueError as exc:
        parser.error(str(exc).replace("top_k", "--top-k"))

    tokenizer = get_gpt2_tokenizer()
    set_seed(args.seed)
    idx = text_to_token_ids(args.prompt, tokenizer).to(device)
    token_ids = generate(model, idx, args.max_new_tokens, model.cfg["context_length"],
                         temperature=args.temperature, top_k=args.top_k)
    print(token_ids_to_text(token_ids.cpu(), tokenizer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
