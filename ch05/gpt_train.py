"""Pretrain a GPT on a text file (chapter 5), with the book's settings by default.

    python ch05/gpt_train.py                                   # the book: 124M at context 256 on the-verdict
    python ch05/gpt_train.py --data tinyshakespeare --epochs 2
    python ch05/gpt_train.py --emb-dim 64 --n-layers 2 --n-heads 2 --max-steps 20   # a quick tiny run
    python ch05/gpt_train.py --resume runs/ch05/checkpoint.pth  # continue where a run stopped

Outputs go to --output-dir (default runs/ch05, relative to the folder you run it from):
model.pth (weights + config, for gpt_generate.py --checkpoint), checkpoint.pth (the
full training state, for --resume), loss.png / loss.pdf and metrics.json.

A resumed run continues exactly: it sees the same batches and the same dropout masks
as a run that was never stopped, so the losses and weights come out the same. Resume
with the same --data, --seed, --batch-size and model flags as the original run; the
optimizer's settings (learning rate, weight decay) come from the checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # save plots without a display

import torch  # noqa: E402

from buildllm.datasets import DatasetError, list_datasets, load_text  # noqa: E402
from buildllm.device import get_device, set_seed  # noqa: E402
from buildllm.model import GPT2_SIZES, GPTModel, count_parameters, get_gpt2_config  # noqa: E402
from buildllm.tokenizer import get_gpt2_tokenizer  # noqa: E402
from buildllm.training import (  # noqa: E402
    TrainingState,
    atomic_write_json,
    create_pretraining_dataloaders,
    evaluate_model,
    load_checkpoint,
    save_model,
    train_model,
    unwrap_model,
)

# Settings that must not change between a run and its resumption (else it is not the same run).
RESUME_SETTINGS = ("data", "seed", "batch_size", "train_ratio")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Pretrain a GPT-2-style model (chapter 5). Defaults are the book's settings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", default="the-verdict",
                        help=f"a dataset name ({', '.join(list_datasets())}) or the path of a .txt file")
    parser.add_argument("--epochs", type=int, default=10, help="number of epochs")
    parser.add_argument("--lr", type=float, default=4e-4, help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    parser.add_argument("--batch-size", type=int, default=2, help="sequences per batch")
    parser.add_argument("--context-length", type=int, default=256, help="tokens per sequence (GPT-2 allows 1024)")
    parser.add_argument("--model-size", default="gpt2-small", choices=list(GPT2_SIZES),
                        help="GPT-2 architecture to start from")
    parser.add_argument("--emb-dim", type=int, help="override the embedding size (for tiny models)")
    parser.add_argument("--n-layers", type=int, help="override the number of transformer blocks")
    parser.add_argument("--n-heads", type=int, help="override the number of attention heads")
    parser.add_argument("--drop-rate", type=float, default=0.1, help="dropout rate")
    parser.add_argument("--train-ratio", type=float, default=0.9, help="share of the text used for training")
    parser.add_argument("--seed", type=int, default=123, help="random seed (weights, data order, dropout)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--output-dir", default="runs/ch05",
                        help="folder for model.pth, checkpoint.pth, loss.png/.pdf and metrics.json "
                             "(relative paths are relative to the current folder)")
    parser.add_argument("--eval-freq", type=int, default=5, help="evaluate every this many steps")
    parser.add_argument("--eval-iter", type=int, default=5, help="batches per evaluation")
    parser.add_argument("--start-context", default="Every effort moves you", help="prompt of the samples")
    parser.add_argument("--resume", metavar="PATH", help="continue training from this checkpoint.pth")
    parser.add_argument("--tensorboard", metavar="DIR", help="also log losses for TensorBoard into DIR")
    parser.add_argument("--max-steps", type=int,
                        help="stop after this many optimizer steps in total (counting steps before a resume)")
    return parser


def read_training_text(data: str) -> str:
    """Return the text of a dataset name or of a .txt file path."""
    path = Path(data).expanduser()
    if path.suffix == ".txt" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"--data {data}: no such file. Give a .txt file or one of {list_datasets()}.")
        return path.read_text(encoding="utf-8")
    return load_text(data)


def make_tensorboard_writer(log_dir: str):
    """Return a TensorBoard SummaryWriter, or exit with advice if TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        sys.exit("--tensorboard needs the tensorboard package: pip install tensorboard (or leave out --tensorboard).")
    return SummaryWriter(log_dir=log_dir)


