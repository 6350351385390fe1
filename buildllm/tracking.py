"""Experiment tracking for the training scripts (chapter 5): Weights & Biases, on request.

`buildllm.trainer.TrainRun` reports every metric through one callback,
``log_scalar(name, value, step)`` (TensorBoard's ``SummaryWriter.add_scalar`` has
that shape). `WandbLogger` gives Weights & Biases the same callback, so a run
logs the same metrics to either or both (`log_to_all`): ``loss/train_step`` and
``lr`` every optimizer step, ``loss/train`` and ``loss/val`` at each evaluation.

The ``wandb`` package is imported only when a run asks for it. In offline mode
(``mode="offline"`` or ``WANDB_MODE=offline``) nothing goes over the network and
no login is needed: the run is written to ``FOLDER/wandb/offline-run-*`` and can
be uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .cli import UserError

WANDB_MODES = ("online", "offline", "disabled")


class WandbLogger:
    """One Weights & Biases run; `log_scalar` has the signature `TrainRun.log_scalar` expects."""

    def __init__(self, run):
        self.run = run

    def log_scalar(self, name: str, value: float, step: int) -> None:
        """Log one metric at optimizer step `step` (several metrics may share a step)."""
        self.run.log({name: value}, step=step)

    def finish(self, summary: dict | None = None) -> None:
        """Record the final figures of the run in its summary and close it."""
        if summary:
            self.run.summary.update(summary)
        self.run.finish()

    @property
    def folder(self) -> Path:
        """The folder where wandb keeps this run's files (offline: the one ``wandb sync`` uploads)."""
        return Path(self.run.dir).parent


def start_wandb(project: str, name: str | None, mode: str | None, folder: str | os.PathLike,
                config: dict) -> WandbLogger:
    """Start a Weights & Biases run that writes under `folder` (``folder/wandb/``); UserError with advice on failure.

    `mode` None lets wandb decide (``WANDB_MODE``, else online, which needs
    ``wandb login``); "offline" needs neither network nor login.
    """
    if mode is not None and mode not in WANDB_MODES:
        raise UserError(f"wandb mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}.")
    try:
        import wandb
    except ImportError:
        raise UserError("--wandb needs the wandb package: pip install wandb (or leave out --wandb; --tensorboard DIR "
                        "logs the same metrics for TensorBoard).") from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        run = wandb.init(project=project, name=name, mode=mode, dir=str(folder.resolve()), config=config)
    except wandb.errors.Error as exc:
        raise UserError(f"Weights & Biases could not start a run: {exc} Log in with `wandb login`, or track "
                        f"offline without an account: --wandb-mode offline (upload later with `wandb sync`).") from None
    return WandbLogger(run)


def log_to_all(*loggers: Callable[[str, float, int], None] | None) -> Callable[[str, float, int], None] | None:
    """One ``log_scalar(name, value, step)`` that calls each of `loggers` (None entries skipped); None if none."""
    active = [log for log in loggers if log is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]

    def log_scalar(name: str, value: float, step: int) -> None:
        for log in active:
            log(name, value, step)

    return log_scalar
