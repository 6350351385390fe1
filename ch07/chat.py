"""Chat in the terminal with an instruction-fine-tuned model (chapter 7); answers appear token by token.

    python ch07/chat.py --checkpoint runs/ch07/model.pth
    printf 'Rewrite the sentence using a simile.\\n/quit\\n' | python ch07/chat.py --checkpoint runs/ch07/model.pth

Each line you type is one instruction. Earlier turns stay in the prompt (oldest
dropped when the context fills up) until you type /reset; /quit or end of input
(Ctrl-D) leaves. Use the --prompt-style the model was fine-tuned with.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from buildllm.cli import UserError, run_main

COMMANDS = "/reset (forget the conversation), /quit (leave)"


def build_parser() -> argparse.ArgumentParser:
    from buildllm.device import DEVICE_CHOICES
    from buildllm.instruction import PROMPT_STYLES

    parser = argparse.ArgumentParser(
        description="Interactive chat with a fine-tuned GPT model; reads instructions line by line from the "
        "terminal or a pipe and streams the answers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True,
                        help="model.pth written by ch07/gpt_instruction_finetuning.py (buildllm.training.save_model)")
    parser.add_argument("--prompt-style", default="alpaca", choices=PROMPT_STYLES,
                        help="the prompt template the model was fine-tuned with")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy decoding (as in the chapter)")
    parser.add_argument("--top-k", type=int, default=None, help="sample only from the k most likely tokens")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest answer")
    parser.add_argument("--seed", type=int, default=123, help="seed for sampling (temperature > 0)")
    parser.add_argument("--no-history", action="store_true", help="answer each line on its own (no earlier turns)")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    return parser


def fit_turns(turns: list, tokenizer, style: str, budget: int) -> tuple[str, int]:
    """Return the conversation prompt and how many old turns were dropped so it fits in `budget` tokens."""
    from buildllm.instruction import format_conversation

    dropped = 0
    prompt = format_conversation(turns, style)
    while len(turns) - dropped > 1 and len(tokenizer.encode(prompt)) > budget:
        dropped += 1
        prompt = format_conversation(turns[dropped:], style)
    return prompt, dropped


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(run, args)


def run(args) -> int:
    from buildllm.device import get_device, set_seed
    from buildllm.generation import check_sampling_args
    from buildllm.instruction import stream_response
    from buildllm.tokenizer import get_gpt2_tokenizer
    from buildllm.training import load_model

    try:
        check_sampling_args(args.temperature, args.top_k)
        device = get_device(args.device)
    except (ValueError, RuntimeError) as exc:
        raise UserError(str(exc)) from None
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")
    if not Path(args.checkpoint).is_file():
        raise UserError(f"No checkpoint at {args.checkpoint}. Train one first: "
                        f"python ch07/gpt_instruction_finetuning.py (it writes runs/ch07/model.pth).")
    try:
        model = load_model(args.checkpoint, device=device)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"Could not load {args.checkpoint}: {exc}") from None
    model.eval()
    tokenizer = get_gpt2_tokenizer()
    set_seed(args.seed)
    context = model.cfg["context_length"]
    # Room for the prompt: leave space for the answer, but keep at least half the context for the prompt.
    budget = context - min(args.max_new_tokens, context // 2)
    interactive = sys.stdin.isatty()
    print(f"Chatting with {args.checkpoint} ({args.prompt_style} prompts, context {context} tokens). "
          f"Commands: {COMMANDS}.", flush=True)

    turns: list[tuple[str, str | None]] = []
    while True:
        if interactive:
            print("\nYou: ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:  # end of input (Ctrl-D, or the pipe is empty)
            if interactive:
                print()
            break
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            break
        if text == "/reset":
            turns.clear()
            print("(conversation reset)", flush=True)
            continue
        if text.startswith("/"):
            print(f"Unknown command {text!r}. Commands: {COMMANDS}.", flush=True)
            continue
        if not interactive:
            print(f"\nYou: {text}")  # show what was read from the pipe, so the transcript reads well
        if args.no_history:
            turns.clear()
        turns.append((text, None))
        prompt, dropped = fit_turns(turns, tokenizer, args.prompt_style, budget)
        if dropped:
            turns = turns[dropped:]
            print(f"(dropped the {dropped} oldest turn(s) to fit the {context}-token context)")
        print("Model: ", end="", flush=True)
        pieces = []
        for piece in stream_response(model, tokenizer, prompt, args.max_new_tokens, args.temperature, args.top_k):
            if not pieces:
                piece = piece.lstrip()
            pieces.append(piece)
            print(piece, end="", flush=True)
        answer = "".join(pieces).strip()
        print("" if answer else "(no answer: the model ended at once)", flush=True)
        turns[-1] = (text, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