def train_and_save(
    model, train_loader, val_loader, optimizer, device, args: argparse.Namespace, tokenizer,
    state: TrainingState | None = None, tb_writer=None, is_main_process: bool = True,
) -> dict:
    """Train (or resume) with `train_model`, then save model.pth, the loss plot and metrics.json; return the metrics.

    Only the main process (rank 0 of a multi-GPU run) prints and writes files.
    """
    out_dir = Path(args.output_dir)
    state = state or TrainingState()
    if is_main_process:
        print(f"Training {count_parameters(model):,} parameters on {device}: {len(train_loader)} batches per "
              f"epoch, {len(val_loader)} validation batches.")
    steps_before, tokens_before = state.global_step, state.tokens_seen
    start = time.perf_counter()
    state = train_model(
        model, train_loader, val_loader, optimizer, device,
        num_epochs=args.epochs, eval_freq=args.eval_freq, eval_iter=args.eval_iter,
        start_context=args.start_context, tokenizer=tokenizer, state=state, max_steps=args.max_steps,
        checkpoint_path=out_dir / "checkpoint.pth",
        checkpoint_extra={key: getattr(args, key) for key in RESUME_SETTINGS},
        tb_writer=tb_writer, is_main_process=is_main_process,
    )
    wall_time = time.perf_counter() - start
    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, args.eval_iter)
    tokens_this_run = state.tokens_seen - tokens_before
    metrics = {
        "final_train_loss": train_loss,
        "final_val_loss": val_loss,
        "global_steps": state.global_step,
        "steps_this_run": state.global_step - steps_before,
        "epochs_completed": state.epoch,
        "tokens_seen": state.tokens_seen,
        "wall_time_s": round(wall_time, 3),
        "tokens_per_s": round(tokens_this_run / wall_time, 1) if wall_time > 0 else None,
        "device": str(device),
        "num_parameters": count_parameters(model),
        "config": unwrap_model(model).cfg,
        "args": vars(args),
        "torch": torch.__version__,
    }
    if not is_main_process:
        return metrics

    save_model(model, out_dir / "model.pth")
    if state.train_losses:
        from buildllm.plotting import plot_losses

        epochs_seen = [(step + 1) / len(train_loader) for step in state.eval_steps]
        plot_losses(epochs_seen, state.track_tokens_seen, state.train_losses, state.val_losses,
                    save_path=out_dir / "loss.png")
    atomic_write_json(metrics, out_dir / "metrics.json")
    print(f"Final train loss {train_loss:.3f}, val loss {val_loss:.3f} after {state.global_step} steps "
          f"({wall_time:.1f} s, {metrics['tokens_per_s']} tokens/s).")
    print(f"Saved model.pth, checkpoint.pth, loss.png/.pdf and metrics.json in {out_dir.resolve()}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "context_length", "eval_freq", "eval_iter"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error(f"--max-steps must be at least 1, got {args.max_steps}.")

    try:
        device = get_device(args.device)
    except (ValueError, RuntimeError) as exc:
        parser.error(str(exc))
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    writer = make_tensorboard_writer(args.tensorboard) if args.tensorboard else None

    set_seed(args.seed)
    tokenizer = get_gpt2_tokenizer()
    try:
        text = read_training_text(args.data)
        overrides = {"context_length": args.context_length, "drop_rate": args.drop_rate}
        for key in ("emb_dim", "n_layers", "n_heads"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        cfg = get_gpt2_config(args.model_size, **overrides)
        train_loader, val_loader = create_pretraining_dataloaders(
            text, tokenizer, args.context_length, args.batch_size, args.train_ratio, seed=args.seed)
        model = GPTModel(cfg).to(device)
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"error: {exc}\n")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    state = TrainingState()
    if args.resume:
        try:
            state, extra = load_checkpoint(args.resume, model, optimizer)
        except (FileNotFoundError, ValueError) as exc:
            parser.exit(2, f"error: {exc}\n")
        changed = [f"--{k.replace('_', '-')} {extra[k]} -> {getattr(args, k)}" for k in RESUME_SETTINGS
                   if k in extra and extra[k] != getattr(args, k)]
        if changed:
            print(f"Warning: resuming with different settings ({', '.join(changed)}); the run will not match "
                  f"an uninterrupted one.", file=sys.stderr)
        print(f"Resuming from {args.resume}: epoch {state.epoch + 1}, step {state.global_step}.")
        if state.epoch >= args.epochs:
            print(f"That run already finished {state.epoch} epochs; pass a larger --epochs to train more.")

    train_and_save(model, train_loader, val_loader, optimizer, device, args, tokenizer, state, writer)
    if writer is not None:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
