"""Pretrain a GPT on a text file (chapter 5), with the book's settings by default.

    python ch05/gpt_train.py                                   # the book: 124M at context 256 on the-verdict
    python ch05/gpt_train.py --data tinyshakespeare --epochs 2
    python ch05/gpt_train.py --emb-dim 64 --n-layers 2 --n-heads 2 --max-steps 20   # a quick tiny run
    python ch05/gpt_train.py --resume runs/ch05/checkpoint.pth  # continue where a run stopped
    python ch05/gpt_train.py --config ch05/configs/tinyshakespeare-cpu.yaml   # settings from a YAML preset

Settings from a file: --config FILE.yaml sets any option by its name with _ for -
(``batch_size: 8``, ``fast: true``); options on the command line override the file
(``--config FILE.yaml --epochs 1``; --no-fast, --no-compile ... undo a flag the file
sets). Unknown keys and bad values are refused, naming the key and the file. Presets
in ch05/configs/: the-verdict-book.yaml (the book's run, the same as no options),
tinyshakespeare-cpu.yaml (a small model, minutes on a CPU), gpt2-124m-gpu.yaml
(GPT-2 124M with every speed option). Every run saves the settings it used, after
overrides, in --output-dir/run_config.yaml (a config file itself); --resume warns
when the settings differ from the saved ones.

Experiment tracking, both optional: --tensorboard DIR, and --wandb (Weights & Biases:
--wandb-project, --wandb-run-name, --wandb-mode offline for no network and no login;
the run lands in --output-dir/wandb/). Both get the same metrics: loss/train_step and
lr every step, loss/train and loss/val at each evaluation.

What the default run costs (measured on a 2-core CPU, see README): about 10 minutes,
and 2.6 GB in --output-dir: model.pth (653 MB: config + weights, for gpt_generate.py
--weights and for chapters 6-7) and checkpoint.pth (1.95 GB: weights + AdamW's two
moment tensors + random states, for --resume). --no-checkpoint skips checkpoint.pth.
Also written: loss.png / loss.pdf, metrics.json and run_config.yaml.

An existing run in --output-dir is never overwritten silently: continue it with
--resume, or replace it with --overwrite. Checkpoints are written at every epoch's
end and every --checkpoint-every steps, atomically (a kill never leaves a broken
checkpoint.pth; the previous one stays valid).

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
averaged. --batch-size is per process: one optimizer step sees the global batch
batch_size x processes x grad_accum_steps sequences, and N processes with
--batch-size b see the same global batches as one process with --batch-size N*b.
--lr is not scaled for you: if you make the global batch k times larger, a larger
rate is usually right (try --lr times sqrt(k), with --warmup-steps). Only rank 0
prints, plots and writes files; resuming under torchrun needs the same number of
processes.

Faster training, all off by default (the book's behaviour): --fast (fused kernels:
scaled_dot_product_attention, F.layer_norm, F.gelu), --dtype bfloat16, --compile,
--fused-adamw, --pad-vocab, --tie-weights, --grad-accum-steps, --lr-schedule cosine
with --warmup-steps/--min-lr, --grad-clip.
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

from buildllm.checkpoints import ModelFileError, load_checkpoint, save_model, unwrap_model  # noqa: E402
from buildllm.cli import (UserError, add_device_argument, dropout_rate, make_parser, nonnegative_float,  # noqa: E402
                          nonnegative_int, open_fraction, pick_device, positive_float, positive_int, read_text_file,
                          run_main, seed)
from buildllm.config import ConfigError  # noqa: E402
from buildllm.datasets import DatasetError, list_datasets, load_text  # noqa: E402
from buildllm.device import set_seed  # noqa: E402
from buildllm.distributed import (DistInfo, DistributedLaunchError, all_reduce_mean, cleanup,  # noqa: E402
                                  is_torchrun_launch, setup_from_env, wrap_ddp)
from buildllm.files import atomic_write_json, check_writable, remove_stale_temp_files  # noqa: E402
from buildllm.model import GPT2_SIZES, GPTModel, count_parameters, get_gpt2_config  # noqa: E402
from buildllm.run_config import (add_config_argument, config_differences, effective_config,  # noqa: E402
                                 parse_args_with_config, read_saved_config, save_run_config)
from buildllm.speed import (DTYPES, LR_SCHEDULES, autocast_context, check_dtype_supported,  # noqa: E402
                            compile_model, make_adamw, make_lr_schedule, pad_vocab_size)
from buildllm.tokenizer import get_gpt2_tokenizer  # noqa: E402
from buildllm.tracking import WANDB_MODES, log_to_all, start_wandb  # noqa: E402
from buildllm.trainer import TrainingState, TrainRun, create_pretraining_dataloaders, train_model  # noqa: E402
from buildllm.training import evaluate_model  # noqa: E402

SCRIPT = "ch05/gpt_train.py"
RUN_FILES = ("model.pth", "checkpoint.pth", "metrics.json", "run_config.yaml")
RUN_CONFIG = "run_config.yaml"  # the settings a run used (config file + command line), saved with it
# Settings that must not change between a run and its resumption (else it is not the same run).
RESUME_SETTINGS = ("data", "seed", "batch_size", "train_ratio", "grad_accum_steps", "world_size")
# Settings a resumed run may change without a warning: how long to train, where, and how to watch it.
RESUME_MAY_CHANGE = ("epochs", "max_steps", "device", "output_dir", "checkpoint_every", "no_checkpoint",
                     "tensorboard", "wandb", "wandb_project", "wandb_run_name", "wandb_mode")


def build_parser():
    parser = make_parser(
        "Pretrain a GPT-2-style model (chapter 5). Defaults are the book's settings.",
        epilog="Several GPUs: torchrun --standalone --nproc_per_node=N ch05/gpt_train.py [flags]. --batch-size is "
               "per process; --lr is not scaled for you (see the module docstring). Presets for --config: "
               "ch05/configs/*.yaml.",
    )
    add_config_argument(parser)
    parser.add_argument("--data", default="the-verdict",
                        help=f"a dataset name ({', '.join(list_datasets())}) or the path of a .txt file")
    parser.add_argument("--epochs", type=positive_int, default=10, help="number of epochs")
    parser.add_argument("--lr", type=positive_float, default=4e-4,
                        help="AdamW learning rate (the peak rate with a schedule); not scaled with the number of "
                             "processes")
    parser.add_argument("--weight-decay", type=nonnegative_float, default=0.1, help="AdamW weight decay")
    parser.add_argument("--batch-size", type=positive_int, default=2,
                        help="sequences per batch and per process; global batch = batch size x processes x "
                             "--grad-accum-steps")
    parser.add_argument("--context-length", type=positive_int, default=256,
                        help="tokens per sequence (GPT-2 allows 1024)")
    parser.add_argument("--model-size", default="gpt2-small", choices=list(GPT2_SIZES),
                        help="GPT-2 architecture to start from")
    parser.add_argument("--emb-dim", type=positive_int, help="override the embedding size (for tiny models)")
    parser.add_argument("--n-layers", type=positive_int, help="override the number of transformer blocks")
    parser.add_argument("--n-heads", type=positive_int, help="override the number of attention heads")
    parser.add_argument("--drop-rate", type=dropout_rate, default=0.1, help="dropout rate")
    parser.add_argument("--train-ratio", type=open_fraction, default=0.9, help="share of the text used for training")
    parser.add_argument("--seed", type=seed, default=123, help="random seed (weights, data order, dropout)")
    add_device_argument(parser)
    parser.add_argument("--output-dir", default="runs/ch05",
                        help="folder for model.pth, checkpoint.pth, loss.png/.pdf and metrics.json "
                             "(relative to the current folder)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run in --output-dir (without it, an existing run is refused)")
    parser.add_argument("--eval-freq", type=positive_int, default=5, help="evaluate every this many steps")
    parser.add_argument("--eval-iter", type=positive_int, default=5, help="batches per evaluation")
    parser.add_argument("--start-context", default="Every effort moves you", help="prompt of the samples")
    parser.add_argument("--resume", metavar="PATH", help="continue training from this checkpoint.pth")
    parser.add_argument("--checkpoint-every", type=positive_int, default=200, metavar="STEPS",
                        help="also write checkpoint.pth every this many optimizer steps (it is always written at "
                             "each epoch's end)")
    parser.add_argument("--no-checkpoint", action="store_true",
                        help="never write checkpoint.pth (saves about 3x the model's size on disk; the run cannot "
                             "be resumed)")
    parser.add_argument("--tensorboard", metavar="DIR", help="also log losses for TensorBoard into DIR")
    parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=False,
                        help="also log the same metrics and the run's settings to Weights & Biases (pip install "
                             "wandb); the run's files go to --output-dir/wandb/")
    parser.add_argument("--wandb-project", default="buildllm-ch05", help="Weights & Biases project")
    parser.add_argument("--wandb-run-name", metavar="NAME", help="name of the run (default: one wandb makes up)")
    parser.add_argument("--wandb-mode", choices=WANDB_MODES,
                        help="offline: no network and no login, upload later with `wandb sync` (default: "
                             "$WANDB_MODE, else online)")
    parser.add_argument("--max-steps", type=positive_int,
                        help="stop after this many optimizer steps in total (counting steps before a resume)")
    speed = parser.add_argument_group("faster training (all off by default: the book's behaviour)")
    speed.add_argument("--fast", action=argparse.BooleanOptionalAction, default=False,
                       help="fused kernels (scaled_dot_product_attention with one QKV product, F.layer_norm, "
                            "F.gelu): same parameters, same results within float error")
    speed.add_argument("--dtype", default="float32", choices=list(DTYPES),
                       help="bfloat16: mixed precision with torch.autocast (weights stay float32); needs a GPU with "
                            "bfloat16 (A100, RTX 30xx and newer) or the CPU")
    speed.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                       help="compile the model with torch.compile (backend inductor, or e.g. aot_eager); "
                            "if it does not work here, train without it after a warning")
    speed.add_argument("--no-compile", dest="compile", action="store_const", const=None,
                       help="do not compile (undoes compile: in a --config file)")
    speed.add_argument("--fused-adamw", action=argparse.BooleanOptionalAction, default=False,
                       help="AdamW's fused kernel (CUDA; recent PyTorch also on CPU); the default AdamW with a "
                            "warning where unsupported")
    speed.add_argument("--pad-vocab", action=argparse.BooleanOptionalAction, default=False,
                       help="pad the vocabulary to a multiple of 64 (50257 -> 50304, faster matrix shapes); the "
                            "padding tokens are never predicted; model.pth records both sizes")
    speed.add_argument("--tie-weights", action=argparse.BooleanOptionalAction, default=False,
                       help="the output layer shares the token embedding matrix (GPT-2 as published: 38.6M fewer "
                            "parameters for gpt2-small)")
    speed.add_argument("--grad-accum-steps", type=positive_int, default=1,
                       help="batches per optimizer step (gradient accumulation; the loss of each is divided by it)")
    speed.add_argument("--lr-schedule", default="constant", choices=list(LR_SCHEDULES),
                       help="constant, or cosine decay from --lr to --min-lr by the last step")
    speed.add_argument("--warmup-steps", type=nonnegative_int, default=0,
                       help="optimizer steps of linear warmup from 0 to --lr (0 = none)")
    speed.add_argument("--min-lr", type=nonnegative_float, default=0.0,
                       help="learning rate at the end of the cosine decay")
    speed.add_argument("--grad-clip", type=positive_float, metavar="MAX_NORM",
                       help="clip the gradients' total norm to MAX_NORM, e.g. 1.0 (default: no clipping, the book)")
    return parser


def check_args(args) -> None:
    """Refuse combinations of settings that cannot work, naming the flag."""
    if args.min_lr > args.lr:
        raise UserError(f"--min-lr must be between 0 and --lr ({args.lr}), got {args.min_lr}.")
    if args.resume and args.no_checkpoint:
        print("Note: --no-checkpoint with --resume: the resumed run will not write new checkpoints.", file=sys.stderr)
    out = Path(args.output_dir)
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not args.resume and not args.overwrite:
        raise UserError(
            f"{out} already holds a run ({', '.join(existing)}). Continue it with --resume "
            f"{out / 'checkpoint.pth'}, replace it with --overwrite, or choose another --output-dir."
        )
    try:
        for name in RUN_FILES:
            check_writable(out / name)
    except PermissionError as exc:
        raise UserError(f"--output-dir: {exc}") from None
    if args.tensorboard:
        try:
            check_writable(Path(args.tensorboard) / "events")
        except PermissionError as exc:
            raise UserError(f"--tensorboard: {exc}") from None


def read_training_text(data: str) -> str:
    """Return the text of a dataset name or of a .txt file path."""
    path = Path(data).expanduser()
    if path.suffix == ".txt" or path.exists():
        if not path.exists():
            raise UserError(f"--data {data}: no such file. Give a .txt file or one of {list_datasets()}.")
        return read_text_file(path, "--data")
    try:
        return load_text(data)
    except DatasetError as exc:
        raise UserError(str(exc)) from None


def make_tensorboard_logger(log_dir: str):
    """Return a TensorBoard writer's add_scalar, or raise UserError with advice if TensorBoard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard "
                        "(or leave out --tensorboard).") from None
    return SummaryWriter(log_dir=log_dir)


