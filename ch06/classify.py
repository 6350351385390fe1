"""Classify messages as spam / not spam with a classifier fine-tuned by gpt_class_finetune.py (chapter 6).

    python ch06/classify.py --weights runs/ch06/model.pth "You won a prize! Call now"
    python ch06/classify.py --weights runs/ch06/model.pth "Are we still on for lunch?" "WINNER!! Claim your cash"

Each message is padded or cut to the length the classifier was trained with (stored
in its model file), exactly as during training, and the label is printed per line.
"""

from __future__ import annotations

import sys

from buildllm.checkpoints import ModelFileError
from buildllm.classification import classify_review, load_classifier
from buildllm.cli import UserError, add_device_argument, make_parser, pick_device, positive_int, run_main
from buildllm.pretrained import get_tokenizer
from buildllm.sources import WeightsError


def build_parser():
    parser = make_parser("Classify SMS messages with a spam classifier written by ch06/gpt_class_finetune.py.")
    parser.add_argument("messages", nargs="+", metavar="TEXT", help="message(s) to classify")
    parser.add_argument("--weights", required=True, metavar="PATH",
                        help="the classifier's model.pth (written by ch06/gpt_class_finetune.py)")
    parser.add_argument("--max-length", type=positive_int, default=None,
                        help="pad/cut to this many tokens (default: the length stored with the classifier)")
    add_device_argument(parser)
    return parser


def run(args) -> int:
    device = pick_device(args.device)
    try:
        model, meta = load_classifier(args.weights, device=device)
        tokenizer = get_tokenizer(meta.get("tokenizer", "gpt2"))
    except (ModelFileError, WeightsError) as exc:
        raise UserError(str(exc)) from None
    max_length = args.max_length or meta.get("max_length")
    for text in args.messages:
        try:
            label = classify_review(text, model, tokenizer, device, max_length=max_length)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        print(f"{label}\t{text}" if len(args.messages) > 1 else label)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
