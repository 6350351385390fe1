"""Chat in the terminal with an instruction-tuned model (chapter 7); answers appear token by token.

    python ch07/chat.py --weights runs/ch07/model.pth           # the model chapter 7's script fine-tuned
    python ch07/chat.py --weights smollm2-135m-instruct         # SmolLM2, instruction-tuned by its authors
    python ch07/chat.py --weights qwen3-0.6b                    # Qwen3-0.6B (Hugging Face), thinking off
    printf 'Rewrite the sentence using a simile.\\n/quit\\n' | python ch07/chat.py --weights runs/ch07/model.pth

Each line you type is one instruction. Earlier turns stay in the prompt (oldest
dropped when the context fills up) until you type /reset; /quit or end of input
(Ctrl-D) leaves. The prompt format comes from the model: the prompt style a chapter
7 model was fine-tuned with (stored in its model.pth), or SmolLM2's or Qwen3's chat
template (Qwen3 without its "thinking": an empty think block starts every answer).
A model that was never instruction-tuned (e.g. chapter 5's model.pth) is refused
with advice: it would only continue your text.
"""

from __future__ import annotations

import sys

from buildllm.cli import (UserError, add_device_argument, add_weights_arguments, check_max_new_tokens, load_weights,
                          make_parser, pick_device, positive_int, run_main, seed, temperature)
from buildllm.device import set_seed
from buildllm.instruction import stream_response
from buildllm.sources import WeightsError

COMMANDS = "/reset (forget the conversation), /quit (leave)"


def build_parser():
    parser = make_parser("Interactive chat with an instruction-tuned model; reads instructions line by line from "
                         "the terminal or a pipe and streams the answers.")
    add_weights_arguments(parser, default="runs/ch07/model.pth", random_shape=False)
    parser.add_argument("--temperature", type=temperature, default=0.0, help="0 = greedy decoding (as in the chapter)")
    parser.add_argument("--top-k", type=positive_int, default=None, help="sample only from the k most likely tokens")
    parser.add_argument("--max-new-tokens", type=positive_int, default=256, help="longest answer")
    parser.add_argument("--seed", type=seed, default=123, help="seed for sampling (temperature > 0)")
    parser.add_argument("--no-history", action="store_true", help="answer each line on its own (no earlier turns)")
    add_device_argument(parser)
    return parser


def fit_turns(base, turns: list, budget: int) -> tuple[str, int, int]:
    """Return the prompt, the answer's end token and how many old turns were dropped to fit `budget` tokens."""
    dropped = 0
    prompt, stop_id = base.chat_prompt(turns)
    while len(turns) - dropped > 1 and len(base.tokenizer.encode(prompt, allowed_special="all")) > budget:
        dropped += 1
        prompt, stop_id = base.chat_prompt(turns[dropped:])
    return prompt, stop_id, dropped


def main(argv: list[str] | None = None) -> int:
    return run_main(run, build_parser().parse_args(argv))


def run(args) -> int:
    device = pick_device(args.device)
    base = load_weights(args, device)
    if base.chat_format is None:
        try:
            base.chat_prompt([("", None)])
        except WeightsError as exc:
            raise UserError(f"{exc}\nChat with ch07/chat.py --weights runs/ch07/model.pth after chapter 7's "
                            f"fine-tuning, or --weights smollm2-135m-instruct (or qwen3-0.6b).") from None
    model = base.model.eval()
    set_seed(args.seed)
    context = model.cfg["context_length"]
    check_max_new_tokens(args.max_new_tokens, context, base.name)
    # Room for the prompt: leave space for the answer, but keep at least half the context for the prompt.
    budget = context - min(args.max_new_tokens, context // 2)
    interactive = sys.stdin.isatty()
    print(f"Chatting with {base.description} ({base.chat_format} prompts, context {context} tokens). "
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
        prompt, stop_id, dropped = fit_turns(base, turns, budget)
        if dropped:
            turns = turns[dropped:]
            print(f"(dropped the {dropped} oldest turn(s) to fit the {context}-token context)")
        print("Model: ", end="", flush=True)
        pieces = []
        for piece in stream_response(model, base.tokenizer, prompt, args.max_new_tokens, args.temperature, args.top_k,
                                     eos_id=stop_id):
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
