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
optimizer's settings (learning rate, weight decay) come from the checkpoint (with
--lr-schedule cosine or --warmup-steps, the rate of each step is recomputed from --lr).

Several GPUs (or CPU processes): the same script runs under torchrun, unchanged::

    torchrun --standalone --nproc_per_node=4 ch05/gpt_train.py --batch-size 2
    torchrun --nproc_per_node=2 ch05/gpt_train.py --device cpu --emb-dim 64 --n-layers 2 --n-heads 2  # CPU, Gloo

Each process trains a copy of the model (DistributedDataParallel; NCCL on GPU
cuda:LOCAL_RANK, Gloo on CPU) on its own share of every batch, and the gradients are
averaged. Batch and learning rate:

- --batch-size is per process. One optimizer step sees the global batch
  batch_size x processes x grad_accum_steps sequences. Every epoch's order is fixed by
  --seed + epoch, and the processes split each global batch between them, so a run
  on N processes with --batch-size b sees the same global batches (and, without
  dropout, gives the same losses) as one process with --batch-size N*b.
- --lr is not scaled for you: the script cannot know whether you meant to keep the
  global batch (then keep --lr) or to grow it. If you make the global batch k times
  larger, a larger rate is usually right: try --lr times sqrt(k) (or times k for
  modest k), with --warmup-steps, and check the loss curve.

Evaluation under torchrun: every process computes the loss on its share of the
same evaluation batches and the processes average it, so the printed losses equal a
single-process run's with the same global batch (exactly so when those batches are
complete). --eval-iter counts batches of --batch-size per process (with
--grad-accum-steps, the micro-batches). Only rank 0 prints, plots and writes files;
model.pth and checkpoint.pth hold the plain model's weights and load in a single
process. Each process draws its own dropout masks (seed + rank). Resuming under
torchrun works and continues exactly (each process gets back its own random state):
use the same number of processes, and on several machines make checkpoint.pth
readable at the --resume path on every machine (a shared folder or a copy).

