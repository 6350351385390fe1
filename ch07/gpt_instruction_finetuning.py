"""Fine-tune a pretrained model to follow instructions (chapter 7), then let it answer the test set.

The book's run (GPT-2 medium, 2 epochs, batch 8, learning rate 5e-5)::

    python ch07/gpt_instruction_finetuning.py

Without GPT-2's weights (offline), SmolLM2 stands in, or a small random model, or your ch05 model::

    python ch07/gpt_instruction_finetuning.py --weights smollm2-135m-instruct
    python ch07/gpt_instruction_finetuning.py --weights random --emb-dim 128 --n-layers 2 --n-heads 2 \\
        --context-length 256 --max-examples 300 --max-new-tokens 40
    python ch07/gpt_instruction_finetuning.py --weights runs/ch05/model.pth

Variants from the exercises: --prompt-style phi3 (7.1), --mask-instructions (7.2),
--lora-rank 16 (7.4).

Writes into --output-dir (default runs/ch07): model.pth (LoRA merged in; chat with it:
ch07/chat.py --weights runs/ch07/model.pth), loss-plot.png/.pdf,
instruction-data-with-response.json (the test entries with a "model_response" each)
and metrics.json (offline metrics, losses, settings). Score the responses afterwards
with ch07/ollama_evaluate.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files only, no window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from buildllm.checkpoints import save_model  # noqa: E402
from buildllm.cli import (UserError, add_device_argument, add_finetune_arguments, add_weights_arguments,  # noqa: E402
                          dropout_rate, load_weights, make_parser, nonnegative_int, pick_device, positive_int,
                          read_json_file, run_main, seed)
from buildllm.datasets import DatasetError, load_json  # noqa: E402
from buildllm.device import set_seed  # noqa: E402
from buildllm.files import check_writable  # noqa: E402
from buildllm.instruction import (PROMPT_STYLES, InstructionDataError, InstructionDataset, build_prompt,  # noqa: E402
                                  create_instruction_dataloader, format_input, generate_responses, partition_data,
                                  save_json, validate_entries)
from buildllm.judge import format_metrics, offline_metrics  # noqa: E402
from buildllm.lora import freeze_and_add_lora, merge_lora  # noqa: E402
from buildllm.model import count_parameters  # noqa: E402
from buildllm.plotting import plot_losses  # noqa: E402
from buildllm.training import calc_loss_loader, train_model_simple  # noqa: E402


def build_parser():
    parser = make_parser("Instruction fine-tuning on the chapter 7 data (1100 entries, split 85/10/5 into "
                         "train/test/validation), then response generation and offline metrics.")
    add_weights_arguments(parser, default="gpt2-medium")
    parser.add_argument("--data-file", default=None,
                        help="a JSON list of {instruction, input, output} entries (default: the chapter's "
                             "instruction-data.json, from $BUILDLLM_DATA_DIR or downloaded)")
    parser.add_argument("--prompt-style", default="alpaca", choices=PROMPT_STYLES, help="prompt template")
    parser.add_argument("--mask-instructions", action="store_true",
                        help="leave the prompt tokens out of the loss (exercise 7.2)")
    add_finetune_arguments(parser, instead="all weights", exercise="exercise 7.4", epochs=2,
                           batch="entries", eval_freq=5)
    parser.add_argument("--max-examples", type=positive_int, default=None,
                        help="use only the first N entries (before the 85/10/5 split) to run small")
    parser.add_argument("--allowed-max-length", type=positive_int, default=1024,
                        help="cut training texts to this many tokens (at most the model's context length)")
    parser.add_argument("--max-new-tokens", type=nonnegative_int, default=256,
                        help="longest generated response (also of the sample after each epoch)")
    parser.add_argument("--drop-rate", type=dropout_rate, default=0.0, help="dropout during fine-tuning, as in the book")
    parser.add_argument("--seed", type=seed, default=123, help="seed for initialization and shuffling")
    add_device_argument(parser)
    parser.add_argument("--output-dir", default="runs/ch07", help="where the model, plot and responses go")
    return parser


def load_data(args) -> list:
    """Return the instruction entries (validated; errors name the bad entry's index)."""
    if args.max_examples is not None and args.max_examples < 20:
        raise UserError(f"--max-examples must be at least 20 (so the 5% validation part is not empty), "
                        f"got {args.max_examples}.")
    try:
        if args.data_file is not None:
            data = read_json_file(args.data_file, "--data-file",
                                  expected="a JSON list of {instruction, input, output} entries")
        else:
            data = load_json("instruction-data")
    except DatasetError as exc:
        raise UserError(str(exc)) from None
    try:
        validate_entries(data)
    except InstructionDataError as exc:
        where = f"--data-file {args.data_file}" if args.data_file is not None else "instruction-data.json"
        raise UserError(f"{where}: {exc}") from None
    return data if args.max_examples is None else data[: args.max_examples]


def run(args) -> int:
    device = pick_device(args.device)
    out = Path(args.output_dir)
    for name in ("model.pth", "metrics.json", "instruction-data-with-response.json"):
        try:
            check_writable(out / name)
        except PermissionError as exc:
            raise UserError(f"--output-dir: {exc}") from None

    # 1. Data: split in order, 85% train, 10% test, 5% validation (the book's split).
    data = load_data(args)
    train_data, test_data, val_data = partition_data(data)
    print(f"Data: {len(data)} entries -> {len(train_data)} train, {len(val_data)} validation, "
          f"{len(test_data)} test (prompt style: {args.prompt_style})")
    if len(train_data) < args.batch_size:
        raise UserError(f"Only {len(train_data)} training entries, fewer than --batch-size {args.batch_size}: "
                        f"use more --max-examples or a smaller --batch-size.")

    # 2. Model.
    set_seed(args.seed)
    base = load_weights(args, device, drop_rate=args.drop_rate)
    model, tokenizer = base.model, base.tokenizer
    context_length = model.cfg["context_length"]
    allowed = args.allowed_max_length
    if allowed > context_length:
        print(f"Note: --allowed-max-length {allowed} is longer than the model's context ({context_length}); "
              f"using {context_length}.")
        allowed = context_length

    # 3. Datasets and loaders; count the texts that will be cut to `allowed` tokens.
    datasets = {name: InstructionDataset(part, tokenizer, args.prompt_style, args.mask_instructions, allowed)
                for name, part in [("train", train_data), ("validation", val_data), ("test", test_data)]}
    truncated = {name: ds.num_truncated for name, ds in datasets.items()}
    print(f"Entries longer than {allowed} tokens (truncated in training): "
          + ", ".join(f"{n} {name}" for name, n in truncated.items()))
    set_seed(args.seed)
    pad = tokenizer.eot_token
    train_loader = create_instruction_dataloader(datasets["train"], args.batch_size, shuffle=True, drop_last=True,
                                                 allowed_max_length=allowed, pad_token_id=pad)
    val_loader = create_instruction_dataloader(datasets["validation"], args.batch_size, allowed_max_length=allowed,
                                               pad_token_id=pad)

    # 4. Fine-tune (all weights, or LoRA matrices only).
    if args.lora_rank is not None:
        trainable = freeze_and_add_lora(model, rank=args.lora_rank, alpha=args.lora_alpha)
        how = f"LoRA rank {args.lora_rank}, alpha {args.lora_alpha:g}"
    else:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        how = "all weights"
    model.to(device)
    print(f"Model: {base.description} ({count_parameters(model):,} parameters, {trainable:,} trainable: {how}), "
          f"context {context_length}, device {device}")
    if args.mask_instructions:
        print("Prompt tokens are masked out of the loss (--mask-instructions).")

    with torch.no_grad():
        model.eval()
        print(f"Initial losses ({args.eval_iter} batches): "
              f"train {calc_loss_loader(train_loader, model, device, args.eval_iter):.3f}, "
              f"validation {calc_loss_loader(val_loader, model, device, args.eval_iter):.3f}")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                                  weight_decay=args.weight_decay)
    set_seed(args.seed)
    start = time.perf_counter()
    train_losses, val_losses, tokens_seen = train_model_simple(
        model, train_loader, val_loader, optimizer, device, num_epochs=args.epochs, eval_freq=args.eval_freq,
        eval_iter=args.eval_iter, start_context=build_prompt(val_data[0], args.prompt_style), tokenizer=tokenizer,
        max_new_tokens=args.max_new_tokens)
    minutes = (time.perf_counter() - start) / 60
    print(f"Training took {minutes:.2f} minutes.")
    if args.lora_rank is not None:
        merge_lora(model)  # a plain model again: chat.py and load_model need no LoRA code

    save_model(model, out / "model.pth", meta={"task": "instruction-tuned model", "tokenizer": base.tokenizer_name,
                                               "prompt_style": args.prompt_style, "base": base.name})
    if train_losses:
        epochs_seen = torch.linspace(0, args.epochs, len(train_losses))
        fig = plot_losses(epochs_seen, tokens_seen, train_losses, val_losses, out / "loss-plot.png")
        plt.close(fig)

    # 5. Responses for the test set, then metrics that need no judge.
    model.eval()
    try:
        answered = generate_responses(model, tokenizer, test_data, args.prompt_style, args.max_new_tokens)
    except ValueError as exc:  # a test prompt longer than the model's context
        raise UserError(f"{exc} The fine-tuned model was saved in {out}.") from None
    save_json(answered, out / "instruction-data-with-response.json")
    metrics = offline_metrics(answered)
    print(format_metrics(metrics))
    for entry in answered[:3]:
        print(f"\n{format_input(entry, args.prompt_style)}\n\nCorrect response:\n>> {entry['output']}\n"
              f"\nModel response:\n>> {entry['model_response']}\n" + "-" * 40)
    save_json({
        "offline_metrics": metrics,
        "train_losses": train_losses,
        "val_losses": val_losses,
        "tokens_seen": tokens_seen,
        "training_minutes": minutes,
        "truncated_entries": truncated,
        "trainable_parameters": trainable,
        "base_model": base.description,
        "device": str(device),
        "settings": vars(args),
    }, out / "metrics.json")
    print(f"\nSaved model.pth, loss-plot.png/.pdf, instruction-data-with-response.json and metrics.json in {out}")
    print(f"Score the responses with a judge: python ch07/ollama_evaluate.py --file "
          f"{out / 'instruction-data-with-response.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
