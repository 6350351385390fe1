"""Fine-tune a pretrained model as a spam classifier (chapter 6).

The book's settings: GPT-2 small weights, last block + final norm + new head trainable, 5 epochs::

    python ch06/gpt_class_finetune.py
    python ch06/gpt_class_finetune.py --weights smollm2-135m-instruct   # offline: SmolLM2 stands in for GPT-2
    python ch06/gpt_class_finetune.py --weights runs/ch05/model.pth     # your chapter 5 model
    python ch06/gpt_class_finetune.py --weights random --emb-dim 64 --n-layers 2 --n-heads 2   # from scratch
    python ch06/gpt_class_finetune.py --lora-rank 16                    # appendix E: LoRA instead

Writes into --output-dir (default runs/ch06): model.pth (the classifier; classify a
message with ch06/classify.py --weights runs/ch06/model.pth "text"), loss-plot.png/.pdf,
accuracy-plot.png/.pdf and results.json (final accuracies on the whole train,
validation and test sets, and the curves).
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
from buildllm.classification import (TRAINABLE_CHOICES, add_classification_head, calc_accuracy_loader,  # noqa: E402
                                     class_loss_fn, create_spam_dataloaders, prepare_spam_splits,
                                     set_trainable_layers, train_classifier_simple)
from buildllm.cli import (UserError, add_device_argument, add_finetune_arguments, add_weights_arguments,  # noqa: E402
                          dropout_rate, load_weights, make_parser, pick_device, positive_int, run_main, seed)
from buildllm.datasets import DatasetError  # noqa: E402
from buildllm.device import set_seed  # noqa: E402
from buildllm.files import atomic_write_json, check_writable  # noqa: E402
from buildllm.lora import freeze_and_add_lora, merge_lora  # noqa: E402
from buildllm.model import count_parameters  # noqa: E402
from buildllm.plotting import plot_values  # noqa: E402
from buildllm.training import calc_loss_loader  # noqa: E402


def build_parser():
    parser = make_parser("Fine-tune a pretrained model to classify SMS messages as spam / not spam (chapter 6).")
    add_weights_arguments(parser, default="gpt2-small")
    parser.add_argument("--trainable", default="last-block", choices=TRAINABLE_CHOICES,
                        help="which layers to fine-tune (ignored with --lora-rank)")
    add_finetune_arguments(parser, instead="unfreezing layers", exercise="appendix E", epochs=5,
                           batch="messages", eval_freq=50)
    parser.add_argument("--max-length", type=positive_int, default=None,
                        help="pad/cut every message to this many tokens (default: the longest training message)")
    parser.add_argument("--drop-rate", type=dropout_rate, default=0.0, help="dropout during fine-tuning, as in the book")
    parser.add_argument("--seed", type=seed, default=123, help="seed for the data split, the new head and shuffling")
    add_device_argument(parser)
    parser.add_argument("--output-dir", default="runs/ch06", help="where model.pth, plots and results.json go")
    parser.add_argument("--data-dir", default=None,
                        help="folder that already holds the SMS data (default: $BUILDLLM_DATA_DIR, else download)")
    parser.add_argument("--max-examples", type=positive_int, default=None,
                        help="use only N of the 1494 balanced messages (seeded sample, before the 70/10/20 split)")
    return parser


def prepare_data(args, tokenizer):
    """Return (train, val, test) loaders of the balanced, split SMS data."""
    if args.max_examples is not None and args.max_examples < 10:
        raise UserError(f"--max-examples must be at least 10 (70/10/20 split), got {args.max_examples}.")
    try:
        train_df, val_df, test_df = prepare_spam_splits(args.data_dir, seed=args.seed, max_examples=args.max_examples)
        return create_spam_dataloaders(train_df, val_df, test_df, tokenizer, batch_size=args.batch_size,
                                       max_length=args.max_length, seed=args.seed)
    except (DatasetError, ValueError) as exc:
        raise UserError(str(exc)) from None


def save_plots(out: Path, args, train_losses, val_losses, train_accs, val_accs, examples_seen) -> None:
    for values, kind in (((train_losses, val_losses), "loss"), ((train_accs, val_accs), "accuracy")):
        epochs_seen = torch.linspace(0, args.epochs, len(values[0]))
        examples_axis = torch.linspace(0, examples_seen, len(values[0]))
        fig = plot_values(epochs_seen, examples_axis, *values, kind, out / f"{kind}-plot")
        plt.close(fig)


def run(args) -> int:
    device = pick_device(args.device)
    out = Path(args.output_dir)
    try:
        check_writable(out / "model.pth")
    except PermissionError as exc:
        raise UserError(f"--output-dir: {exc}") from None
    set_seed(args.seed)
    base = load_weights(args, device, drop_rate=args.drop_rate)
    model, tokenizer = base.model, base.tokenizer
    train_loader, val_loader, test_loader = prepare_data(args, tokenizer)
    max_length = train_loader.dataset.max_length
    print(f"Data: {len(train_loader.dataset)} train / {len(val_loader.dataset)} validation / "
          f"{len(test_loader.dataset)} test messages, padded to {max_length} tokens")
    context_length = model.cfg["context_length"]
    if max_length > context_length:
        raise UserError(f"Messages are padded to {max_length} tokens but the model's context length is "
                        f"{context_length}. Pass --max-length {context_length} (or less).")

    set_seed(args.seed)
    add_classification_head(model, num_classes=2)
    if args.lora_rank is not None:
        trainable = freeze_and_add_lora(model, rank=args.lora_rank, alpha=args.lora_alpha)
        how = f"LoRA rank {args.lora_rank}, alpha {args.lora_alpha:g}"
    else:
        trainable = set_trainable_layers(model, args.trainable)
        how = f"trainable: {args.trainable}"
    model.to(device)
    print(f"Model: {base.description}, {count_parameters(model):,} parameters, {trainable:,} trainable ({how}), "
          f"device {device}")

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=args.lr, weight_decay=args.weight_decay)
    set_seed(args.seed)
    start = time.perf_counter()
    train_losses, val_losses, train_accs, val_accs, examples_seen = train_classifier_simple(
        model, train_loader, val_loader, optimizer, device, num_epochs=args.epochs,
        eval_freq=args.eval_freq, eval_iter=args.eval_iter, progress=True)
    minutes = (time.perf_counter() - start) / 60
    print(f"Training took {minutes:.2f} minutes.")
    if args.lora_rank is not None:
        merge_lora(model)  # a plain classifier again: loads with load_classifier, no LoRA code needed

    loaders = {"train": train_loader, "validation": val_loader, "test": test_loader}
    accuracies = {name: calc_accuracy_loader(loader, model, device) for name, loader in loaders.items()}
    with torch.no_grad():
        test_loss = calc_loss_loader(test_loader, model, device, loss_fn=class_loss_fn())
    print("Accuracy on the whole sets: " + ", ".join(f"{name} {acc:.2%}" for name, acc in accuracies.items()))

    save_model(model, out / "model.pth", meta={"task": "spam classifier", "tokenizer": base.tokenizer_name,
                                               "max_length": max_length, "class_names": ["not spam", "spam"],
                                               "base": base.name})
    save_plots(out, args, train_losses, val_losses, train_accs, val_accs, examples_seen)
    atomic_write_json({
        "train_accuracy": accuracies["train"],
        "val_accuracy": accuracies["validation"],
        "test_accuracy": accuracies["test"],
        "test_loss": test_loss,
        "train_losses": train_losses,
        "val_losses": val_losses,
        "train_accs_estimated": train_accs,  # per epoch, on --eval-iter batches
        "val_accs_estimated": val_accs,
        "examples_seen": examples_seen,
        "training_minutes": minutes,
        "trainable_parameters": trainable,
        "max_length": max_length,
        "base_model": base.description,
        "settings": vars(args),
        "device": str(device),
    }, out / "results.json")
    print(f"Saved model.pth, loss-plot.png/.pdf, accuracy-plot.png/.pdf and results.json in {out}")
    print(f"Classify a message: python ch06/classify.py --weights {out / 'model.pth'} \"You won a prize!\"")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
