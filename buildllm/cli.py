"""What the chapter scripts share on the command line (chapters 6 and 7).

- `UserError`: a problem the user can fix (a bad option, a missing file). The
  scripts raise it with a message that says what to do; `run_main` prints it as
  ``error: ...`` without a traceback and exits with status 2, as argparse does.
- `add_weights_arguments`: the options that choose the starting model
  (``--weights``, ``--model-size``, ``--models-dir``), read by
  `buildllm.gpt2.load_base_gpt`.

Only the standard library is imported here, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


def run_main(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Return ``run(args)``; a `UserError` is printed as ``error: ...`` on stderr and gives exit status 2."""
    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def add_weights_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    """Add --weights (default `default`), --model-size and --models-dir to `parser`."""
    from .model import GPT2_SIZES

    parser.add_argument("--weights", default=default,
                        help=f"starting weights: one of {', '.join(GPT2_SIZES)} (OpenAI's, downloaded into "
                             f"--models-dir), 'random' (random init of --model-size), or the PATH of a model.pth "
                             f"written by buildllm.training.save_model (e.g. by ch05/gpt_train.py)")
    parser.add_argument("--model-size", default="gpt2-small", choices=list(GPT2_SIZES),
                        help="architecture for --weights random")
    parser.add_argument("--models-dir", default="gpt2", help="folder for downloaded GPT-2 weights")
