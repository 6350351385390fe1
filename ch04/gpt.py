"""Build an untrained GPT model (chapter 4) and let it continue a prompt, greedily.

The weights are random, so the continuation is gibberish: the point is to see the
whole path text -> token IDs -> model -> next-token IDs -> text work end to end.
Chapter 5 trains the model (gpt_train.py) and loads pretrained weights (gpt_generate.py).

    python ch04/gpt.py                                   # the book's example: "Hello, I am", 10 tokens
    python ch04/gpt.py --prompt "Every effort moves you" --max-new-tokens 20
    python ch04/gpt.py --model-size gpt2-medium --device cuda

About the parameter count: GPT-2 "124M" counts the output layer as the token
embedding matrix itself (weight tying). This model, like the book's, has its own
output layer (38.6M more parameters), and its position embedding has one row per
token of --context-length (768 parameters per row for gpt2-small), so the count it
prints changes with --context-length: 163,009,536 at the default 1024.
"""

from __future__ import annotations

import sys

from buildllm.cli import (UserError, add_device_argument, check_max_new_tokens, make_parser, nonnegative_int,
                          pick_device, positive_int, run_main, seed)
from buildllm.device import set_seed
from buildllm.generation import generate_text_simple, text_to_token_ids, token_ids_to_text
from buildllm.model import GPT2_SIZES, GPTModel, count_parameters, get_gpt2_config
from buildllm.tokenizer import get_gpt2_tokenizer


def build_parser():
    """Return the command-line parser (defaults are the book's chapter 4 settings)."""
    parser = make_parser("Generate text with an untrained (randomly initialized) GPT-2-style model, as in chapter 4.")
    parser.add_argument("--prompt", default="Hello, I am", help="text to continue")
    parser.add_argument("--max-new-tokens", type=nonnegative_int, default=10, help="tokens to generate")
    parser.add_argument("--model-size", default="gpt2-small", choices=list(GPT2_SIZES),
                        help="GPT-2 architecture size")
    parser.add_argument("--context-length", type=positive_int, default=1024,
                        help="longest input the model accepts, in tokens (the position embedding has this many rows)")
    parser.add_argument("--seed", type=seed, default=123, help="seed of the random weights")
    add_device_argument(parser)
    return parser


def run(args) -> int:
    check_max_new_tokens(args.max_new_tokens, args.context_length, "this model (--context-length)")
    device = pick_device(args.device)
    tokenizer = get_gpt2_tokenizer()
    encoded = text_to_token_ids(args.prompt, tokenizer)  # (1, num_tokens)
    if encoded.shape[1] == 0:
        raise UserError("--prompt is empty: give at least one word to continue.")

    cfg = get_gpt2_config(args.model_size, context_length=args.context_length)
    set_seed(args.seed)  # the same seed gives the same random weights, hence the same output
    model = GPTModel(cfg).to(device)
    model.eval()  # no dropout while generating

    total = count_parameters(model)
    tied = count_parameters(model, exclude_tied_output=True)
    print(f"Model: {args.model_size}, {total:,} parameters ({tied:,} counting the output layer as the token "
          f"embedding, as GPT-2's published sizes do), context {args.context_length}, untrained, on {device}")
    print(f"Input text: {args.prompt!r}")
    print(f"Encoded input IDs: {encoded.squeeze(0).tolist()}")

    out = generate_text_simple(model=model, idx=encoded.to(device), max_new_tokens=args.max_new_tokens,
                               context_size=cfg["context_length"]).cpu()  # (1, num_tokens + max_new_tokens)
    print(f"Output IDs: {out.squeeze(0).tolist()}")
    print(f"Output length: {out.shape[1]} tokens")
    print(f"Decoded text: {token_ids_to_text(out, tokenizer)!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the script with `argv` (default: the command line); return the exit status."""
    return run_main(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
