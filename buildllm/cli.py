"""What every chapter script shares on the command line: one convention for errors, numbers, devices and weights.

- `UserError`: a problem the user can fix (a bad option, a missing file). Scripts
  raise it with a message that says what to do; `run_main` prints it as
  ``error: ...`` without a traceback and exits with status 2, as argparse does;
  Ctrl-C ends a script with a short note and status 130, not a traceback.
- `make_parser`: an `argparse` parser whose ``--help`` shows every option's
  default once (write help texts without "(default: ...)").
- Number types for ``type=``: `positive_int`, `nonnegative_int`, `positive_float`,
  `nonnegative_float`, `open_fraction`, `probability`, `temperature`, `dropout_rate`,
  `seed`, `port`: nonsense (negative sizes, NaN, infinity, a seed PyTorch refuses) is
  refused while the command line is parsed. `check_max_new_tokens`, `check_output_paths`,
  `read_text_file` and `read_json_file` check what needs more than the option itself, before long work.
- `add_device_argument`: ``--device auto|cpu|cuda|cuda:N|mps`` for every script;
  `add_benchmark_arguments` / `prepare_benchmark`: that and --threads, --output-dir for benchmarks.
- `add_weights_arguments` / `load_weights`: ``--weights NAME|PATH``, the models
  folder and the shape of a random model, read by `buildllm.pretrained.load_base_model`.
- `download_main`: the command line of the chapters' ``gpt_download.py``.

Only the standard library is imported at the top, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


def run_main(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Return ``run(args)``; a `UserError` prints ``error: ...`` (status 2), Ctrl-C prints a note (status 130)."""
    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C). Files already written are complete; nothing was half-written.",
              file=sys.stderr)
        return 130


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default once: appended by argparse, unless the help text says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