def build_model(args):
    """The model the flags describe (random weights drawn from --seed)."""
    overrides = {"context_length": args.context_length, "drop_rate": args.drop_rate, "fast": args.fast,
                 "tie_weights": args.tie_weights}
    for key in ("emb_dim", "n_layers", "n_heads"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    try:
        cfg = get_gpt2_config(args.model_size, **overrides)
        if args.pad_vocab:
            cfg["padded_vocab_size"] = pad_vocab_size(cfg["vocab_size"])  # 50257 -> 50304
        return GPTModel(cfg)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def save_results(model, state: TrainingState, run: TrainRun, args, train_loader, wall_time: float,
                 steps_before: int, tokens_before: int, final_losses: tuple[float, float]) -> dict:
    """Write model.pth, the loss plot and metrics.json (main process only); return the metrics."""
    out_dir = Path(args.output_dir)
    train_loss, val_loss = final_losses
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
        "device": str(run.device),
        "world_size": run.world_size,
        "global_batch_size": args.batch_size * run.world_size * args.grad_accum_steps,
        "num_parameters": count_parameters(model),
        "config": unwrap_model(model).cfg.to_dict(),
        "args": vars(args),
        "torch": torch.__version__,
        "step_losses": state.step_losses,  # the training loss of every optimizer step (global batch)
    }
    save_model(model, out_dir / "model.pth", meta={"task": "pretrained language model", "tokenizer": "gpt2",
                                                   "data": args.data})
    if state.train_losses:
        from buildllm.plotting import plot_losses

        steps_per_epoch = len(train_loader) // args.grad_accum_steps
        epochs_seen = [(step + 1) / steps_per_epoch for step in state.eval_steps]
        plot_losses(epochs_seen, state.track_tokens_seen, state.train_losses, state.val_losses,
                    save_path=out_dir / "loss.png")
    atomic_write_json(metrics, out_dir / "metrics.json")
    print(f"Final train loss {train_loss:.3f}, val loss {val_loss:.3f} after {state.global_step} steps "
          f"({wall_time:.1f} s, {metrics['tokens_per_s']} tokens/s).")
    written = "model.pth, " + ("" if run.checkpoint_path is None else "checkpoint.pth, ")
    print(f"Saved {written}loss.png/.pdf and metrics.json in {out_dir.resolve()}")
    return metrics


