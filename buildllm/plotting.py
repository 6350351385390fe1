"""Training curves for chapters 5-7: loss (or accuracy) over epochs, with a second axis for data seen.

Also `use_korean_font`, which lets every plot and diagram of the curriculum carry Korean labels.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib import font_manager
from matplotlib.ticker import MaxNLocator

_FONT_PACKAGE = "koreanize_matplotlib"  # ships NanumGothic; importing it would change rcParams, so we only read its files
_warned_missing_font = False


def _korean_font_files() -> list[Path]:
    """The NanumGothic .ttf files inside the installed koreanize_matplotlib package (empty if it is missing)."""
    spec = importlib.util.find_spec(_FONT_PACKAGE)  # finds the package without importing (running) it
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(Path(folder, "fonts", name)
                  for folder in spec.submodule_search_locations
                  for name in (p.name for p in Path(folder, "fonts").glob("*.ttf")))


def use_korean_font() -> str:
    """Register NanumGothic from koreanize_matplotlib, make it the default font family and return its name."""
    global _warned_missing_font
    files = _korean_font_files()
    if not files:
        if not _warned_missing_font:
            warnings.warn("한글 글꼴(NanumGothic)을 찾지 못해 그림의 한글이 네모로 보일 수 있습니다. "
                          "`pip install koreanize-matplotlib`으로 설치한 뒤 커널을 다시 시작하세요.",
                          stacklevel=2)
            _warned_missing_font = True
        return mpl.rcParams["font.family"][0]
    known = {entry.fname for entry in font_manager.fontManager.ttflist}
    for path in files:
        if str(path) not in known:  # idempotent: each file is added once per session
            font_manager.fontManager.addfont(str(path))
    family = font_manager.FontProperties(fname=str(files[0])).get_name()  # "NanumGothic"
    mpl.rcParams["font.family"] = family
    mpl.rcParams["axes.unicode_minus"] = False  # NanumGothic has no U+2212 minus sign: use "-"
    return family


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


# Korean names for the quantities the chapters plot; any other label is shown as given.
_LABELS_KO = {"loss": "손실", "accuracy": "정확도"}


def plot_values(
    epochs_seen: Sequence[float],
    examples_seen: Sequence[float],
    train_values: Sequence[float],
    val_values: Sequence[float],
    label: str = "loss",
    save_path: str | Path | None = None,
    seen_label: str = "본 예제 수",
):
    """Plot training and validation `label` against epochs, with `examples_seen` on a top axis; return the figure."""
    use_korean_font()
    name = _LABELS_KO.get(label, label)
    fig, ax1 = plt.subplots(figsize=(5, 3))
    ax1.plot(epochs_seen, train_values, label=f"훈련 {name}")
    ax1.plot(epochs_seen, val_values, linestyle="-.", label=f"검증 {name}")
    ax1.set_xlabel("에포크")
    ax1.set_ylabel(name)
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
    return plot_values(epochs_seen, tokens_seen, train_losses, val_losses, "loss", save_path, "본 토큰 수")