def make_parser(description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser that shows every option's default (once) in --help."""
    return argparse.ArgumentParser(description=description, epilog=epilog, formatter_class=HelpFormatter)


# --- Numbers, checked while parsing --------------------------------------------------------------------

def _number(kind: type, test: Callable[[float], bool], wanted: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value) or not test(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = wanted  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "a whole number >= 1")
nonnegative_int = _number(int, lambda v: v >= 0, "a whole number >= 0")
positive_float = _number(float, lambda v: v > 0, "a finite number > 0")
nonnegative_float = _number(float, lambda v: v >= 0, "a finite number >= 0")
open_fraction = _number(float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")
probability = _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
temperature = _number(float, lambda v: 0 <= v <= 100, "a temperature between 0 (greedy) and 100")
dropout_rate = _number(float, lambda v: 0 <= v < 1, "a dropout rate in [0, 1)")
seed = _number(int, lambda v: 0 <= v < 2**32, "a seed from 0 to 4294967295")
port = _number(int, lambda v: 1 <= v <= 65535, "a port number from 1 to 65535")


def check_max_new_tokens(max_new_tokens: int, context_length: int, what: str = "the model") -> None:
    """Raise `UserError` if --max-new-tokens asks for more tokens than `what` can see at once (its context)."""
    if max_new_tokens > context_length:
        raise UserError(f"--max-new-tokens {max_new_tokens} is more than the context of {what} ({context_length} "
                        f"tokens): give at most {context_length}.")


def check_output_paths(*paths: str | os.PathLike, flag: str = "--output-dir") -> None:
    """Raise `UserError` (naming `flag`) unless every path can be written, before any long work starts."""
    from .files import check_writable

    for path in paths:
        try:
            check_writable(path)
        except PermissionError as exc:
            raise UserError(f"{flag}: {exc}") from None


def read_text_file(path: str | os.PathLike, flag: str) -> str:
    """The UTF-8 text of a file named by `flag`, or `UserError` saying why it cannot be read."""
    path = Path(path).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{flag} {path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except OSError as exc:
        from .files import os_error_reason

        raise UserError(f"{flag} {path}: {os_error_reason(exc)}.") from None



def read_json_file(path: str | os.PathLike, flag: str, expected: str = "a JSON document"):
    """The parsed JSON of a file named by `flag`, or `UserError` saying why it cannot be read and what to give."""
    text = read_text_file(path, flag)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{flag} {Path(path).expanduser()} is not valid JSON ({exc}). Fix the file or give "
                        f"another one: {expected}.") from None


# --- Device ---------------------------------------------------------------------------------------------

_DEVICE = re.compile(r"auto|cpu|cuda|cuda:\d+|mps")


def device_name(text: str) -> str:
    """argparse type for --device: auto, cpu, cuda, cuda:N or mps (availability is checked when used)."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"choose auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps, got {text!r}")
    return text


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """Add --device (auto picks cuda, then mps, then cpu)."""
    parser.add_argument("--device", default="auto", type=device_name,
                        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")


def pick_device(name: str):
    """Return the torch device for --device `name`, or raise `UserError` if this machine lacks it."""
    from .device import get_device

    try:
        return get_device(name)
    except (ValueError, RuntimeError) as exc:
        raise UserError(str(exc)) from None


def add_benchmark_arguments(parser: argparse.ArgumentParser, outputs: str, default_dir: str | os.PathLike) -> None:
    """Add what every benchmark takes: --device, --threads and --output-dir (for `outputs`, e.g. "attention.png").

    The help texts name their defaults, so they read right with `make_parser` and with a plain parser.
    """
    parser.add_argument("--device", default="auto", type=device_name,
                        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for PyTorch (default: PyTorch's own choice)")
    parser.add_argument("--output-dir", default=str(default_dir), help=f"folder for {outputs} (default: {default_dir})")


def prepare_benchmark(args: argparse.Namespace, *outputs: str):
    """Set the CPU threads and pick the device of `add_benchmark_arguments`' options; return (device, output folder).

    Every file in `outputs` is checked to be writable first: a folder that cannot be written would otherwise
    lose the measurements at the end. Raises `UserError`.
    """
    from .device import setup_device

    try:
        device = setup_device(args.device, args.threads)
    except (ValueError, RuntimeError) as exc:
        raise UserError(str(exc)) from None
    out_dir = Path(args.output_dir)
    check_output_paths(*(out_dir / name for name in outputs))
    return device, out_dir


def add_ddp_toy_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both appendix A DDP scripts share: training settings and a --device for one GPU per process."""
    parser.add_argument("--epochs", type=positive_int, default=3, help="training epochs (as in the book)")
    parser.add_argument("--batch-size", type=positive_int, default=2, help="batch size per process")
    parser.add_argument("--lr", type=positive_float, default=0.5, help="SGD learning rate")
    parser.add_argument("--seed", type=seed, default=123, help="random seed for weights and shuffling")
    parser.add_argument("--device", type=device_name, default="auto",
                        help="auto (one GPU per process when CUDA is available, else the CPU), cuda or cpu")


def check_ddp_device(name: str) -> None:
    """Raise `UserError` for a --device that names one device: under DDP each process uses its own GPU."""
    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {name}: under DDP each process uses its own GPU (cuda:LOCAL_RANK); give auto, "
                        f"cuda or cpu.")


# --- Weights --------------------------------------------------------------------------------------------

def add_finetune_arguments(parser: argparse.ArgumentParser, *, instead: str, exercise: str, epochs: int,
                           batch: str, eval_freq: int) -> None:
    """The fine-tuning options chapters 6 and 7 share: LoRA (appendix E), the book's AdamW settings, evaluation.

    `instead` says what LoRA replaces ("unfreezing layers", "all weights"), `exercise` where the book uses it.
    """
    parser.add_argument("--lora-rank", type=positive_int, default=None,
                        help=f"fine-tune with LoRA of this rank instead of {instead} ({exercise}; book: 16)")
    parser.add_argument("--lora-alpha", type=positive_float, default=256.0,
                        help="LoRA alpha; updates are scaled by alpha/rank, so 256 at rank 16 gives the update size "
                             "of the book's rank 16, alpha 16 (its code scales by alpha alone; measured in "
                             "appendix-E/appendix-E.ipynb). For another rank keep alpha = 16 x rank")
    parser.add_argument("--epochs", type=positive_int, default=epochs, help="passes over the training set")
    parser.add_argument("--lr", type=positive_float, default=5e-5, help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=nonnegative_float, default=0.1, help="AdamW weight decay")
    parser.add_argument("--batch-size", type=positive_int, default=8, help=f"{batch} per batch")
    parser.add_argument("--eval-freq", type=positive_int, default=eval_freq, help="evaluate the losses every N steps")
    parser.add_argument("--eval-iter", type=positive_int, default=5, help="batches per loss evaluation")


def default_models_dir() -> str:
    """The models folder shown in --help: BUILDLLM_MODELS_DIR or ~/.cache/buildllm/models."""
    return os.environ.get("BUILDLLM_MODELS_DIR") or str(Path("~/.cache/buildllm/models"))


def add_weights_arguments(parser: argparse.ArgumentParser, default: str, random_shape: bool = True) -> None:
    """Add --weights NAME|PATH, --models-dir and (for --weights random) the shape of the random model."""
    parser.add_argument(
        "--weights", default=default, metavar="NAME|PATH",
        help="starting weights: gpt2-small, gpt2-medium, gpt2-large, gpt2-xl (OpenAI's GPT-2; 124M/355M/774M/1558M "
             "also work), smollm2-135m-instruct or smollm2-135m (SmolLM2, a Llama-style model; the instruct "
             "version also reaches machines without internet), qwen3-0.6b (Qwen3-0.6B from Hugging Face), random "
             "(random init), or the PATH of a model file written by buildllm.checkpoints.save_model (e.g. model.pth "
             "of an earlier chapter's script) or of a folder of Hugging Face Qwen3 files")
    parser.add_argument("--models-dir", default=None, metavar="DIR",
                        help=f"folder of downloaded pretrained weights (default: $BUILDLLM_MODELS_DIR, else "
                             f"{Path('~/.cache/buildllm/models')})")
    if random_shape:
        shape = parser.add_argument_group("shape of the model for --weights random (small models for CPUs)")
        shape.add_argument("--model-size", default="gpt2-small",
                           choices=["gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl"],
                           help="GPT-2 architecture to start from")
        shape.add_argument("--emb-dim", type=positive_int, help="embedding size (default: the size's)")
        shape.add_argument("--n-layers", type=positive_int, help="transformer blocks (default: the size's)")
        shape.add_argument("--n-heads", type=positive_int, help="attention heads (default: the size's)")
        shape.add_argument("--context-length", type=positive_int, help="longest input in tokens (default: 1024)")


def load_weights(args: argparse.Namespace, device, drop_rate: float = 0.0, weights: str | None = None):
    """`buildllm.pretrained.load_base_model` for the parsed options; a `WeightsError` becomes a `UserError`."""
    from .pretrained import load_base_model
    from .sources import WeightsError

    shape = {key: getattr(args, key, None) for key in ("model_size", "emb_dim", "n_layers", "n_heads",
                                                        "context_length")}
    try:
        return load_base_model(weights or args.weights, models_root=args.models_dir, device=device,
                               drop_rate=drop_rate, random_config=shape)
    except WeightsError as exc:
        raise UserError(str(exc)) from None


# What each chapter's gpt_download.py fetches by default, and what to run next.
CHAPTER_DOWNLOADS = {
    "ch05": ("chapter 5 (text generation)", "gpt2-small",
             "Generate with it: python ch05/gpt_generate.py --weights {weights}"),
    "ch06": ("chapter 6 (spam classification)", "gpt2-small",
             "Fine-tune it: python ch06/gpt_class_finetune.py --weights {weights}"),
    "ch07": ("chapter 7 (instruction fine-tuning)", "gpt2-medium",
             "Fine-tune it: python ch07/gpt_instruction_finetuning.py --weights {weights}"),
}


def download_main(argv: list[str] | None, *, chapter: str) -> int:
    """The command line of `chapter`'s ``gpt_download.py`` (a key of `CHAPTER_DOWNLOADS`): fetch weights."""
    chapter, default_weights, next_step = CHAPTER_DOWNLOADS[chapter]
    parser = make_parser(f"Download the pretrained weights {chapter} starts from into the models folder "
                         f"(where every script and notebook looks for them). Files already there are verified "
                         f"and kept; nothing is downloaded twice.")
    parser.add_argument("--weights", default=default_weights,
                        choices=["gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "124M", "355M", "774M",
                                 "1558M", "smollm2-135m-instruct", "smollm2-135m", "qwen3-0.6b"],
                        help="which weights")
    parser.add_argument("--source", default="huggingface", choices=("huggingface", "openai"),
                        help="GPT-2 only: huggingface (one model.safetensors file, no TensorFlow needed) or openai "
                             "(the original checkpoint; reading it needs TensorFlow)")
    parser.add_argument("--models-dir", default=None, metavar="DIR",
                        help="where to put them (default: $BUILDLLM_MODELS_DIR, else ~/.cache/buildllm/models)")
    parser.add_argument("--retries", type=positive_int, default=3, help="attempts per URL")
    args = parser.parse_args(argv)

    def run(args) -> int:
        from .sources import WeightsError

        try:
            if args.weights.startswith("smollm2"):
                from .smollm2 import fetch_smollm2

                folder = fetch_smollm2(args.weights, args.models_dir)
            elif args.weights.startswith("qwen3"):
                from .qwen3 import fetch_qwen3

                folder = fetch_qwen3(args.weights, args.models_dir, retries=args.retries)
            else:
                from .gpt2 import download_gpt2_files

                folder = download_gpt2_files(args.weights, args.models_dir, args.source, retries=args.retries)
        except WeightsError as exc:
            raise UserError(str(exc)) from None
        print(f"{args.weights} is ready in {Path(folder).resolve()}:")
        for path in sorted(Path(folder).iterdir()):
            if path.is_file() and not path.name.startswith("."):
                print(f"  {path.name:34s} {path.stat().st_size:>13,} bytes")
        print(next_step.format(weights=args.weights))
        return 0

    return run_main(run, args)
