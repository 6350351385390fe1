"""Generate text with a pretrained or trained model (chapter 5).

    python ch05/gpt_generate.py --prompt "Every effort moves you"              # GPT-2 small (124M)
    python ch05/gpt_generate.py --weights runs/ch05/model.pth --temperature 0  # greedy, your model
    python ch05/gpt_generate.py --weights smollm2-135m-instruct --chat \\
        --prompt "What is the capital of France?" --temperature 0 --max-new-tokens 12
    python ch05/gpt_generate.py --weights qwen3-0.6b --chat --prompt "What is the capital of France?"

GPT-2's weights come from the models folder (--models-dir, else $BUILDLLM_MODELS_DIR,
else ~/.cache/buildllm/models) and are downloaded there when missing (see
gpt_download.py). Where GPT-2 cannot be downloaded, SmolLM2-135M-Instruct stands in:
a Llama-style model of similar size with its own tokenizer, whose 4-bit weights also
reach machines without internet. qwen3-0.6b (Qwen3-0.6B: about 1.5 GB from Hugging
Face, downloaded into the models folder where Hugging Face is reachable) runs its
own tokenizer. --chat wraps the prompt in the model's chat format (SmolLM2's or
Qwen3's chat template, Qwen3 with thinking off, or the prompt style a chapter 7
model was fine-tuned with) and stops at the end of the answer. A prompt longer than
the model's context is cropped to its last tokens, with a warning.
"""

from __future__ import annotations

import sys

import torch

from buildllm.cli import (UserError, add_device_argument, add_weights_arguments, check_max_new_tokens, load_weights,
                          make_parser, pick_device, positive_int, probability, run_main, seed, temperature)
from buildllm.device import set_seed
from buildllm.generation import generate, text_to_token_ids
from buildllm.sources import WeightsError


def build_parser():
    parser = make_parser("Generate text with GPT-2, SmolLM2, Qwen3 or a model trained by an earlier chapter "
                         "(chapter 5).")
    parser.add_argument("--prompt", default="Every effort moves you", help="text to continue (or, with --chat, "
                                                                            "the message to answer)")
    add_weights_arguments(parser, default="gpt2-small", random_shape=False)
    parser.add_argument("--chat", action="store_true",
                        help="wrap --prompt in the model's chat format and print only the answer (instruction-"
                             "tuned models: smollm2-135m-instruct, qwen3-0.6b, or a chapter 7 model.pth)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=25, help="tokens to generate")
    parser.add_argument("--temperature", type=temperature, default=1.5, help="0 = greedy; higher = more random")
    parser.add_argument("--top-k", type=positive_int, default=50,
                        help="sample only among the k most likely tokens (ignored when --temperature is 0)")
    parser.add_argument("--top-p", type=probability, default=None, help="nucleus sampling: keep the most likely "
                                                                        "tokens whose probabilities sum to this")
    parser.add_argument("--seed", type=seed, default=123, help="random seed for sampling")
    add_device_argument(parser)
    return parser


def run(args) -> int:
    device = pick_device(args.device)
    base = load_weights(args, device)
    model, tokenizer = base.model.eval(), base.tokenizer
    vocab_size = model.cfg["vocab_size"]
    check_max_new_tokens(args.max_new_tokens, model.cfg["context_length"], base.name)
    if args.top_k > vocab_size:
        raise UserError(f"--top-k {args.top_k} is larger than the vocabulary of {base.name} ({vocab_size} tokens).")
    stop_id = None
    prompt = args.prompt
    if args.chat:
        try:
            prompt, stop_id = base.chat_prompt([(args.prompt, None)])
        except WeightsError as exc:
            raise UserError(f"--chat: {exc}") from None
    if args.chat:  # the chat format's own special tokens are part of the prompt the program built
        idx = torch.tensor([tokenizer.encode(prompt, allowed_special="all")], device=device)
    else:
        idx = text_to_token_ids(prompt, tokenizer).to(device)
    if idx.shape[1] == 0:
        raise UserError("--prompt is empty: give at least one word.")
    set_seed(args.seed)
    token_ids = generate(model, idx, args.max_new_tokens, model.cfg["context_length"], temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, eos_id=stop_id, use_cache=True)
    if args.chat:
        print(tokenizer.decode(token_ids[0, idx.shape[1]:].tolist()).strip())
    else:
        print(tokenizer.decode(token_ids[0].tolist()))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
