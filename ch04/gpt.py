"""Build an untrained GPT model (chapter 4) and let it continue a prompt, greedily.

The weights are random, so the continuation is gibberish: the point is to see the
whole path text -> token IDs -> model -> next-token IDs -> text work end to end.
Chapter 5 trains the model (gpt_train.py) and loads OpenAI's weights (gpt_generate.py).

    python ch04/gpt.py                                   # the book's example: "Hello, I am", 10 tokens
    python ch04/gpt.py --prompt "Every effort moves you" --max-new-tokens 20
    python ch04/gpt.py --model-size gpt2-medium --device cuda
"""

from __future__ import annotations

import argparse
import sys


from buildllm.device import DEVICE_CHOICES, get_device, set_seed
from buildllm.generation import generate_text_simple, text_to_token_ids, token_ids_to_text
from buildllm.model import GPT2_SIZES, GPTModel, count_parameters, get_gpt2_config
from buildllm.tokenizer import get_gpt2_tokenizer


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser (defaults are the book's chapter 4 settings)."""
    parser = argparse.ArgumentParser(
        description="Generate text with an untrained (randomly initialized) GPT-2-style model, as in chapter 4.",
    )
    parser.add_argument("--prompt", default="Hello, I am", help='text to continue (default: "Hello, I am")')
    parser.add_argument("--max-new-tokens", type=int, default=10, help="tokens to generate (default: 10)")
    parser.add_argument("--model-size", default="gpt2-small", choices=list(GPT2_SIZES),
                        help="GPT-2 architecture size (default: gpt2-small, 124M parameters)")
    parser.add_argument("--context-length", type=int, default=1024,
                        help="longest input the model accepts, in tokens (default: 1024)")
    parser.add_argument("--seed", type=int, default=123, help="seed of the random weights (default: 123)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                        help="auto picks cuda, then mps, then cpu (default: auto)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the script with `argv` (default: the command line); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_new_tokens < 0:
        parser.error(f"--max-new-tokens must be 0 or more, got {args.max_new_tokens}")
    if args.context_length < 1:
        parser.error(f"--context-length must be at least 1, got {args.context_length}")

    device = get_device(args.device)
    tokenizer = get_gpt2_tokenizer()
    encoded = text_to_token_ids(args.prompt, tokenizer)  # (1, num_tokens)
    if encoded.shape[1] == 0:
        parser.error("--prompt is empty: give at least one word to continue")

    cfg = get_gpt2_config(args.model_size, context_length=args.context_length)
    set_seed(args.seed)  # the same seed gives the same random weights, hence the same output
    model = GPTModel(cfg).to(device)
    model.eval()  # no dropout while generating

    print(f"Model: {args.model_size}, {count_parameters(model):,} parameters, untrained, on {device}")
    print(f"Input text: {args.prompt!r}")
    print(f"Encoded input IDs: {encoded.squeeze(0).tolist()}")

    out = generate_text_simple(
        model=model,
        idx=encoded.to(device),
        max_new_tokens=args.max_new_tokens,
        context_size=cfg["context_length"],
    )  # (1, num_tokens + max_new_tokens)
    out = out.cpu()
    print(f"Output IDs: {out.squeeze(0).tolist()}")
    print(f"Output length: {out.shape[1]} tokens")
    print(f"Decoded text: {token_ids_to_text(out, tokenizer)!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
