"""Training curves for chapters 5-7: loss (or accuracy) over epochs, with a second axis for data seen."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator


def _save(fig, path: str | Path | None) -> list[Path]:
    """Save `fig` as PNG and PDF next to each other (``path`` without or with either suffix)."""
    if path is None:
        return []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.with_suffix("")
    saved = []
    for suffix in (".png", ".pdf"):
        target = stem.with_suffix(suffix)
        fig.savefig(target, dpi=150 if suffix == ".png" else None, bbox_inches="tight")
        saved.append(target)
    return saved


def plot_values(
    epochs_seen: Sequence[float],
    examples_seen: Sequence[float],
    train_values: Sequence[float],
    val_values: Sequence[float],
    label: str = "loss",
    save_path: str | Path | None = None,
    seen_label: str = "Examples seen",
):
    """Plot training and validation `label` against epochs, with `examples_seen` on a top axis; return the figure."""
    fig, ax1 = plt.subplots(figsize=(5, 3))
    ax1.plot(epochs_seen, train_values, label=f"Training {label}")
    ax1.plot(epochs_seen, val_values, linestyle="-.", label=f"Validation {label}")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel(label.capitalize())
    ax1.legend()
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    # A second x-axis that shares the curves: the same points against data seen.
    ax2 = ax1.twiny()
    ax2.plot(examples_seen, train_values, alpha=0)  # invisible: only aligns the ticks
    ax2.set_xlabel(seen_label)
    fig.tight_layout()
    _save(fig, save_path)
    return fig


def plot_losses(
    epochs_seen: Sequence[float],
    tokens_seen: Sequence[float],
    train_losses: Sequence[float],
    val_losses: Sequence[float],
    save_path: str | Path | None = None,
):
    """Plot pretraining losses against epochs and tokens seen (chapter 5); save PNG and PDF if asked."""
    return plot_values(epochs_seen, tokens_seen, train_losses, val_losses, "loss", save_path, "Tokens seen")
