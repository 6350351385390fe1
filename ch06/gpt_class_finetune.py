"""Fine-tune a GPT model as a spam classifier (chapter 6), or classify a message with a saved one.

Train (the book's settings: GPT-2 small weights, last block trainable, 5 epochs)::

    python ch06/gpt_class_finetune.py --output-dir runs/ch06
    python ch06/gpt_class_finetune.py --weights random --model-size gpt2-small   # no download needed
    python ch06/gpt_class_finetune.py --weights ch05/runs/model.pth               # your ch05 model
    python ch06/gpt_class_finetune.py --lora-rank 16 --lora-alpha 16              # appendix E: LoRA

Classify::

    python ch06/gpt_class_finetune.py --model runs/ch06/model.pth --classify "You won a prize! Call now"

Writes into --output-dir: model.pth (buildllm.training.save_model format),
loss-plot.png/.pdf, accuracy-plot.png/.pdf and results.json (final accuracies).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from buildllm.classification import (
    TRAINABLE_CHOICES,
    add_classification_head,
    calc_accuracy_loader,
    calc_loss_loader,
    classify_review,
    create_spam_dataloaders,
    load_base_model,
    load_classifier,
    prepare_spam_splits,
    set_trainable_layers,
    train_classifier_simple,
)
from buildllm.cli import UserError, add_weights_arguments, run_main
from buildllm.datasets import DatasetError
from buildllm.device import DEVICE_CHOICES, get_device, set_seed
from buildllm.lora import freeze_and_add_lora, merge_lora
from buildllm.model import GPT2_SIZES, GPTModel, count_parameters
from buildllm.plotting import plot_values
from buildllm.training import atomic_write_json, save_model
from buildllm.tokenizer import get_gpt2_tokenizer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fine-tune a GPT model to classify SMS messages as spam / not spam (chapter 6), "
        "or classify a message with a saved classifier (--classify TEXT --model PATH).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_weights_arguments(parser, default="gpt2-small")
    parser.add_argument("--trainable", default="last-block", choices=TRAINABLE_CHOICES,
                        help="which layers to fine-tune (ignored with --lora-rank)")
    parser.add_argument("--lora-rank", type=int, default=None,
                        help="fine-tune with LoRA of this rank instead of unfreezing layers (appendix E; book: 16)")
    parser.add_argument("--lora-alpha", type=float, default=16.0,
                        help="LoRA alpha; the update is scaled by alpha/rank (the book's code scales by alpha alone: "
                             "its rank 16, alpha 16 update is as large as --lora-alpha 256 here)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=None,
                        help="pad/cut every message to this many tokens (default: the longest training message)")
    parser.add_argument("--eval-freq", type=int, default=50, help="evaluate the loss every N steps")
    parser.add_argument("--eval-iter", type=int, default=5, help="batches per evaluation")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="dropout during fine-tuning (book: 0.0)")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--output-dir", default="runs/ch06", help="where model, plots and results.json go")
    parser.add_argument("--data-dir", default=None,
                        help="folder that already holds the SMS data (default: $BUILDLLM_DATA_DIR, else download)")
    parser.add_argument("--max-examples", type=int, default=None,
                        help="use only N of the 1494 balanced messages (seeded sample, before the 70/10/20 split)")
    tiny = parser.add_argument_group("architecture overrides for --weights random (small test models)")
    tiny.add_argument("--emb-dim", type=int, default=None)
    tiny.add_argument("--n-layers", type=int, default=None)
    tiny.add_argument("--n-heads", type=int, default=None)
    use = parser.add_argument_group("classify with a saved model")
    use.add_argument("--classify", metavar="TEXT", default=None, help="print 'spam' or 'not spam' for TEXT")
    use.add_argument("--model", metavar="PATH", default=None, help="model.pth written by a training run")
    return parser


def load_start_model(args, device: torch.device) -> tuple[GPTModel, str]:
    """Return the language model to start from, as --weights says, and what it is."""
    from buildllm.gpt2 import WeightsUnavailableError

    overrides = {k: v for k, v in {"emb_dim": args.emb_dim, "n_layers": args.n_layers, "n_heads": args.n_heads}.items()
                 if v is not None}
    try:
        return load_base_model(args.weights, model_size=args.model_size, models_dir=args.models_dir,
                               device=device, drop_rate=args.drop_rate, **overrides)
    except WeightsUnavailableError as exc:
        raise UserError(
            f"Could not load the {args.weights} weights: {exc}\n"
            f"Without them, use --weights random (random init: accuracy only what training from scratch "
            f"reaches), or --weights PATH with a model.pth written by ch05/gpt_train.py."
        ) from None
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise UserError(f"Could not load --weights {args.weights}: {exc}") from None


def pick_device(name: str) -> torch.device:
    try:
        return get_device(name)
    except (ValueError, RuntimeError) as exc:
        raise UserError(str(exc)) from None


def check_args(args) -> None:
    for name in ("epochs", "batch_size", "eval_freq", "eval_iter"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.weights not in GPT2_SIZES and args.weights != "random" and not Path(args.weights).is_file():
        raise UserError(
            f"--weights {args.weights!r} is neither a GPT-2 size ({', '.join(GPT2_SIZES)}), 'random', nor an "
            f"existing file. Give the path of a model.pth written by ch05/gpt_train.py."
        )
    if args.lora_rank is not None and args.lora_rank < 1:
        raise UserError(f"--lora-rank must be at least 1, got {args.lora_rank}.")
    if args.max_examples is not None and args.max_examples < 10:
        raise UserError(f"--max-examples must be at least 10 (70/10/20 split), got {args.max_examples}.")


def prepare_data(args, tokenizer):
    """Return (train, val, test) loaders of the balanced, split SMS data."""
    try:
        train_df, val_df, test_df = prepare_spam_splits(args.data_dir, seed=args.seed, max_examples=args.max_examples)
    except DatasetError as exc:
        raise UserError(str(exc)) from None
    try:
        return create_spam_dataloaders(train_df, val_df, test_df, tokenizer, batch_size=args.batch_size,
                                       max_length=args.max_length, seed=args.seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def train(args) -> int:
    check_args(args)
    device = pick_device(args.device)
    tokenizer = get_gpt2_tokenizer()
    train_loader, val_loader, test_loader = prepare_data(args, tokenizer)
    max_length = train_loader.dataset.max_length
    print(f"Data: {len(train_loader.dataset)} train / {len(val_loader.dataset)} validation / "
          f"{len(test_loader.dataset)} test messages, padded to {max_length} tokens")

    set_seed(args.seed)
    model, described = load_start_model(args, device)
    context_length = model.cfg["context_length"]
    if max_length > context_length:
        raise UserError(
            f"Messages are padded to {max_length} tokens but the model's context length is {context_length}. "
            f"Pass --max-length {context_length} (or less)."
        )
    set_seed(args.seed)
    add_classification_head(model, num_classes=2)
    model.cfg["max_length"] = max_length  # saved with the model: --classify pads the same way
    if args.lora_rank is not None:
        trainable = freeze_and_add_lora(model, rank=args.lora_rank, alpha=args.lora_alpha)
        how = f"LoRA rank {args.lora_rank}, alpha {args.lora_alpha:g}"
    else:
        trainable = set_trainable_layers(model, args.trainable)
        how = f"trainable: {args.trainable}"
    model.to(device)
    total = count_parameters(model)
    print(f"Model: {described}, {total:,} parameters, {trainable:,} trainable ({how}), device {device}")

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=args.lr, weight_decay=args.weight_decay)
    set_seed(args.seed)
    start = time.perf_counter()
    train_losses, val_losses, train_accs, val_accs, examples_seen = train_classifier_simple(
        model, train_loader, val_loader, optimizer, device, num_epochs=args.epochs,
        eval_freq=args.eval_freq, eval_iter=args.eval_iter, progress=True)
    minutes = (time.perf_counter() - start) / 60
    print(f"Training completed in {minutes:.2f} minutes.")

    if args.lora_rank is not None:
        merge_lora(model)  # a plain GPT classifier again: loads with load_classifier, no LoRA code needed

    accuracies = {name: calc_accuracy_loader(loader, model, device)
                  for name, loader in [("train", train_loader), ("validation", val_loader), ("test", test_loader)]}
    with torch.no_grad():
        test_loss = calc_loss_loader(test_loader, model, device)
    for name, acc in accuracies.items():
        print(f"{name.capitalize()} accuracy: {acc * 100:.2f}%")

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out / "model.pth")
    epochs_seen = torch.linspace(0, args.epochs, len(train_losses))
    examples_axis = torch.linspace(0, examples_seen, len(train_losses))
    fig = plot_values(epochs_seen, examples_axis, train_losses, val_losses, "loss", out / "loss-plot")
    plt.close(fig)
    epochs_seen = torch.linspace(0, args.epochs, len(train_accs))
    examples_axis = torch.linspace(0, examples_seen, len(train_accs))
    fig = plot_values(epochs_seen, examples_axis, train_accs, val_accs, "accuracy", out / "accuracy-plot")
    plt.close(fig)
    atomic_write_json({
        "train_accuracy": accuracies["train"],
        "val_accuracy": accuracies["validation"],
        "test_accuracy": accuracies["test"],
        "test_loss": test_loss,
        "train_losses": train_losses,
        "val_losses": val_losses,
        "train_accs": train_accs,
        "val_accs": val_accs,
        "examples_seen": examples_seen,
        "training_minutes": minutes,
        "trainable_parameters": trainable,
        "max_length": max_length,
        "settings": {k: v for k, v in vars(args).items() if k not in ("classify", "model")},
        "device": str(device),
    }, out / "results.json")
    print(f"Saved {out / 'model.pth'}, loss-plot.png/.pdf, accuracy-plot.png/.pdf and results.json in {out}")
    return 0


def classify(args) -> int:
    if args.model is None:
        raise UserError("--classify needs --model PATH, the model.pth that a training run wrote.")
    device = pick_device(args.device)
    try:
        model = load_classifier(args.model, device=device)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise UserError(str(exc)) from None
    max_length = args.max_length or model.cfg.get("max_length")
    try:
        label = classify_review(args.classify, model, get_gpt2_tokenizer(), device, max_length=max_length)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(label)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(classify if args.classify is not None else train, args)


if __name__ == "__main__":
    sys.exit(main())