def check_resume_settings(extra: dict, run_settings: dict) -> None:
    """Warn (on stderr) about settings that differ from the run being resumed."""
    changed = [f"--{k.replace('_', '-')} {extra[k]} -> {run_settings[k]}" for k in RESUME_SETTINGS
               if k in extra and extra[k] != run_settings[k]]
    if changed:
        print(f"Warning: resuming with different settings ({', '.join(changed)}); the run will not match "
              f"an uninterrupted one.".replace("--world-size", "processes (world size)"), file=sys.stderr)


def check_resume_config(args) -> None:
    """Warn (on stderr) about settings that differ from those saved with the run being resumed (its run_config.yaml)."""
    saved_path = Path(args.resume).parent / RUN_CONFIG
    saved = read_saved_config(saved_path)
    if saved is None:  # a checkpoint copied without its folder, or from before run_config.yaml existed
        return
    changed = config_differences(saved, effective_config(args, build_parser()),
                                 ignore=RESUME_SETTINGS + RESUME_MAY_CHANGE)  # RESUME_SETTINGS: checked above
    if changed:
        print(f"Warning: resuming with settings that differ from {saved_path} ({'; '.join(changed)}); the run will "
              f"not match an uninterrupted one.", file=sys.stderr)


def train(args, dist_info: DistInfo | None) -> int:
    """Everything after argument parsing and process-group setup: data, model, options, training, saving."""
    main_process = dist_info is None or dist_info.rank == 0
    world_size = 1 if dist_info is None else dist_info.world_size
    rank = 0 if dist_info is None else dist_info.rank
    device = dist_info.device if dist_info is not None else pick_device(args.device)
    try:
        amp_dtype = check_dtype_supported(device, args.dtype)
    except ValueError as exc:
        raise UserError(f"--dtype {args.dtype}: {exc}") from None
    out_dir = Path(args.output_dir)
    if main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            remove_stale_temp_files(out_dir, name)  # left by a run killed while writing
    writer = make_tensorboard_logger(args.tensorboard) if args.tensorboard and main_process else None

    set_seed(args.seed)  # the same weights in every process
    tokenizer = get_gpt2_tokenizer()
    text = read_training_text(args.data)
    model = build_model(args)
    try:
        train_loader, val_loader = create_pretraining_dataloaders(
            text, tokenizer, args.context_length, args.batch_size, args.train_ratio, seed=args.seed,
            num_replicas=world_size, rank=rank)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    model.to(device)
    if world_size > 1:
        set_seed(args.seed + rank)  # different dropout masks in each process
    optimizer = make_adamw(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, fused=args.fused_adamw)

    run_settings = {**{k: getattr(args, k) for k in RESUME_SETTINGS if k != "world_size"}, "world_size": world_size}
    state = TrainingState()
    if args.resume:
        try:
            state, extra = load_checkpoint(args.resume, model, optimizer, rank=rank)
        except ModelFileError as exc:
            raise UserError(f"--resume: {exc}") from None
        if main_process:
            check_resume_settings(extra, run_settings)
            check_resume_config(args)
            print(f"Resuming from {args.resume}: epoch {state.epoch + 1}, step {state.global_step}.")
            if state.epoch >= args.epochs:
                print(f"That run already finished {state.epoch} epochs; pass a larger --epochs to train more.")

    steps_per_epoch = len(train_loader) // args.grad_accum_steps
    if steps_per_epoch == 0:
        raise UserError(f"--grad-accum-steps {args.grad_accum_steps} is more than the {len(train_loader)} batches "
                        f"per epoch{' of each process' if world_size > 1 else ''}: use fewer accumulation steps or "
                        f"a smaller --batch-size.")
    total_steps = args.max_steps or args.epochs * steps_per_epoch
    lr_schedule = make_lr_schedule(args.lr, total_steps, args.warmup_steps, args.min_lr, args.lr_schedule)
    if args.compile:
        example = torch.zeros(args.batch_size, args.context_length, dtype=torch.long, device=device)
        model = compile_model(model, example, backend=args.compile, amp_dtype=amp_dtype)
    if world_size > 1:
        model = wrap_ddp(model, device)
    wandb_run = None
    if main_process:
        config_path = save_run_config(args, build_parser(), out_dir / RUN_CONFIG, SCRIPT)
        print(f"Settings of this run saved in {config_path} (reuse them with --config).")
        if args.wandb:
            wandb_run = start_wandb(args.wandb_project, args.wandb_run_name, args.wandb_mode, out_dir,
                                    config={**effective_config(args, build_parser()), "world_size": world_size,
                                            "model": unwrap_model(model).cfg.to_dict()})

    run = TrainRun(
        device=device, num_epochs=args.epochs, eval_freq=args.eval_freq, eval_iter=args.eval_iter,
        max_steps=args.max_steps, start_context=args.start_context, tokenizer=tokenizer,
        checkpoint_path=None if args.no_checkpoint else out_dir / "checkpoint.pth",
        checkpoint_every=args.checkpoint_every, checkpoint_extra=run_settings,
        log_scalar=log_to_all(writer and writer.add_scalar, wandb_run and wandb_run.log_scalar),
        is_main_process=main_process,
        world_size=world_size, grad_accum_steps=args.grad_accum_steps, lr_schedule=lr_schedule,
        grad_clip=args.grad_clip, amp_dtype=amp_dtype,
    )
    if main_process:
        global_batch = args.batch_size * world_size * args.grad_accum_steps
        print(f"Training {count_parameters(model):,} parameters on {device}"
              f"{f' x {world_size} processes' if world_size > 1 else ''}: {steps_per_epoch} steps per epoch of "
              f"{global_batch} sequences, {len(val_loader)} validation batches"
              f"{' per process' if world_size > 1 else ''}.")
    steps_before, tokens_before = state.global_step, state.tokens_seen
    start = time.perf_counter()
    state = train_model(model, train_loader, val_loader, optimizer, run, state)
    wall_time = time.perf_counter() - start
    with autocast_context(device, amp_dtype):
        train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, args.eval_iter)
    final_losses = (all_reduce_mean(train_loss), all_reduce_mean(val_loss))  # every process takes part
    if main_process:
        metrics = save_results(model, state, run, args, train_loader, wall_time, steps_before, tokens_before,
                               final_losses)
        if wandb_run is not None:
            wandb_run.finish(summary={key: metrics[key] for key in (
                "final_train_loss", "final_val_loss", "global_steps", "tokens_seen", "wall_time_s", "tokens_per_s",
                "num_parameters")})
    if writer is not None:
        writer.close()
    return 0


def run(args) -> int:
    check_args(args)
    if not is_torchrun_launch():
        return train(args, None)
    try:  # started by torchrun: join the process group (Gloo on CPU, NCCL on GPUs)
        dist_info = setup_from_env(device=args.device, script=SCRIPT)
    except (DistributedLaunchError, ValueError, RuntimeError) as exc:
        raise UserError(str(exc)) from None
    finished = False
    try:
        status = train(args, dist_info)
        finished = True
        return status
    finally:
        if finished:
            cleanup()  # wait for every process, then leave the group
        else:  # after an error no barrier: the other processes may never reach it; torchrun stops them
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    return run_main(run, parse_args_with_config(build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