Faster training, all off by default (the book's behaviour): --dtype bfloat16,
--compile, --fused-adamw, --fast-attention, --pad-vocab, --grad-accum-steps,
--lr-schedule cosine with --warmup-steps/--min-lr, --grad-clip.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # save plots without a display

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from buildllm.datasets import DatasetError, list_datasets, load_text  # noqa: E402
from buildllm.device import get_device, set_seed  # noqa: E402
from buildllm.distributed import (  # noqa: E402
    DistInfo,
    DistributedLaunchError,
    all_reduce_mean,
    cleanup,
    is_torchrun_launch,
    setup_from_env,
)
from buildllm.fast_attention import use_fast_attention  # noqa: E402
from buildllm.model import GPT2_SIZES, GPTModel, count_parameters, get_gpt2_config  # noqa: E402
from buildllm.speed import (  # noqa: E402
    DTYPES,
    LR_SCHEDULES,
    autocast_context,
    check_dtype_supported,
    compile_model,
    make_adamw,
    make_lr_schedule,
    pad_vocab,
)
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

SCRIPT = "ch05/gpt_train.py"
# Settings that must not change between a run and its resumption (else it is not the same run).
RESUME_SETTINGS = ("data", "seed", "batch_size", "train_ratio", "grad_accum_steps", "world_size")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Pretrain a GPT-2-style model (chapter 5). Defaults are the book's settings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Several GPUs: torchrun --standalone --nproc_per_node=N ch05/gpt_train.py [flags]. --batch-size is "
               "per process: one optimizer step sees batch size x N x --grad-accum-steps sequences, and N processes "
               "with --batch-size b see the same global batches as one process with --batch-size N*b (and, without "
               "dropout, give the same losses). --lr is not scaled "
               "for you: if you make the global batch k times larger, try --lr times sqrt(k) with --warmup-steps.",
    )
    parser.add_argument("--data", default="the-verdict",
                        help=f"a dataset name ({', '.join(list_datasets())}) or the path of a .txt file")
    parser.add_argument("--epochs", type=int, default=10, help="number of epochs")
    parser.add_argument("--lr", type=float, default=4e-4,
                        help="AdamW learning rate (the peak rate with a schedule); not scaled with the number of "
                             "processes: scale it yourself if you change the global batch")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    parser.add_argument("--batch-size", type=int, default=2,
                        help="sequences per batch and per process; global batch = batch size x processes "
                             "(torchrun --nproc_per_node) x --grad-accum-steps")
    parser.add_argument("--context-length", type=int, default=256, help="tokens per sequence (GPT-2 allows 1024)")
    parser.add_argument("--model-size", default="gpt2-small", choices=list(GPT2_SIZES),
                        help="GPT-2 architecture to start from")
    parser.add_argument("--emb-dim", type=int, help="override the embedding size (for tiny models)")
    parser.add_argument("--n-layers", type=int, help="override the number of transformer blocks")
    parser.add_argument("--n-heads", type=int, help="override the number of attention heads")
    parser.add_argument("--drop-rate", type=float, default=0.1, help="dropout rate")
    parser.add_argument("--train-ratio", type=float, default=0.9, help="share of the text used for training")
    parser.add_argument("--seed", type=int, default=123, help="random seed (weights, data order, dropout)")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda or mps (under torchrun: auto, cpu or cuda; GPU = cuda:LOCAL_RANK)")
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
    speed = parser.add_argument_group("faster training (all off by default: the book's behaviour)")
    speed.add_argument("--dtype", default="float32", choices=list(DTYPES),
                       help="bfloat16: mixed precision with torch.autocast (weights stay float32); needs a GPU with "
                            "bfloat16 (A100, RTX 30xx and newer) or the CPU")
    speed.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                       help="compile the model with torch.compile (backend inductor, or e.g. aot_eager); "
                            "if it does not work here, train without it after a warning")
    speed.add_argument("--fused-adamw", action="store_true",
                       help="AdamW's fused kernel (CUDA; recent PyTorch also on CPU); the default AdamW with a "
                            "warning where unsupported")
    speed.add_argument("--fast-attention", action="store_true",
                       help="attention with scaled_dot_product_attention (buildllm.fast_attention); same weights")
    speed.add_argument("--pad-vocab", action="store_true",
                       help="pad the vocabulary to a multiple of 64 (50257 -> 50304, faster matrix shapes); the "
                            "padding tokens are masked, never predicted; model.pth records both sizes")
    speed.add_argument("--grad-accum-steps", type=int, default=1,
                       help="batches per optimizer step (gradient accumulation; the loss of each is divided by it)")
    speed.add_argument("--lr-schedule", default="constant", choices=list(LR_SCHEDULES),
                       help="constant, or cosine decay from --lr to --min-lr by the last step")
    speed.add_argument("--warmup-steps", type=int, default=0,
                       help="optimizer steps of linear warmup from 0 to --lr (0 = none)")
    speed.add_argument("--min-lr", type=float, default=0.0, help="learning rate at the end of the cosine decay")
    speed.add_argument("--grad-clip", type=float, metavar="MAX_NORM",
                       help="clip the gradients' total norm to MAX_NORM, e.g. 1.0 (None: no clipping, the book)")
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
    state: TrainingState | None = None, tb_writer=None, is_main_process: bool = True, *,
    run_settings: dict | None = None, amp_dtype: torch.dtype | None = None, lr_schedule=None, world_size: int = 1,
) -> dict:
    """Train (or resume) with `train_model`, then save model.pth, the loss plot and metrics.json; return the metrics.

    Every process of a torchrun job calls it; only the main process (rank 0) prints and writes files.
    """
    out_dir = Path(args.output_dir)
    state = state or TrainingState()
    global_batch = args.batch_size * world_size * args.grad_accum_steps
    if is_main_process:
        print(f"Training {count_parameters(model):,} parameters on {device}"
              f"{f' x {world_size} processes' if world_size > 1 else ''}: "
              f"{len(train_loader) // args.grad_accum_steps} steps per epoch of {global_batch} sequences, "
              f"{len(val_loader)} validation batches{' per process' if world_size > 1 else ''}.")
    steps_before, tokens_before = state.global_step, state.tokens_seen
    start = time.perf_counter()
    state = train_model(
        model, train_loader, val_loader, optimizer, device,
        num_epochs=args.epochs, eval_freq=args.eval_freq, eval_iter=args.eval_iter,
        start_context=args.start_context, tokenizer=tokenizer, state=state, max_steps=args.max_steps,
        checkpoint_path=out_dir / "checkpoint.pth", checkpoint_extra=run_settings,
        tb_writer=tb_writer, is_main_process=is_main_process,
        grad_accum_steps=args.grad_accum_steps, lr_schedule=lr_schedule, grad_clip=args.grad_clip,
        amp_dtype=amp_dtype,
    )
    wall_time = time.perf_counter() - start
    with autocast_context(device, amp_dtype):
        train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, args.eval_iter)
    train_loss, val_loss = all_reduce_mean(train_loss), all_reduce_mean(val_loss)  # every process takes part
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
        "world_size": world_size,
        "global_batch_size": global_batch,
        "num_parameters": count_parameters(model),
        "config": unwrap_model(model).cfg,
        "args": vars(args),
        "torch": torch.__version__,
        "step_losses": state.step_losses,  # the training loss of every optimizer step (global batch)
    }
    if not is_main_process:
        return metrics

    save_model(model, out_dir / "model.pth")
    if state.train_losses:
        from buildllm.plotting import plot_losses

        steps_per_epoch = len(train_loader) // args.grad_accum_steps
        epochs_seen = [(step + 1) / steps_per_epoch for step in state.eval_steps]
        plot_losses(epochs_seen, state.track_tokens_seen, state.train_losses, state.val_losses,
                    save_path=out_dir / "loss.png")
    atomic_write_json(metrics, out_dir / "metrics.json")
    print(f"Final train loss {train_loss:.3f}, val loss {val_loss:.3f} after {state.global_step} steps "
          f"({wall_time:.1f} s, {metrics['tokens_per_s']} tokens/s).")
    print(f"Saved model.pth, checkpoint.pth, loss.png/.pdf and metrics.json in {out_dir.resolve()}")
    return metrics


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error naming the flag for settings that cannot work."""
    for name in ("epochs", "batch_size", "context_length", "eval_freq", "eval_iter", "grad_accum_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error(f"--max-steps must be at least 1, got {args.max_steps}.")
    if args.warmup_steps < 0:
        parser.error(f"--warmup-steps must be >= 0 (0 = no warmup), got {args.warmup_steps}.")
    if not 0.0 <= args.min_lr <= args.lr:
        parser.error(f"--min-lr must be between 0 and --lr ({args.lr}), got {args.min_lr}.")
    if args.grad_clip is not None and not args.grad_clip > 0:
        parser.error(f"--grad-clip must be > 0 (leave it out for no clipping), got {args.grad_clip}.")


def check_resume_settings(extra: dict, run_settings: dict) -> None:
    """Warn (on stderr) about settings that differ from the run being resumed."""
    changed = [f"--{k.replace('_', '-')} {extra[k]} -> {run_settings[k]}" for k in RESUME_SETTINGS
               if k in extra and extra[k] != run_settings[k]]
    if changed:
        print(f"Warning: resuming with different settings ({', '.join(changed)}); the run will not match "
              f"an uninterrupted one.".replace("--world-size", "processes (world size)"), file=sys.stderr)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, dist_info: DistInfo | None) -> int:
    """Everything after argument parsing and process-group setup: data, model, options, training, saving."""
    main_process = dist_info is None or dist_info.rank == 0
    world_size = 1 if dist_info is None else dist_info.world_size
    rank = 0 if dist_info is None else dist_info.rank
    try:
        device = dist_info.device if dist_info is not None else get_device(args.device)
        amp_dtype = check_dtype_supported(device, args.dtype)
    except (ValueError, RuntimeError) as exc:
        parser.error(str(exc))
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    writer = make_tensorboard_writer(args.tensorboard) if args.tensorboard and main_process else None

    set_seed(args.seed)  # the same weights in every process
    tokenizer = get_gpt2_tokenizer()
    try:
        text = read_training_text(args.data)
        overrides = {"context_length": args.context_length, "drop_rate": args.drop_rate}
        for key in ("emb_dim", "n_layers", "n_heads"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        cfg = get_gpt2_config(args.model_size, **overrides)
        train_loader, val_loader = create_pretraining_dataloaders(
            text, tokenizer, args.context_length, args.batch_size, args.train_ratio, seed=args.seed,
            num_replicas=world_size, rank=rank)
        model = GPTModel(cfg)
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"error: {exc}\n")
    if args.pad_vocab:
        pad_vocab(model)  # 50257 -> 50304 tokens, same weights; model.cfg keeps "unpadded_vocab_size"
    if args.fast_attention:
        use_fast_attention(model)
    model.to(device)
    if world_size > 1:
        set_seed(args.seed + rank)  # different dropout masks in each process
    optimizer = make_adamw(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, fused=args.fused_adamw)

    run_settings = {**{k: getattr(args, k) for k in RESUME_SETTINGS if k != "world_size"}, "world_size": world_size}
    state = TrainingState()
    if args.resume:
        try:
            state, extra = load_checkpoint(args.resume, model, optimizer, rank=rank)
        except (FileNotFoundError, ValueError) as exc:
            parser.exit(2, f"error: {exc}\n")
        if main_process:
            check_resume_settings(extra, run_settings)
            print(f"Resuming from {args.resume}: epoch {state.epoch + 1}, step {state.global_step}.")
            if state.epoch >= args.epochs:
                print(f"That run already finished {state.epoch} epochs; pass a larger --epochs to train more.")

    steps_per_epoch = len(train_loader) // args.grad_accum_steps
    if steps_per_epoch == 0:
        parser.exit(2, f"error: --grad-accum-steps {args.grad_accum_steps} is more than the {len(train_loader)} "
                       f"batches per epoch{' of each process' if world_size > 1 else ''}: use fewer accumulation "
                       f"steps or a smaller --batch-size.\n")
    total_steps = args.max_steps or args.epochs * steps_per_epoch
    lr_schedule = make_lr_schedule(args.lr, total_steps, args.warmup_steps, args.min_lr, args.lr_schedule)
    if args.compile:
        example = torch.zeros(args.batch_size, args.context_length, dtype=torch.long, device=device)
        model = compile_model(model, example, backend=args.compile, amp_dtype=amp_dtype)
    if world_size > 1:
        # broadcast_buffers=False: the only buffers are the constant causal masks, nothing to keep in sync.
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        broadcast_buffers=False)

    train_and_save(model, train_loader, val_loader, optimizer, device, args, tokenizer, state, writer,
                   is_main_process=main_process, run_settings=run_settings, amp_dtype=amp_dtype,
                   lr_schedule=lr_schedule, world_size=world_size)
    if writer is not None:
        writer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    if not is_torchrun_launch():
        return run(parser, args, None)

    try:  # started by torchrun: join the process group (Gloo on CPU, NCCL on GPUs)
        dist_info = setup_from_env(device=args.device, script=SCRIPT)
    except (DistributedLaunchError, ValueError, RuntimeError) as exc:
        parser.exit(2, f"error: {exc}\n")
    finished = False
    try:
        status = run(parser, args, dist_info)
        finished = True
        return status
    finally:
        if finished:
            cleanup()  # wait for every process, then leave the group
        else:  # after an error no barrier: the other processes may never reach it; torchrun stops them
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
