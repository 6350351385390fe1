"""Concept diagrams of the curriculum, drawn by our own code with matplotlib.

One function per diagram; each returns a matplotlib Figure with Korean labels (the style
guide's terms) and the code's English identifiers (``W_query``, ``trf_blocks``, ``out_head``)
so a learner can find each box in the code. Chapters that use them:

- ch02: `token_embedding_pipeline`, `sliding_window_batches`
- ch03: `qkv_causal_mask`, `head_split_merge`
- ch04: `gpt_block`
- ch05: `training_loop`
- ch06: `classification_last_token`
- ch07: `instruction_masking`
- appendix-E: `lora_update`
- appendix-A: `ddp_gradient_averaging`

In a notebook: ``from buildllm import diagrams; diagrams.gpt_block(); plt.show()``.
From a terminal, ``python -m buildllm.diagrams [--out DIR] [--only NAME ...]`` writes each
figure as ``DIR/<name>.svg`` (default: ``notes-ko/figures``), byte for byte the same on every
run with the same matplotlib and font versions (fixed SVG id salt, no date, glyphs as paths).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from buildllm.plotting import use_korean_font

# --- style ------------------------------------------------------------------------------------

INK = "#1f2933"  # text and arrows
MUTED = "#616e7c"  # secondary text
FONT = ["NanumGothic", "DejaVu Sans"]  # DejaVu Sans fills the few symbols NanumGothic lacks (ᵀ, ✓)
CODE = ["DejaVu Sans Mono", "NanumGothic"]  # identifiers and shapes

# One (fill, edge) pair per concept, the same in every diagram.
COLORS = {
    "token": ("#e4eefb", "#2b6cb0"),  # text, tokens, token IDs
    "emb": ("#e3f4e8", "#2f855a"),  # token embeddings
    "pos": ("#fdf1d8", "#b7791f"),  # position embeddings
    "attn": ("#fde8da", "#c05621"),  # attention
    "norm": ("#efe8fa", "#6b46c1"),  # layer normalization
    "ff": ("#dcf3f3", "#2c7a7b"),  # feed forward
    "loss": ("#fde3e3", "#c53030"),  # loss, gradients, targets
    "out": ("#e8eaf6", "#3949ab"),  # output layer, logits
    "neutral": ("#f2f4f7", "#52606d"),  # plumbing: dropout, views, data
    "frozen": ("#e4e7eb", "#7b8794"),  # frozen weights, masked cells
    "train": ("#fff0d9", "#c47f00"),  # trainable (LoRA)
}
CMAPS = {
    "token": "Blues",
    "emb": "Greens",
    "pos": "YlOrBr",
    "attn": "Oranges",
    "out": "Purples",
    "loss": "Reds",
    "ff": "BuGn",
    "frozen": "Greys",
    "train": "YlOrBr",
}
MASKED = "#d5dae1"  # a masked (future) attention cell

# Settings that make the SVG files identical from run to run.
SVG_RC = {"svg.hashsalt": "buildllm-diagrams", "svg.fonttype": "path", "path.simplify": True}
SVG_METADATA = {"Date": None}

# The examples the diagrams show: GPT-2 tokenizer output, checked against tiktoken by the tests.
EXAMPLE_TEXT = "LLMs predict the next word"
EXAMPLE_TOKENS = ["LL", "Ms", " predict", " the", " next", " word"]
EXAMPLE_IDS = [3069, 10128, 4331, 262, 1306, 1573]
WINDOW_TEXT = "Every token learns to predict the token that comes right after it."
WINDOW_TOKENS = [
    "Every",
    " token",
    " learns",
    " to",
    " predict",
    " the",
    " token",
    " that",
    " comes",
    " right",
    " after",
    " it",
    ".",
]
WINDOW_IDS = [6109, 11241, 22974, 284, 4331, 262, 11241, 326, 2058, 826, 706, 340, 13]
SPAM_TEXT = "WINNER! Claim your free prize now"
SPAM_TOKENS = ["WIN", "NER", "!", " Claim", " your", " free", " prize", " now"]
SPAM_IDS = [37620, 21479, 0, 22070, 534, 1479, 11596, 783]
END_OF_TEXT_ID = 50256
IGNORE_INDEX = -100


# --- drawing helpers --------------------------------------------------------------------------


def _canvas(width: float, height: float, title: str | None = None, subtitle: str | None = None):
    """A figure whose data coordinates are inches (origin bottom left) with no axes drawn."""
    use_korean_font()
    fig = plt.figure(figsize=(width, height))
    fig.patch.set_facecolor("white")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    if title:
        _text(ax, 0.3, height - 0.32, title, size=13, weight="bold", ha="left")
    if subtitle:
        _text(ax, 0.3, height - 0.62, subtitle, size=9, color=MUTED, ha="left")
    return fig, ax


def _text(ax, x, y, s, size=9, color=INK, weight="normal", ha="center", va="center", code=False, **kw):
    """Text in the diagram font (or the code font when `code`)."""
    return ax.text(
        x, y, s, fontsize=size, color=color, fontweight=weight, ha=ha, va=va, family=CODE if code else FONT, **kw
    )


def _step_arrow(ax, x0, x1, y, label, note=None, color=INK, **note_kw):
    """A left-to-right arrow between two drawings at height y: `label` above it, an optional code `note` below."""
    _arrow(ax, (x0 + 0.1, y), (x1 - 0.1, y), color=color, label=label, label_side="above")
    if note:
        _text(ax, (x0 + x1) / 2, y - 0.2, note, size=6.5, code=True, color=MUTED, va="top", **note_kw)


def _rounded_box(ax, x0, y0, w, h, radius, face, edge, lw=1.0, ls="-"):
    """A rounded rectangle with its lower left corner at (x0, y0): every box in these figures is one."""
    ax.add_patch(
        FancyBboxPatch(
            (x0, y0),
            w,
            h,
            boxstyle=f"round,pad=0,rounding_size={radius}",
            facecolor=face,
            edgecolor=edge,
            linewidth=lw,
            linestyle=ls,
        )
    )


def _box(
    ax,
    x,
    y,
    w,
    h,
    title,
    kind="neutral",
    sub=None,
    code=False,
    size=9,
    sub_size=7.5,
    sub_code=True,
    fill=None,
    lw=1.2,
    ls="-",
    weight="normal",
):
    """A rounded box centred at (x, y) with a title and an optional second line (shape or code)."""
    face, edge = COLORS[kind]
    _rounded_box(ax, x - w / 2, y - h / 2, w, h, 0.06, fill or face, edge, lw=lw, ls=ls)
    if sub:
        _text(ax, x, y + h * 0.17, title, size=size, code=code, weight=weight)
        _text(ax, x, y - h * 0.23, sub, size=sub_size, color=MUTED, code=sub_code)
    else:
        _text(ax, x, y, title, size=size, code=code, weight=weight)


def _frame(ax, x0, y0, x1, y1, kind="neutral", label=None, ls="--", label_pos="top-left", fill="none"):
    """A dashed frame around a group of boxes, with a label at its top left."""
    face, edge = COLORS[kind]
    _rounded_box(ax, x0, y0, x1 - x0, y1 - y0, 0.1, face if fill == "face" else fill, edge, lw=1.0, ls=ls)
    if label:
        if label_pos == "top-left":
            _text(ax, x0 + 0.12, y1 - 0.16, label, size=8.5, color=edge, ha="left", weight="bold")
        else:
            _text(ax, x1 - 0.12, y1 - 0.16, label, size=8.5, color=edge, ha="right", weight="bold")


def _arrow(
    ax,
    p0,
    p1,
    color=INK,
    lw=1.2,
    rad=0.0,
    ls="-",
    style="-|>",
    label=None,
    label_side="right",
    label_size=7.5,
    label_code=True,
    shrink=0.0,
):
    """An arrow from p0 to p1 (inches), optionally labelled at its middle."""
    ax.add_patch(
        FancyArrowPatch(
            p0,
            p1,
            arrowstyle=style,
            mutation_scale=10,
            color=color,
            lw=lw,
            linestyle=ls,
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=shrink,
            shrinkB=shrink,
        )
    )
    if label:
        mx, my = (p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2
        if label_side == "right":
            _text(ax, mx + 0.08, my, label, size=label_size, color=MUTED, ha="left", code=label_code)
        elif label_side == "left":
            _text(ax, mx - 0.08, my, label, size=label_size, color=MUTED, ha="right", code=label_code)
        else:  # above
            _text(ax, mx, my + 0.1, label, size=label_size, color=MUTED, va="bottom", code=label_code)


def _line(ax, points, color=INK, lw=1.2, ls="-"):
    """A polyline through `points` (no arrow head)."""
    xs, ys = zip(*points)
    ax.plot(xs, ys, color=color, lw=lw, ls=ls, solid_capstyle="round")


def _matrix(
    ax,
    x0,
    y0,
    values,
    cell=0.22,
    cmap="Blues",
    vmin=None,
    vmax=None,
    texts=None,
    text_size=6.5,
    mask=None,
    edge="white",
    lw=0.8,
    colors=None,
):
    """Draw a heatmap whose top-left corner is (x0, y0); rows go down. Returns (x0, y0, x1, y1) bottom-right."""
    values = np.asarray(values, dtype=float)
    rows, cols = values.shape
    lo = values.min() if vmin is None else vmin
    hi = values.max() if vmax is None else vmax
    cm = mpl.colormaps[cmap]
    for i in range(rows):
        for j in range(cols):
            if mask is not None and mask[i][j]:
                face = MASKED
            elif colors is not None:
                face = colors[i][j]
            else:
                t = 0.5 if hi == lo else (values[i, j] - lo) / (hi - lo)
                face = cm(0.12 + 0.68 * float(np.clip(t, 0, 1)))
            ax.add_patch(
                Rectangle(
                    (x0 + j * cell, y0 - (i + 1) * cell), cell, cell, facecolor=face, edgecolor=edge, linewidth=lw
                )
            )
            if texts is not None and texts[i][j] != "":
                _text(
                    ax, x0 + (j + 0.5) * cell, y0 - (i + 0.5) * cell, texts[i][j], size=text_size, color=INK, code=True
                )
    return x0, y0, x0 + cols * cell, y0 - rows * cell


def _values(rows: int, cols: int, seed: int) -> np.ndarray:
    """Made-up but fixed numbers in [-1, 1] for a heatmap (a formula, so no random generator is involved)."""
    i = np.arange(rows)[:, None]
    j = np.arange(cols)[None, :]
    return np.sin(1.7 * i + 2.3 * j + 0.9 * seed + 0.37 * i * j * (seed + 1))


def _fmt(value: float, digits: int) -> str:
    """A number with `digits` decimals, never "-0.0"."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _shown(token: str) -> str:
    """A GPT-2 token as it is drawn: the leading space made visible."""
    return token.replace(" ", "␣") if token.startswith(" ") else token


# --- ch02 -------------------------------------------------------------------------------------


def token_embedding_pipeline() -> Figure:
    """Ch02: text -> tokens -> token IDs -> token embedding + position embedding -> input embeddings."""
    tokens, ids = EXAMPLE_TOKENS, EXAMPLE_IDS
    T, d = len(tokens), 4  # d drawn: 4 of the 256 (notebook) or 768 (GPT-2 small) numbers
    fig, ax = _canvas(
        10.0,
        8.1,
        "텍스트에서 입력 임베딩까지",
        f'예: "{EXAMPLE_TEXT}" (b = 1, T = {T}). 세로 막대 하나가 토큰 하나의 벡터입니다(d개의 수 중 4개만 그림).',
    )
    label_x, col0, gap = 0.3, 3.75, 1.05
    xs = [col0 + k * gap for k in range(T)]
    cell = 0.2
    mid = (xs[0] + xs[-1]) / 2

    def row_label(y, title, lines):
        _text(ax, label_x, y, title, size=9.5, weight="bold", ha="left")
        for k, (line, code) in enumerate(lines):
            _text(ax, label_x + 0.02, y - 0.25 - 0.2 * k, line, size=7.3, color=MUTED, ha="left", code=code)

    # 1) text, 2) tokens, 3) token IDs
    y_text, y_tok, y_id = 6.95, 6.05, 5.2
    row_label(y_text + 0.08, "① 텍스트", [("str", True)])
    _box(ax, mid, y_text, xs[-1] - xs[0] + 0.9, 0.42, f'"{EXAMPLE_TEXT}"', "token", code=True, size=10)
    row_label(y_tok + 0.08, "② 토큰 (부분단어)", [("tokenizer.encode가 자름", False), ("␣ = 앞의 공백", False)])
    _arrow(ax, (mid, y_text - 0.23), (mid, y_tok + 0.23), label="BPE 토큰화", label_code=False)
    for x, tok in zip(xs, tokens):
        _box(ax, x, y_tok, 0.92, 0.4, _shown(tok), "token", code=True, size=9)
    row_label(y_id + 0.08, "③ 토큰 ID", [("(b, T) = (1, 6), 정수", True)])
    for k, (x, i) in enumerate(zip(xs, ids)):
        _arrow(ax, (x, y_tok - 0.21), (x, y_id + 0.18))
        _box(ax, x, y_id, 0.8, 0.34, f"{i}", "token", code=True, size=9, fill="white")
        _text(ax, x, y_id - 0.3, f"위치 {k}", size=7, color=MUTED)

    # 4) token embedding + 5) position embedding = 6) input embedding
    tok_vals = np.stack([_values(1, d, i % 97)[0] for i in ids], axis=1)  # (d, T): one column per token
    pos_vals = np.stack([0.8 * _values(1, d, 50 + k)[0] for k in range(T)], axis=1)
    bands = [
        (
            4.45,
            tok_vals,
            "Greens",
            "④ 토큰 임베딩",
            [
                ("tok_emb(ids): (b, T, d)", True),
                ("tok_emb = nn.Embedding(50257, d)", True),
                ("어휘사전 표에서 ID번째 행을 꺼냄", False),
            ],
        ),
        (
            2.95,
            pos_vals,
            "YlOrBr",
            "⑤ 위치 임베딩",
            [
                ("pos_emb(arange(T)): (T, d)", True),
                ("pos_emb = nn.Embedding(1024, d)", True),
                ("위치 0, 1, 2, …번째 행을 꺼냄", False),
            ],
        ),
        (
            1.45,
            tok_vals + pos_vals,
            "PuBu",
            "⑥ 입력 임베딩",
            [
                ("tok + pos: (b, T, d)", True),
                ("배치의 모든 행에 같은 pos를 더함", False),
                ("다음은 3장의 어텐션", False),
            ],
        ),
    ]
    for top, vals, cmap, title, lines in bands:
        row_label(top - 0.12, title, lines)
        for k, x in enumerate(xs):
            _matrix(ax, x - cell / 2, top, vals[:, k : k + 1], cell=cell, cmap=cmap, vmin=-1.8, vmax=1.8)
    for x in xs:
        _arrow(ax, (x, y_id - 0.42), (x, bands[0][0] + 0.05), color=COLORS["emb"][1])
        _text(ax, x, (bands[0][0] - d * cell + bands[1][0]) / 2, "+", size=15, weight="bold")
        _text(ax, x, (bands[1][0] - d * cell + bands[2][0]) / 2, "=", size=15, weight="bold")
    _text(
        ax,
        mid,
        0.3,
        "d = 256 (노트북) · 768 (GPT-2 small). 같은 토큰 ID는 어느 위치에서나 같은 토큰 임베딩을 받고, "
        "위치 임베딩이 순서를 알려 줍니다.",
        size=7.5,
        color=MUTED,
    )
    return fig


def _token_row(ax, x0, y, labels, w, h, kind="token", texts_code=True, size=7.5, fills=None, edges=None):
    """A row of small boxes starting at x0 (left edge), one per label."""
    for k, lab in enumerate(labels):
        face, edge = COLORS[kind]
        if fills is not None and fills[k] is not None:
            face = fills[k]
        if edges is not None and edges[k] is not None:
            edge = edges[k]
        _rounded_box(ax, x0 + k * w + 0.02, y - h / 2, w - 0.04, h, 0.04, face, edge, lw=1.0)
        _text(ax, x0 + (k + 0.5) * w, y, lab, size=size, code=texts_code)


def sliding_window_batches() -> Figure:
    """Ch02: input/target windows of max_length tokens, taken every stride tokens, and the batch they make."""
    tokens, n = WINDOW_TOKENS, len(WINDOW_TOKENS)
    max_length = 4
    fig, ax = _canvas(
        11.75,
        7.7,
        "슬라이딩 윈도로 (입력, 타깃) 쌍 만들기",
        "GPTDatasetV1: 시작 위치 0, stride, 2·stride, …에서 max_length개를 입력으로, "
        "한 칸 오른쪽으로 민 max_length개를 타깃으로 자릅니다.",
    )
    w, h, x0 = 0.64, 0.27, 1.05
    shown = [_shown(t) for t in tokens]
    in_face, in_edge = COLORS["token"]
    tg_face, tg_edge = COLORS["loss"]

    def span(y, start, face, edge, label, size=6.8):
        xs = x0 + start * w
        _rounded_box(ax, xs + 0.03, y - h / 2, max_length * w - 0.06, h, 0.05, face, edge, lw=1.2)
        for k in range(max_length):
            _text(ax, xs + (k + 0.5) * w, y, shown[start + k], size=size, code=True)
        _text(ax, x0 - 0.08, y, label, size=7.5, ha="right", color=edge)

    def dims(y, stride):
        for yy, width, label, color in (
            (y + 0.2, stride, f"stride = {stride}", MUTED),
            (y, max_length, f"max_length = {max_length}", in_edge),
        ):
            _arrow(ax, (x0 + 0.03, yy), (x0 + width * w - 0.03, yy), style="<|-|>", lw=0.9, color=color)
            _text(ax, x0 + width * w + 0.06, yy, label, size=7, code=True, color=color, ha="left")

    # The token row with positions.
    y = 6.5
    _text(ax, 0.3, y, "토큰", size=8.5, ha="left", weight="bold")
    for k in range(n):
        _text(ax, x0 + (k + 0.5) * w, y + 0.27, str(k), size=6.5, color=MUTED, code=True)
    _token_row(ax, x0, y, shown, w, 0.3, "neutral", size=6.8)

    # (a) stride = max_length: no overlap; input and target of each sample.
    _text(
        ax, 0.3, 6.02, "(가) stride = max_length: 창이 겹치지 않음 (노트북의 설정)", size=9.5, weight="bold", ha="left"
    )
    dims(5.6, 4)
    starts_a = list(range(0, n - max_length, 4))  # the range GPTDatasetV1 walks
    y = 5.3
    for i, s in enumerate(starts_a):
        span(y, s, in_face, in_edge, f"입력 {i}")
        span(y - h - 0.05, s + 1, tg_face, tg_edge, f"타깃 {i}")
        y -= 2 * h + 0.22

    # (b) stride < max_length: overlapping windows, more samples (inputs only).
    _text(ax, 0.3, 2.95, "(나) stride가 max_length보다 작으면: 창이 겹치고 샘플이 늘어남 (입력만 표시)", size=9.5,
          weight="bold", ha="left")
    dims(2.53, 2)
    y = 2.23
    for i, s in enumerate(range(0, n - max_length, 2)):
        span(y, s, in_face, in_edge, f"입력 {i}", size=6.5)
        y -= h + 0.06
    _text(ax, x0, y + 0.02, "타깃은 (가)처럼 각 입력을 한 칸 오른쪽으로 민 창입니다.", size=7.5, color=MUTED, ha="left")

    # Right: what the data loader returns for (a).
    bx, bw = x0 + n * w + 0.3, 1.95
    _frame(ax, bx, 1.75, bx + bw, 6.15, "neutral", "(가)의 배치", ls="-")
    cx, cw = bx + bw / 2, 0.42
    ids_in = [[str(WINDOW_IDS[s + k]) for k in range(max_length)] for s in starts_a]
    ids_tg = [[str(WINDOW_IDS[s + 1 + k]) for k in range(max_length)] for s in starts_a]
    for name, top, matrix_top, ids, face, edge in (
        ("inputs", 5.63, 5.47, ids_in, in_face, in_edge),
        ("targets", 3.93, 3.77, ids_tg, tg_face, tg_edge),
    ):
        _text(ax, cx, top, f"{name} (b, max_length)", size=7, code=True, color=edge)
        _matrix(ax, cx - 2 * cw, matrix_top, np.zeros((3, 4)), cell=cw, texts=ids, text_size=5.8,
                colors=[[face] * 4] * 3, edge=edge, lw=0.6)
    _text(ax, cx, 2.3, "b = 3 (batch_size)", size=7, code=True, color=MUTED)
    _text(ax, cx, 2.03, "정수 토큰 ID", size=7, color=MUTED)
    _text(ax, bx + 0.05, 1.5,
          "targets[i, j]는\ninputs[i, j] 바로 다음\n토큰의 ID입니다.\n위치마다 다음 토큰을\n맞히도록 훈련합니다.", size=7.5,
          ha="left", va="top", linespacing=1.5)
    return fig


# --- ch03 -------------------------------------------------------------------------------------


def _softmax_rows(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax that treats -inf as weight 0."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _labels_left(ax, x, top, labels, cell, size=6.5, color=INK):
    """Row labels right-aligned at x, one per matrix row."""
    for i, lab in enumerate(labels):
        _text(ax, x, top - (i + 0.5) * cell, lab, size=size, ha="right", code=True, color=color)


def _labels_top(ax, left, y, labels, cell, size=6.5, color=INK):
    """Column labels rotated 90 degrees above a matrix, one per column."""
    for j, lab in enumerate(labels):
        _text(ax, left + (j + 0.5) * cell, y, lab, size=size, ha="center", va="bottom", code=True,
              color=color, rotation=90)


def qkv_causal_mask() -> Figure:
    """Ch03: x -> Q, K, V; attention scores; the causal mask (a triangle); softmax; context vectors."""
    tokens = [_shown(t) for t in EXAMPLE_TOKENS]
    T, d_in, d_out = len(tokens), 4, 3
    x = _values(T, d_in, 3)
    W_query, W_key, W_value = (0.9 * _values(d_in, d_out, s) for s in (11, 12, 13))
    Q, K, V = (np.einsum("td,de->te", x, W) for W in (W_query, W_key, W_value))
    scores = np.einsum("te,se->ts", Q, K)  # (T, T): query row t, key column s
    mask = np.triu(np.ones((T, T), dtype=bool), k=1)  # True above the diagonal: the future
    masked = np.where(mask, -np.inf, scores)
    weights = _softmax_rows(masked / math.sqrt(d_out))
    context = np.einsum("ts,se->te", weights, V)

    fig, ax = _canvas(
        12.9,
        7.3,
        "셀프 어텐션 한 번: x → Q, K, V → 점수 → 코잘 마스크 → softmax → 문맥 벡터",
        f"예: 토큰 T = {T}개, d_in = {d_in}, d_out = {d_out} (수는 예시 값). 행 = 쿼리(지금 토큰), 열 = 키(보는 토큰).",
    )
    c, cb = 0.18, 0.3  # cells of the small matrices and of the T x T matrices

    def heading(x, y, title, sub, kind="neutral"):
        _text(ax, x, y + 0.2, title, size=9, weight="bold", color=COLORS[kind][1])
        _text(ax, x, y, sub, size=7, color=MUTED, code=True)

    # x
    xl, xt = 1.15, 4.45
    heading(xl + d_in * c / 2, xt + 0.3, "입력 x", "(T, d_in)", "emb")
    _matrix(ax, xl, xt, x, cell=c, cmap="PuBu", vmin=-1.2, vmax=1.2)
    _labels_left(ax, xl - 0.06, xt, tokens, c)
    # Q, K, V
    ql = 3.05
    tops = {"Q": 5.75, "K": 3.95, "V": 2.15}
    names = {"Q": ("쿼리 Q", "W_query"), "K": ("키 K", "W_key"), "V": ("값 V", "W_value")}
    for key, mat in (("Q", Q), ("K", K), ("V", V)):
        top = tops[key]
        heading(ql + d_out * c / 2, top + 0.3, names[key][0], "(T, d_out)", "attn")
        _matrix(ax, ql, top, mat, cell=c, cmap="Oranges", vmin=-2, vmax=2)
        _arrow(
            ax, (xl + d_in * c + 0.08, xt - T * c / 2), (ql - 0.08, top - T * c / 2), color=COLORS["attn"][1], lw=1.0
        )
        _text(ax, (xl + d_in * c + ql) / 2 + 0.05, (xt - T * c / 2 + top - T * c / 2) / 2 + 0.13,
              names[key][1], size=7, code=True, color=COLORS["attn"][1])
    # scores, masked scores, weights
    sl, st = 4.85, 5.0
    col_gap = T * cb + 0.95
    lefts = [sl + k * col_gap for k in range(3)]
    fmt1 = [[_fmt(v, 1) for v in row] for row in scores]
    fmt_masked = [["-∞" if mask[i, j] else _fmt(scores[i, j], 1) for j in range(T)] for i in range(T)]
    fmt_w = [["0" if mask[i, j] else f"{weights[i, j]:.2f}" for j in range(T)] for i in range(T)]
    heading(lefts[0] + T * cb / 2, st + 0.95, "어텐션 점수", "Q @ K.T : (T, T)", "attn")
    _matrix(ax, lefts[0], st, scores, cell=cb, cmap="Oranges", vmin=-3, vmax=3, texts=fmt1, text_size=6)
    heading(lefts[1] + T * cb / 2, st + 0.95, "코잘 마스크", "masked_fill(mask, -inf)", "attn")
    _matrix(
        ax, lefts[1], st, scores, cell=cb, cmap="Oranges", vmin=-3, vmax=3, texts=fmt_masked, text_size=6, mask=mask
    )
    heading(lefts[2] + T * cb / 2, st + 0.95, "어텐션 가중치", "softmax(점수 / √d_k)", "attn")
    _matrix(ax, lefts[2], st, weights, cell=cb, cmap="Oranges", vmin=0, vmax=1, texts=fmt_w, text_size=6, mask=mask)
    for left in lefts:
        _labels_top(ax, left, st + 0.04, tokens, cb, size=5.8, color=MUTED)
    _labels_left(ax, lefts[0] - 0.06, st, tokens, cb, size=5.8, color=MUTED)
    # The triangle: outline the visible (lower) part of the masked matrix.
    tri = [(lefts[1], st)]
    for i in range(T):
        tri += [(lefts[1] + (i + 1) * cb, st - i * cb), (lefts[1] + (i + 1) * cb, st - (i + 1) * cb)]
    tri += [(lefts[1], st - T * cb), (lefts[1], st)]
    _line(ax, tri, color=COLORS["attn"][1], lw=1.6)
    # Q and K into the scores; arrows between the three T x T matrices.
    mid_y = st - T * cb / 2
    _arrow(ax, (ql + d_out * c + 0.08, tops["Q"] - T * c / 2), (lefts[0] - 0.55, mid_y + 0.15), lw=1.0)
    _arrow(ax, (ql + d_out * c + 0.08, tops["K"] - T * c / 2), (lefts[0] - 0.55, mid_y - 0.15), lw=1.0)
    for k in range(2):
        _arrow(ax, (lefts[k] + T * cb + 0.08, mid_y), (lefts[k + 1] - 0.1, mid_y), lw=1.2)
    _text(ax, lefts[1] - 0.5, mid_y - 0.2, "미래를\n가림", size=7, color=MUTED, linespacing=1.3)
    _text(ax, lefts[2] - 0.5, mid_y - 0.2, "행마다\nsoftmax", size=7, color=MUTED, linespacing=1.3)
    # Row sums and the legend under the matrices.
    for i in range(T):
        _text(ax, lefts[2] + T * cb + 0.08, st - (i + 0.5) * cb, f"합 {weights[i].sum():.0f}",
              size=6, color=MUTED, ha="left")
    ly = st - T * cb - 0.35
    ax.add_patch(Rectangle((lefts[1], ly - 0.08), 0.16, 0.16, facecolor=MASKED, edgecolor="white"))
    _text(ax, lefts[1] + 0.24, ly, "대각선 위 = 미래 토큰: 점수 -inf, 가중치 0", size=7, ha="left", color=MUTED)
    _text(ax, lefts[1], ly - 0.3, "각 행은 자기 자신과 앞의 토큰만 봅니다.", size=7, ha="left", color=MUTED)
    # Context = weights @ V
    cl, ct = lefts[2] + (T - d_out) * cb / 2, 2.1
    heading(cl + d_out * cb / 2, ct + 0.3, "문맥 벡터", "가중치 @ V : (T, d_out)", "emb")
    _matrix(ax, cl, ct, context, cell=cb, cmap="Greens", vmin=-2, vmax=2)
    _labels_left(ax, cl - 0.06, ct, tokens, cb, size=5.8, color=MUTED)
    _arrow(ax, (lefts[2] + T * cb / 2, st - T * cb - 0.08), (lefts[2] + T * cb / 2, ct + 0.62), lw=1.2)
    _arrow(
        ax,
        (ql + d_out * c + 0.08, tops["V"] - T * c / 2),
        (cl - 0.75, ct - T * cb / 2),
        lw=1.0,
        color=COLORS["attn"][1],
    )
    _text(ax, (ql + cl) / 2 + 0.2, tops["V"] - T * c / 2 - 0.02, "가중치로 V의 행들을 섞음", size=7, color=MUTED)
    _text(ax, 0.3, 0.3, "행 t의 문맥 벡터 = Σ_s 가중치[t, s] · V[s]. 마스크 덕분에 위치 t의 출력은 토큰 0…t에만 달려 있습니다.",
          size=7.5, ha="left", color=MUTED)
    return fig


def head_split_merge() -> Figure:
    """Ch03: (b, T, d_out) -> view (b, T, h, hd) -> transpose (b, h, T, hd) -> attention per head -> back."""
    T, h, hd = 4, 2, 3
    d_out = h * hd
    c = 0.24
    fig, ax = _canvas(
        12.0,
        6.6,
        "멀티 헤드 어텐션: 헤드로 나누고, 따로 계산하고, 다시 합치기",
        f"예: b = 1, T = {T}, d_out = {d_out}, 헤드 h = {h}, head_dim = d_out / h = {hd}. "
        "GPT-2 small: d_out = 768, h = 12, head_dim = 64.",
    )
    head_cmaps = ["Blues", "Oranges"]
    cms = [mpl.colormaps[name] for name in head_cmaps]
    vals = _values(T, d_out, 21)

    def col_colors(values, cols_head):
        """Colour each cell by its head (columns_head[j]) and value."""
        return [
            [cms[cols_head[j]](0.25 + 0.45 * (values[i, j] + 1) / 2) for j in range(values.shape[1])]
            for i in range(values.shape[0])
        ]

    heads_of_cols = [j // hd for j in range(d_out)]
    full_colors = col_colors(vals, heads_of_cols)

    def grid_split(left, top, colors, gap=0.1):
        """(T, h, hd): each row's head blocks side by side with a small gap."""
        for k in range(h):
            block = [row[k * hd : (k + 1) * hd] for row in colors]
            _matrix(ax, left + k * (hd * c + gap), top, np.zeros((T, hd)), cell=c, colors=block)
        return left + h * hd * c + (h - 1) * gap

    def heading(x, y, title, sub):
        _text(ax, x, y + 0.22, title, size=8.8, weight="bold")
        _text(ax, x, y, sub, size=7, color=MUTED, code=True)

    # Top row: split.
    top = 5.0
    x1 = 0.5
    heading(x1 + d_out * c / 2, top + 0.3, "① 쿼리 (b, T, d_out)", "queries = W_query(x)")
    _matrix(ax, x1, top, vals, cell=c, colors=full_colors)
    x2 = x1 + d_out * c + 1.2
    heading(x2 + (d_out * c + 0.1) / 2, top + 0.3, "② (b, T, h, head_dim)", ".view(b, T, h, head_dim)")
    end2 = grid_split(x2, top, full_colors)
    _arrow(ax, (x1 + d_out * c + 0.1, top - T * c / 2), (x2 - 0.1, top - T * c / 2))
    _text(ax, (x1 + d_out * c + x2) / 2, top - T * c / 2 - 0.22, "값은 그대로,\n모양만", size=6.8,
          color=MUTED, va="top", linespacing=1.3)
    x3 = end2 + 1.3
    heading(x3 + hd * c / 2 + 0.3, top + 0.3, "③ (b, h, T, head_dim)", ".transpose(1, 2)")
    per_head_tops = [top, top - T * c - 0.35]
    for k in range(h):
        block = [row[k * hd : (k + 1) * hd] for row in full_colors]
        _matrix(ax, x3, per_head_tops[k], np.zeros((T, hd)), cell=c, colors=block)
        _text(ax, x3 + hd * c + 0.1, per_head_tops[k] - T * c / 2, f"헤드 {k}", size=7.5, ha="left",
              color=COLORS["token" if k == 0 else "attn"][1])
    _arrow(ax, (end2 + 0.1, top - T * c / 2), (x3 - 0.1, top - T * c / 2 - 0.2))
    _text(ax, x3 + hd * c / 2 + 0.3, top + 0.07, "keys, values도 똑같이", size=6.5, color=MUTED)
    _text(ax, (end2 + x3) / 2, top - T * c / 2 - 0.42, "헤드 축을\n앞으로", size=6.8, color=MUTED,
          va="top", linespacing=1.3)
    # Attention per head.
    x4 = x3 + hd * c + 1.35
    heading(x4 + 1.0, top + 0.3, "④ 헤드마다 따로 어텐션", "softmax(Q Kᵀ / √head_dim) V")
    mask = np.triu(np.ones((T, T), dtype=bool), k=1)
    for k in range(h):
        y = per_head_tops[k]
        w = _softmax_rows(np.where(mask, -np.inf, _values(T, T, 30 + k)))
        _matrix(ax, x4, y, w, cell=c, cmap=head_cmaps[k], vmin=0, vmax=1, mask=mask)
        _text(ax, x4 + T * c + 0.25, y - T * c / 2, "@ V", size=7.5, code=True)
        ctx_vals = _values(T, hd, 40 + k)
        ctx_colors = [[cms[k](0.35 + 0.5 * (v + 1) / 2) for v in row] for row in ctx_vals]
        _matrix(ax, x4 + T * c + 0.55, y, np.zeros((T, hd)), cell=c, colors=ctx_colors)
        _arrow(ax, (x3 + hd * c + 0.55, y - T * c / 2), (x4 - 0.1, y - T * c / 2), lw=1.0)
    _text(ax, x4 + T * c / 2, per_head_tops[1] - T * c - 0.2, "가중치 (T, T)", size=6.8, color=MUTED)
    _text(
        ax, x4 + T * c + 0.55 + hd * c / 2, per_head_tops[1] - T * c - 0.2, "문맥 (T, head_dim)", size=6.8, color=MUTED
    )
    _text(ax, x4 + 2.6, top - 0.95, "헤드들은 같은 토큰을\n서로 다른 부분 공간\n(head_dim 차원)에서\n봅니다.", size=7,
          color=MUTED, ha="left", linespacing=1.4)

    # Bottom row: merge.
    ctx_all = np.concatenate([_values(T, hd, 40 + k) for k in range(h)], axis=1)  # (T, d_out)
    ctx_colors = [[cms[heads_of_cols[j]](0.35 + 0.5 * (ctx_all[i, j] + 1) / 2) for j in range(d_out)] for i in range(T)]
    bot = 1.65
    ctx_right = x4 + T * c + 0.55 + hd * c
    _line(
        ax,
        [
            (ctx_right + 0.1, per_head_tops[1] - T * c / 2),
            (ctx_right + 0.4, per_head_tops[1] - T * c / 2),
            (ctx_right + 0.4, bot + 0.72),
            (0.25, bot + 0.72),
            (0.25, bot - T * c / 2),
        ],
        lw=1.0,
    )
    _arrow(ax, (0.25, bot - T * c / 2), (0.45, bot - T * c / 2), lw=1.0)
    y5 = bot
    x5 = 0.5
    heading(x5 + (d_out * c + 0.1) / 2, y5 + 0.3, "⑤ (b, T, h, head_dim)", ".transpose(1, 2)")
    end5 = grid_split(x5, y5, ctx_colors)
    x6 = end5 + 1.5
    heading(x6 + d_out * c / 2, y5 + 0.3, "⑥ 헤드 이어 붙이기 (b, T, d_out)", ".contiguous().view(b, T, d_out)")
    _matrix(ax, x6, y5, ctx_all, cell=c, colors=ctx_colors)
    _arrow(ax, (end5 + 0.1, y5 - T * c / 2), (x6 - 0.1, y5 - T * c / 2))
    x7 = x6 + d_out * c + 1.5
    mixed = _values(T, d_out, 55)
    heading(x7 + d_out * c / 2, y5 + 0.3, "⑦ 출력 (b, T, d_out)", "out_proj: nn.Linear(d_out, d_out)")
    _matrix(ax, x7, y5, mixed, cell=c, cmap="Purples", vmin=-1.4, vmax=1.4)
    _arrow(ax, (x6 + d_out * c + 0.1, y5 - T * c / 2), (x7 - 0.1, y5 - T * c / 2), label="out_proj", label_side="above")
    _text(ax, x7 + d_out * c + 0.25, y5 - T * c / 2, "헤드들의 결과를\n한 번 더 섞음", size=7, color=MUTED,
          ha="left", linespacing=1.4)
    _text(
        ax,
        0.3,
        0.35,
        "입력과 출력의 모양이 같습니다 (b, T, d_out). view와 transpose는 수를 바꾸지 않고, "
        "어느 축이 헤드인지만 바꿉니다.",
        size=7.5,
        ha="left",
        color=MUTED,
    )
    return fig


# --- ch04 -------------------------------------------------------------------------------------


def _plus(ax, x, y, r=0.13, color=INK):
    """A circled plus: where a shortcut connection adds back its input."""
    ax.add_patch(mpl.patches.Circle((x, y), r, facecolor="white", edgecolor=color, linewidth=1.2))
    _line(ax, [(x - r * 0.6, y), (x + r * 0.6, y)], color=color, lw=1.2)
    _line(ax, [(x, y - r * 0.6), (x, y + r * 0.6)], color=color, lw=1.2)


def gpt_block() -> Figure:
    """Ch04: the GPT model, from token IDs through N transformer blocks to the logits."""
    fig, ax = _canvas(
        8.8,
        12.2,
        "GPT 모델 (GPTModel)의 정방향 계산",
        "위에서 아래로 읽습니다. 오른쪽은 GPT-2 small(124M)에서의 텐서 모양입니다.",
    )
    cx, bw = 3.55, 3.1  # centre column and box width
    sx = 6.35  # shape column
    accent = COLORS["attn"][1]

    def shape(y, text, note=None):
        _text(ax, sx, y + (0.11 if note else 0), text, size=7.5, code=True, color=MUTED, ha="left")
        if note:
            _text(ax, sx, y - 0.14, note, size=7, color=MUTED, ha="left")

    def layer(y, title, code, kind, h=0.4):
        face, edge = COLORS[kind]
        _rounded_box(ax, cx - bw / 2, y - h / 2, bw, h, 0.06, face, edge, lw=1.2)
        _text(ax, cx - bw / 2 + 0.15, y, title, size=8.5, ha="left")
        _text(ax, cx + bw / 2 - 0.12, y, code, size=7, ha="right", code=True, color=MUTED)

    def down(y0, y1):
        _arrow(ax, (cx, y0), (cx, y1))

    # Embeddings.
    y_in = 12.2 - 1.08
    _box(ax, cx, y_in, bw, 0.48, "토큰 ID", "token", sub="in_idx")
    shape(y_in, "(b, T)")
    y_emb = y_in - 0.9
    _box(ax, cx - 0.85, y_emb, 1.5, 0.48, "토큰 임베딩", "emb", sub="tok_emb")
    _box(ax, cx + 0.85, y_emb, 1.5, 0.48, "위치 임베딩", "pos", sub="pos_emb")
    _arrow(ax, (cx - 0.4, y_in - 0.24), (cx - 0.85, y_emb + 0.24))
    _text(ax, cx + 0.85, y_in - 0.36, "arange(T)", size=7, code=True, color=MUTED)
    _arrow(ax, (cx + 0.85, y_in - 0.46), (cx + 0.85, y_emb + 0.24), color=MUTED)
    shape(y_emb, "(b, T, 768) + (T, 768)", "위치 임베딩은 배치 방향으로 브로드캐스팅")
    y_add = y_emb - 0.65
    _plus(ax, cx, y_add)
    _arrow(ax, (cx - 0.85, y_emb - 0.24), (cx - 0.11, y_add + 0.08))
    _arrow(ax, (cx + 0.85, y_emb - 0.24), (cx + 0.11, y_add + 0.08))
    y_drop = y_add - 0.6
    down(y_add - 0.13, y_drop + 0.2)
    layer(y_drop, "드롭아웃", "drop_emb", "neutral")
    shape(y_drop, "(b, T, 768)")

    # The transformer block, drawn once; faint frames behind it say it repeats.
    top = y_drop - 0.6
    split1 = top - 0.42
    half = 0.42 + 2 * 0.62 + 0.55  # split point to the plus of one half
    split2 = split1 - half - 0.35
    bottom = split2 - half - 0.3
    for k in (2, 1):
        _frame(ax, 0.55 + 0.07 * k, bottom - 0.07 * k, 6.1 + 0.07 * k, top - 0.07 * k, "attn", ls="-", fill="white")
    _frame(ax, 0.55, bottom, 6.1, top, "attn", "trf_blocks: TransformerBlock × n_layers (12)", ls="-", fill="#fffaf6")
    down(y_drop - 0.2, top - 0.42)
    halves = [
        (
            split1,
            [
                ("층 정규화", "norm1: LayerNorm", "norm"),
                ("멀티 헤드 어텐션 (코잘)", "att: MultiHeadAttention", "attn"),
                ("드롭아웃", "drop_shortcut", "neutral"),
            ],
            "x = x + 어텐션 경로",
        ),
        (
            split2,
            [
                ("층 정규화", "norm2: LayerNorm", "norm"),
                ("피드 포워드", "ff: FeedForward", "ff"),
                ("드롭아웃", "drop_shortcut", "neutral"),
            ],
            "x = x + 피드 포워드 경로",
        ),
    ]
    centres = {}
    for split_y, layers, formula in halves:
        ax.add_patch(mpl.patches.Circle((cx, split_y), 0.04, color=accent))
        y = split_y - 0.42
        down(split_y, y + 0.2)
        for k, (title, code, kind) in enumerate(layers):
            layer(y, title, code, kind)
            centres[code] = y
            if k < len(layers) - 1:
                down(y - 0.2, y - 0.42)
                y -= 0.62
        y_plus = y - 0.55
        down(y - 0.2, y_plus + 0.13)
        _plus(ax, cx, y_plus)
        left = cx - bw / 2 - 0.4
        _line(ax, [(cx, split_y), (left, split_y), (left, y_plus)], color=accent, lw=1.3)
        _arrow(ax, (left, y_plus), (cx - 0.13, y_plus), color=accent, lw=1.3)
        _text(ax, left - 0.1, (split_y + y_plus) / 2, "숏컷\n연결", size=7.5, color=accent, ha="right", linespacing=1.3)
        shape(y_plus, formula)
        centres[formula] = y_plus
    shape(centres["att: MultiHeadAttention"], "(b, T, 768) → (b, T, 768)", "헤드 12개 × head_dim 64")
    shape(centres["ff: FeedForward"], "768 → 3072 → GELU → 768", "토큰마다 따로 계산")
    down(centres["x = x + 어텐션 경로"] - 0.13, halves[1][0])
    shape(top - 0.2, "(b, T, 768)", "블록의 입력과 출력은 같은 모양")

    # After the blocks.
    y_fn = bottom - 0.55
    down(centres["x = x + 피드 포워드 경로"] - 0.13, y_fn + 0.2)
    layer(y_fn, "층 정규화", "final_norm", "norm")
    shape(y_fn, "(b, T, 768)")
    y_out = y_fn - 0.85
    down(y_fn - 0.2, y_out + 0.25)
    _box(ax, cx, y_out, bw, 0.5, "출력 층", "out", sub="out_head: nn.Linear(768, 50257, bias=False)", sub_size=6.8)
    shape(y_out, "(b, T, 768) → (b, T, 50257)")
    y_log = y_out - 0.88
    down(y_out - 0.25, y_log + 0.2)
    layer(y_log, "로짓", "logits", "out")
    shape(y_log, "(b, T, 50257)", "위치마다 어휘사전 전체에 대한 다음 토큰 점수")
    return fig


# --- ch05 -------------------------------------------------------------------------------------


def training_loop() -> Figure:
    """Ch05: one training step as a cycle (train_model_simple), with an evaluation every eval_freq steps."""
    fig, ax = _canvas(
        11.6,
        7.0,
        "훈련 루프 (train_model_simple)",
        "배치 하나마다 한 바퀴 돕니다. 상자 안의 코드는 buildllm.training의 순서 그대로입니다.",
    )
    bw, bh = 2.7, 0.78
    lx, rx = 1.75, 5.8
    rows = [5.05, 3.55, 2.05]
    nodes = [  # (title, code, kind, position): down the left column, up the right column
        ("① 배치 꺼내기", "for input_batch, target_batch in train_loader", "token", (lx, rows[0])),
        ("② 그레이디언트 비우기", "optimizer.zero_grad()", "neutral", (lx, rows[1])),
        ("③ 정방향 계산", "logits = model(input_batch)", "emb", (lx, rows[2])),
        ("④ 손실 (크로스 엔트로피)", "loss = calc_loss_batch(...)", "loss", (rx, rows[2])),
        ("⑤ 역전파: 그레이디언트 계산", "loss.backward()", "loss", (rx, rows[1])),
        ("⑥ 파라미터 갱신", "optimizer.step()", "attn", (rx, rows[0])),
    ]
    for title, code, kind, (x, y) in nodes:
        _box(ax, x, y, bw, bh, title, kind, sub=code, size=9, sub_size=6.2)
    for k in range(2):
        _arrow(ax, (lx, rows[k] - bh / 2), (lx, rows[k + 1] + bh / 2))
        _arrow(ax, (rx, rows[k + 1] + bh / 2), (rx, rows[k] - bh / 2))
    _arrow(ax, (lx + bw / 2, rows[2]), (rx - bw / 2, rows[2]))
    # Back to the next batch.
    _line(ax, [(rx, rows[0] + bh / 2), (rx, rows[0] + 0.75), (lx, rows[0] + 0.75)])
    _arrow(ax, (lx, rows[0] + 0.75), (lx, rows[0] + bh / 2))
    _text(ax, (lx + rx) / 2, rows[0] + 0.9, "다음 배치", size=8, color=MUTED)
    _text(ax, (lx + rx) / 2, rows[1] + 0.15, "한 스텝", size=11, weight="bold")
    _text(ax, (lx + rx) / 2, rows[1] - 0.15, "global_step += 1", size=7.5, code=True, color=MUTED)

    # Evaluation branch after the update.
    ex, ew = 9.75, 3.4
    _box(
        ax,
        ex,
        rows[0],
        ew,
        0.78,
        "global_step % eval_freq == 0 ?",
        "neutral",
        code=True,
        size=8.5,
        sub="eval_freq 스텝마다 한 번",
        sub_code=False,
        sub_size=7.2,
    )
    _arrow(ax, (rx + bw / 2, rows[0]), (ex - ew / 2, rows[0]), color=MUTED, ls="--", lw=1.1)
    _arrow(ax, (ex, rows[0] - 0.39), (ex, 4.15), label="예", label_code=False, label_size=8)
    _box(ax, ex, 3.3, ew, 1.6, "", "out")
    _text(ax, ex, 3.85, "평가  evaluate_model", size=9.5, weight="bold")
    for k, line in enumerate(
        [
            "model.eval(),  torch.no_grad()",
            "훈련·검증 손실: eval_iter 배치씩 평균",
            "train_losses, val_losses에 기록",
            "model.train()으로 돌아감",
        ]
    ):
        _text(ax, ex, 3.55 - 0.25 * k, line, size=7.2, code=k == 0, color=MUTED if k == 0 else INK)
    _text(ax, (rx + bw / 2 + ex - ew / 2) / 2, rows[0] - 0.2, "아니오면\n바로 ①로", size=7, color=MUTED,
          va="top", linespacing=1.3)
    # Epochs.
    _box(ax, ex, 1.45, ew, 1.0, "", "neutral")
    _text(ax, ex, 1.72, "에포크가 끝날 때마다", size=9, weight="bold")
    _text(ax, ex, 1.45, "generate_and_print_sample", size=7.2, code=True)
    _text(ax, ex, 1.2, "같은 시작 문맥으로 글을 생성해 봄", size=7.2, color=MUTED)
    _frame(ax, 0.25, 1.3, 7.35, 6.2, "neutral", ls=":")
    _text(
        ax, 0.45, 1.5, "train_loader를 다 돌면 한 에포크: 이 전체를 num_epochs번 반복", size=7.5, color=MUTED, ha="left"
    )
    _text(
        ax,
        0.3,
        0.6,
        "②는 ⑤보다 먼저 와야 합니다. PyTorch는 .grad에 그레이디언트를 더해 쌓기 때문에, "
        "비우지 않으면 지난 배치의 그레이디언트가 섞입니다.",
        size=7.5,
        color=MUTED,
        ha="left",
    )
    return fig


# --- ch06 -------------------------------------------------------------------------------------


def classification_last_token() -> Figure:
    """Ch06: why the last token's output row gives the class logits; out_head replaced by a 2-way head."""
    tokens = [_shown(t) for t in SPAM_TOKENS]
    T, d = len(tokens), 6
    fig, ax = _canvas(
        12.0,
        6.65,
        "분류 미세 튜닝: 왜 마지막 토큰의 출력을 쓰는가",
        f'예: "{SPAM_TEXT}" (T = {T}). 코잘 어텐션에서는 마지막 위치만 메시지 전체를 봅니다. (색과 수는 예시 값)',
    )
    c = 0.3
    top = 4.8
    mask = np.triu(np.ones((T, T), dtype=bool), k=1)
    seen = np.tril(np.ones((T, T)))
    # (a) who sees whom
    lx = 1.45
    _text(ax, lx + T * c / 2, top + 0.95, "(가) 위치마다 볼 수 있는 토큰", size=9.5, weight="bold")
    colors = [[COLORS["token"][1] if i == T - 1 else "#a9c6ea" for j in range(T)] for i in range(T)]
    _matrix(ax, lx, top, seen, cell=c, mask=mask, colors=colors)
    _labels_left(ax, lx - 0.08, top, tokens, c, size=7)
    _labels_top(ax, lx, top + 0.05, tokens, c, size=6.5, color=MUTED)
    _text(ax, lx - 0.08, top - T * c - 0.2, "쿼리(행)", size=7, color=MUTED, ha="right")
    _text(ax, lx + T * c / 2, top - T * c - 0.2, "키(열) = 볼 수 있는 토큰", size=7, color=MUTED)
    last_y = top - (T - 0.5) * c
    ax.add_patch(
        Rectangle(
            (lx - 0.02, top - T * c - 0.02),
            T * c + 0.04,
            c + 0.04,
            facecolor="none",
            edgecolor=COLORS["loss"][1],
            linewidth=1.8,
        )
    )
    _text(ax, lx + T * c / 2, top - T * c - 0.5, "마지막 행만 8개 토큰을 모두 봄", size=8, color=COLORS["loss"][1])
    _text(ax, lx + T * c / 2, top - T * c - 0.75, "앞 위치들은 뒤의 토큰(회색)을 볼 수 없음", size=7.5, color=MUTED)

    # (b) the model's outputs, one row per token, aligned with (a)
    hx = lx + T * c + 1.55
    _step_arrow(ax, lx + T * c, hx, top - T * c / 2, "GPTModel", "trf_blocks ·\nfinal_norm", linespacing=1.3)
    _text(ax, hx + d * c / 2, top + 0.95, "(나) 위치마다 출력 벡터", size=9.5, weight="bold")
    _text(ax, hx + d * c / 2, top + 0.62, "(b, T, 768)", size=7, code=True, color=MUTED)
    hidden = _values(T, d, 61)
    _matrix(ax, hx, top, hidden, cell=c, cmap="PuBu", vmin=-1.4, vmax=1.4)
    ox = hx + d * c + 1.7
    _step_arrow(ax, hx + d * c, ox, top - T * c / 2, "out_head", "nn.Linear(768, 2)")
    logits = 0.9 * _values(T, 2, 62)
    logits[-1] = [-1.3, 2.1]  # the example message is spam: class 1 wins at the last position
    _text(ax, ox + c, top + 0.95, "(다) 로짓", size=9.5, weight="bold")
    _text(ax, ox + c, top + 0.62, "(b, T, 2)", size=7, code=True, color=MUTED)
    _labels_top(ax, ox, top + 0.05, ["ham 0", "spam 1"], c, size=6.5, color=MUTED)
    _matrix(ax, ox, top, logits, cell=c, cmap="Purples", vmin=-2.5, vmax=2.5,
            texts=[[_fmt(v, 1) for v in row] for row in logits], text_size=6)
    ax.add_patch(
        Rectangle(
            (hx - 0.02, top - T * c - 0.02),
            (ox + 2 * c) - hx + 0.04,
            c + 0.04,
            facecolor="none",
            edgecolor=COLORS["loss"][1],
            linewidth=1.8,
            linestyle="--",
        )
    )
    # the last row out
    fx = ox + 2 * c + 1.35
    _step_arrow(ax, ox + 2 * c, fx, last_y, "[:, -1, :]", color=COLORS["loss"][1])
    _text(ax, fx + c, last_y + 0.55, "클래스 로짓 (b, 2)", size=8.5, weight="bold")
    _matrix(ax, fx, last_y + c / 2, logits[-1:], cell=c, cmap="Purples", vmin=-2.5, vmax=2.5,
            texts=[[_fmt(v, 1) for v in logits[-1]]], text_size=6)
    _arrow(ax, (fx + c, last_y - c / 2 - 0.05), (fx + c, last_y - 0.75), label="argmax", label_size=7)
    _box(ax, fx + c, last_y - 1.0, 1.1, 0.4, "1 = 스팸", "loss", size=8.5)
    _text(ax, fx + c - 0.7, last_y - 1.0, "훈련 때는 이 (b, 2)와\n레이블로 cross_entropy", size=7,
          color=MUTED, ha="right", linespacing=1.35)

    # The head swap.
    y = 0.72
    _text(ax, 0.35, y + 0.45, "출력 층 바꾸기", size=9.5, weight="bold", ha="left")
    _box(
        ax,
        3.15,
        y,
        3.3,
        0.5,
        "사전 훈련: 다음 토큰 50,257개",
        "frozen",
        sub="out_head = nn.Linear(768, 50257)",
        size=8,
        sub_size=6.5,
    )
    _line(ax, [(1.5, y - 0.25), (4.8, y + 0.25)], color=COLORS["loss"][1], lw=1.4)
    _arrow(ax, (4.9, y), (5.7, y))
    _box(
        ax,
        7.45,
        y,
        3.3,
        0.5,
        "분류: 클래스 2개 (새로 만들고 훈련)",
        "out",
        sub="out_head = nn.Linear(768, 2)",
        size=8,
        sub_size=6.5,
    )
    _text(ax, 9.3, y, "나머지는 동결하고, 마지막 트랜스포머\n블록과 final_norm, out_head만 훈련", size=7.2, color=MUTED,
          ha="left", linespacing=1.35)
    return fig


# --- ch07 -------------------------------------------------------------------------------------


def instruction_masking() -> Figure:
    """Ch07: padding, inputs/targets shifted by one, -100 where the loss ignores a target (custom_collate_fn)."""
    eot = END_OF_TEXT_ID
    fig, ax = _canvas(
        12.0,
        7.6,
        "지시 미세 튜닝의 배치: 패딩, 한 칸 민 타깃, -100 마스킹",
        "custom_collate_fn이 배치마다 하는 일. 샘플 A는 토큰 7개, B는 5개입니다 (P: 프롬프트 토큰, R: 응답 토큰).",
    )
    samples = {"A": (["P1", "P2", "P3", "P4", "R1", "R2", "R3"], 4), "B": (["P1", "P2", "P3", "R1", "R2"], 3)}
    L = max(len(ids) for ids, _ in samples.values()) + 1  # pad to the longest + 1
    w, h = 0.5, 0.32
    starts = {"A": 3.1, "B": 3.1 + L * w + 0.45}

    def kind_of(label):
        if label == IGNORE_INDEX:
            return "ignored"
        if label == eot:
            return "eot"
        return "prompt" if label.startswith("P") else "response"

    fills = {
        "prompt": COLORS["token"],
        "response": COLORS["emb"],
        "eot": COLORS["neutral"],
        "ignored": ("#ffffff", "#9aa5b1"),
    }

    def row(y, key, labels, highlight=None):
        x0 = starts[key]
        for k, lab in enumerate(labels):
            face, edge = fills[kind_of(lab)]
            ls = ":" if lab == IGNORE_INDEX else "-"
            _rounded_box(ax, x0 + k * w + 0.03, y - h / 2, w - 0.06, h, 0.04, face, edge, lw=1.0, ls=ls)
            _text(ax, x0 + (k + 0.5) * w, y, str(lab), size=6.5 if lab == eot else 7, code=True,
                  color=MUTED if lab == IGNORE_INDEX else INK)
            if highlight is not None and k == highlight:
                ax.add_patch(
                    Rectangle(
                        (x0 + k * w, y - h / 2 - 0.04),
                        w,
                        h + 0.08,
                        facecolor="none",
                        edgecolor=COLORS["loss"][1],
                        linewidth=1.6,
                    )
                )

    steps = []
    padded = {key: ids + [eot] * (L - len(ids)) for key, (ids, _) in samples.items()}
    inputs = {key: padded[key][:-1] for key in samples}
    shifted = {key: padded[key][1:] for key in samples}
    targets = {
        key: [t if k < len(samples[key][0]) else IGNORE_INDEX for k, t in enumerate(shifted[key])] for key in samples
    }  # keep target len(ids)-1 (the first end-of-text), ignore later padding
    prompt_masked = {
        key: [IGNORE_INDEX if k < samples[key][1] - 1 else t for k, t in enumerate(targets[key])] for key in samples
    }
    steps = [
        ("① 토큰 ID 목록", "길이가 제각각", {k: samples[k][0] for k in samples}, None),
        ("② 패딩", f"가장 긴 길이 + 1 = {L}까지 {eot}로", padded, None),
        ("③ 입력", "앞의 L - 1개가 inputs", inputs, None),
        ("④ 타깃", "한 칸 민 L - 1개가 targets", shifted, None),
        ("⑤ 타깃 마스킹", "첫 50256 뒤의 패딩을 -100으로", targets, "first"),
        ("⑥ (선택) 프롬프트도 마스킹", "연습문제 7.2: 프롬프트 타깃도 -100으로", prompt_masked, "first"),
    ]
    y = 6.2
    for key, x0 in starts.items():
        _text(ax, x0 + L * w / 2, y + 0.45, f"샘플 {key}", size=9, weight="bold")
        for k in range(L):
            _text(ax, x0 + (k + 0.5) * w, y + 0.22, str(k), size=6, color=MUTED, code=True)
    for title, sub, rows, hl in steps:
        _text(ax, 0.35, y + 0.08, title, size=8.8, weight="bold", ha="left")
        _text(ax, 0.35, y - 0.15, sub, size=7, color=MUTED, ha="left")
        for key in samples:
            highlight = len(samples[key][0]) - 1 if hl == "first" else None
            row(y, key, rows[key], highlight)
        y -= 0.74
    # Shift arrows between inputs and targets for sample B.
    x0 = starts["B"]
    y_in, y_tg = 6.2 - 2 * 0.74, 6.2 - 3 * 0.74
    for k in range(1, 3):
        _arrow(
            ax,
            (x0 + (k + 0.5) * w, y_in - h / 2 - 0.02),
            (x0 + (k - 0.5) * w, y_tg + h / 2 + 0.02),
            color=MUTED,
            lw=0.8,
        )
    _text(ax, x0 + 3.2 * w, (y_in + y_tg) / 2, "한 칸 민 것", size=7, color=MUTED, ha="left")
    # Notes and legend.
    ny = 1.45
    _text(
        ax,
        0.35,
        ny,
        "손실: F.cross_entropy(..., ignore_index=-100)는 -100인 위치를 평균에서 뺍니다. "
        "빨간 테두리의 첫 50256은 남겨서, 응답 뒤에 멈추는 법을 배웁니다.",
        size=7.6,
        ha="left",
    )
    _text(
        ax,
        0.35,
        ny - 0.3,
        "⑥은 책의 기본값이 아닙니다(custom_collate_fn에 (토큰 ID, 프롬프트 길이)를 주면 켜짐). "
        "기본 훈련은 ⑤까지입니다.",
        size=7.6,
        ha="left",
        color=MUTED,
    )
    lx = 0.35
    for label, (face, edge), ls, code, width in (
        ("프롬프트 토큰", fills["prompt"], "-", False, 1.6),
        ("응답 토큰", fills["response"], "-", False, 1.4),
        (f"{eot} = <|endoftext|> (끝 토큰, 패딩)", fills["eot"], "-", True, 3.6),
        ("-100: 손실에서 무시 (ignore_index)", fills["ignored"], ":", False, 3.0),
    ):
        _rounded_box(ax, lx, 0.45, 0.3, 0.2, 0.03, face, edge, lw=1.0, ls=ls)
        _text(ax, lx + 0.4, 0.55, label, size=7.5, ha="left", code=code)
        lx += width
    return fig


# --- appendix E -------------------------------------------------------------------------------


def lora_update() -> Figure:
    """Appendix E: a frozen weight W plus the low-rank update (alpha / r) * A @ B, with B starting at zero."""
    d_in = d_out = 8
    r = 2
    c = 0.18
    fig, ax = _canvas(
        11.6,
        7.3,
        "LoRA: 동결된 W 옆에 작은 A, B를 붙여 훈련",
        f"그림: d_in = d_out = {d_in}, rank r = {r}. GPT-2 small의 W_query 하나라면 d_in = d_out = 768, r = 16입니다.",
    )
    x_vals = _values(1, d_in, 71)
    W = _values(d_in, d_out, 72)
    A = 0.8 * _values(d_in, r, 73)
    frozen, train = COLORS["frozen"][1], COLORS["train"][1]

    def heading(x, y_top, title, sub, color=INK):
        _text(ax, x, y_top + 0.34, title, size=9, weight="bold", color=color)
        _text(ax, x, y_top + 0.13, sub, size=7, code=True, color=MUTED)

    # x
    xl, y_mid = 0.55, 3.95
    heading(xl + d_in * c / 2, y_mid + c / 2, "입력 x", "(…, d_in)")
    _matrix(ax, xl, y_mid + c / 2, x_vals, cell=c, cmap="PuBu", vmin=-1.3, vmax=1.3)
    split_x = xl + d_in * c + 0.35
    _line(ax, [(xl + d_in * c + 0.05, y_mid), (split_x, y_mid)])
    def branch(left, top, matrix, title, sub, kind, cmap, limit):
        """One path from x: a matrix at (left, top) with its heading, and the line from the split to it."""
        mid = top - d_in * c / 2
        heading(left + matrix.shape[1] * c / 2, top, title, sub, kind)
        _matrix(ax, left, top, matrix, cell=c, cmap=cmap, vmin=-limit, vmax=limit)
        _line(ax, [(split_x, y_mid), (split_x, mid)])
        _arrow(ax, (split_x, mid), (left - 0.08, mid))
        return mid

    wl, wt = 3.0, 6.0  # frozen path (top)
    w_mid = branch(wl, wt, W, "W: 사전 훈련된 가중치 (동결)", "(d_in, d_out), requires_grad=False", frozen, "Greys", 2.2)
    al, at = 3.0, 3.4  # LoRA path (bottom)
    a_mid = branch(al, at, A, "A (훈련)", "(d_in, r)", train, "YlOrBr", 1.6)
    bl = al + r * c + 1.0
    bt = a_mid + r * c / 2
    _arrow(ax, (al + r * c + 0.08, a_mid), (bl - 0.08, a_mid))
    _text(ax, (al + r * c + bl) / 2, a_mid - 0.2, "x A: (…, r)", size=6.8, code=True, color=MUTED)
    heading(bl + d_out * c / 2, bt, "B (훈련, 0에서 시작)", "(r, d_out)", train)
    _matrix(ax, bl, bt, np.zeros((r, d_out)), cell=c, colors=[["#fffaf0"] * d_out] * r,
            texts=[["0"] * d_out] * r, edge=train, lw=0.6, text_size=5.5)
    _text(ax, bl + d_out * c / 2, bt - r * c - 0.25, "A @ B: W와 같은 (d_in, d_out) 모양,\n랭크는 r 이하",
          size=7, color=MUTED, va="top", linespacing=1.35)
    sx = bl + d_out * c + 0.3
    _text(ax, sx, a_mid + 0.1, "× alpha / r", size=8.5, code=True, ha="left")
    _text(ax, sx, a_mid - 0.15, "(scale)", size=6.8, code=True, color=MUTED, ha="left")
    # Sum and output.
    px = 8.2
    _plus(ax, px, y_mid, r=0.16)
    _text(ax, wl + d_out * c + 0.15, w_mid, "x W", size=8.5, code=True, ha="left")
    _arrow(ax, (wl + d_out * c + 0.6, w_mid), (px - 0.08, y_mid + 0.15))
    _arrow(ax, (sx + 1.05, a_mid), (px - 0.08, y_mid - 0.15))
    hx = px + 0.45
    _arrow(ax, (px + 0.17, y_mid), (hx - 0.08, y_mid))
    heading(hx + d_out * c / 2, y_mid + c / 2, "출력", "(…, d_out)")
    _matrix(ax, hx, y_mid + c / 2, x_vals @ W / 3, cell=c, cmap="Purples", vmin=-1.3, vmax=1.3)
    _text(ax, hx + d_out * c / 2, y_mid - 0.4, "x W + (alpha / r) · x A B", size=8, code=True)
    # Notes.
    full, lora_params = 768 * 768, 16 * (768 + 768)
    ny = 1.3
    _text(ax, 0.35, ny + 0.3, "처음에는 B = 0이라 A B = 0입니다. LoRA를 붙인 직후의 모델은 원래 모델과 똑같이 계산합니다.",
          size=7.8, ha="left")
    _text(
        ax,
        0.35,
        ny,
        f"훈련하는 수: 768 × 768 = {full:,}개 대신 16 × (768 + 768) = {lora_params:,}개 "
        f"({100 * lora_params / full:.1f}%). 훈련 뒤에는 W + (alpha / r)·A B 하나로 합칠 수 있습니다.",
        size=7.8,
        ha="left",
    )
    _text(
        ax,
        0.35,
        ny - 0.3,
        "코드: LoRALayer(A, B, alpha, rank), LinearWithLoRA(linear + lora). nn.Linear는 W를 "
        "(d_out, d_in) 모양으로 저장하고 x Wᵀ를 계산합니다.",
        size=7.3,
        ha="left",
        color=MUTED,
    )
    return fig


# --- appendix A -------------------------------------------------------------------------------


def _bars(ax, x0, y0, values, width=0.16, scale=0.28, color="#c53030"):
    """A tiny bar chart with its baseline at y0 (bars go up for positive values, down for negative)."""
    ax.plot([x0 - 0.04, x0 + len(values) * width + 0.04], [y0, y0], color=MUTED, lw=0.7)
    for k, v in enumerate(values):
        ax.add_patch(
            Rectangle(
                (x0 + k * width + 0.02, min(y0, y0 + v * scale)),
                width - 0.04,
                abs(v) * scale,
                facecolor=color,
                edgecolor="none",
            )
        )


def ddp_gradient_averaging() -> Figure:
    """Appendix A: DDP. N processes, each with a model copy and its data shard; all-reduce averages gradients."""
    N = 3
    fig, ax = _canvas(
        11.6,
        8.0,
        "DDP: 데이터는 나누고, 그레이디언트는 평균 내고, 업데이트는 똑같이",
        f"프로세스(rank) {N}개, GPU마다 하나. 모두 같은 코드를 동시에 실행합니다 (torchrun).",
    )
    xs = [2.35 + k * 3.45 for k in range(N)]
    shard_colors = ["#4c8bd6", "#e07b39", "#3f9e6a"]
    # The dataset and the sampler.
    y_data = 6.7
    n_samples = 12
    dw = 0.36
    dx0 = (xs[0] + xs[-1]) / 2 - n_samples * dw / 2
    _text(ax, dx0 - 0.15, y_data, "데이터셋", size=9, weight="bold", ha="right")
    order = [5, 0, 9, 3, 11, 7, 1, 10, 4, 8, 2, 6]  # a fixed shuffle: every rank computes the same one
    for k in range(n_samples):
        rank = order.index(k) % N
        ax.add_patch(
            Rectangle(
                (dx0 + k * dw + 0.02, y_data - 0.15),
                dw - 0.04,
                0.3,
                facecolor=shard_colors[rank],
                edgecolor="white",
                alpha=0.85,
            )
        )
        _text(ax, dx0 + (k + 0.5) * dw, y_data, str(k), size=6.5, color="white", code=True)
    _text(ax, dx0 + n_samples * dw + 0.15, y_data,
          "DistributedSampler: 같은 seed로 섞고\nrank마다 다른 몫을 줌", size=7.2, color=MUTED, ha="left",
          linespacing=1.35)
    g_local = [[0.9, -0.4, 0.5, 0.2], [0.3, 0.6, -0.7, 0.8], [0.6, -0.8, 0.8, -0.4]]
    g_mean = [sum(g[i] for g in g_local) / N for i in range(4)]
    weights = _values(1, 6, 81)
    for rank, x in enumerate(xs):
        col = shard_colors[rank]
        _text(ax, x, 6.05, f"rank {rank} (GPU {rank})", size=9, weight="bold", color=col)
        # its shard
        mine = [order[i] for i in range(rank, n_samples, N)]
        for k, sample in enumerate(mine):
            ax.add_patch(
                Rectangle(
                    (x - 2 * dw + k * dw + 0.02, 5.45), dw - 0.04, 0.3, facecolor=col, edgecolor="white", alpha=0.85
                )
            )
            _text(ax, x - 2 * dw + (k + 0.5) * dw, 5.6, str(sample), size=6.5, color="white", code=True)
        # model copy
        _box(ax, x, 4.75, 2.55, 0.62, "", "neutral")
        _text(ax, x - 1.15, 4.9, "모델 복사본", size=8, ha="left")
        _text(ax, x - 1.15, 4.62, "가중치가 모두 같음", size=6.8, ha="left", color=MUTED)
        _matrix(ax, x + 0.2, 4.87, weights, cell=0.15, cmap="Greys", vmin=-1.4, vmax=1.4)
        _arrow(ax, (x, 5.42), (x, 5.08))
        _text(ax, x, 4.2, "정방향 → 손실 → backward", size=7.2, color=MUTED)
        # local gradient
        _box(ax, x, 3.5, 2.55, 0.75, "", "loss")
        _text(ax, x - 1.15, 3.6, f"그레이디언트 g{rank}", size=8, ha="left")
        _text(ax, x - 1.15, 3.33, "샘플이 달라 서로 다름", size=6.8, ha="left", color=MUTED)
        _bars(ax, x + 0.45, 3.5, g_local[rank])
        _arrow(ax, (x, 4.05), (x, 3.9))
        _arrow(ax, (x, 3.12), (x, 2.72))
    # all-reduce band
    _box(ax, (xs[0] + xs[-1]) / 2, 2.45, xs[-1] - xs[0] + 2.9, 0.52, "", "attn")
    _text(ax, (xs[0] + xs[-1]) / 2, 2.45,
          f"all-reduce: 모든 rank의 그레이디언트를 더해 {N}으로 나눔 → 모두가 같은 평균 ḡ = (g0 + g1 + g2) / {N}을 받음",
          size=8.5)
    for rank, x in enumerate(xs):
        _arrow(ax, (x, 2.18), (x, 1.93))
        _box(ax, x, 1.55, 2.55, 0.75, "", "loss")
        _text(ax, x - 1.15, 1.65, "평균 ḡ", size=8, ha="left")
        _text(ax, x - 1.15, 1.38, "모든 rank에서 같음", size=6.8, ha="left", color=MUTED)
        _bars(ax, x + 0.45, 1.55, g_mean)
        _arrow(ax, (x, 1.17), (x, 0.92))
        _text(ax, x, 0.75, "optimizer.step(): 같은 업데이트", size=7.5)
        _text(ax, x, 0.5, "→ 가중치가 다시 모두 같음", size=7.2, color=MUTED, code=False)
    _text(ax, 0.3, 0.15,
          "유효 배치 크기 = batch_size × world_size. 모든 rank가 매 스텝 같은 all-reduce에 참여해야 합니다.", size=7.3,
          color=MUTED, ha="left")
    return fig


FIGURES: dict[str, Callable[[], Figure]] = {
    "token_embedding_pipeline": token_embedding_pipeline,
    "sliding_window_batches": sliding_window_batches,
    "qkv_causal_mask": qkv_causal_mask,
    "head_split_merge": head_split_merge,
    "gpt_block": gpt_block,
    "training_loop": training_loop,
    "classification_last_token": classification_last_token,
    "instruction_masking": instruction_masking,
    "lora_update": lora_update,
    "ddp_gradient_averaging": ddp_gradient_averaging,
}


# --- writing the files ------------------------------------------------------------------------


def default_out_dir() -> Path:
    """notes-ko/figures of the repository this module lives in."""
    return Path(__file__).resolve().parent.parent / "notes-ko" / "figures"


_PATH_DATA = re.compile(r'(\sd=")([^"]*)(")')


def _compact_path(match: re.Match) -> str:
    """Path data without the line breaks and spaces matplotlib puts around each command (same drawing)."""
    data = re.sub(r"\s*([MLQCZz])\s*", r"\1", match.group(2))
    return match.group(1) + re.sub(r"\s+", " ", data).strip() + match.group(3)


def svg_bytes(fig: Figure) -> bytes:
    """`fig` as reproducible SVG bytes: fixed id salt, no date, glyphs as paths, compact path data."""
    buffer = io.BytesIO()
    with mpl.rc_context(SVG_RC):
        fig.savefig(buffer, format="svg", metadata=SVG_METADATA)
    return _PATH_DATA.sub(_compact_path, buffer.getvalue().decode("utf-8")).encode("utf-8")


def save_svg(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a reproducible SVG (same bytes on every run), atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = svg_bytes(fig)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_figures(out_dir: str | Path | None = None, names: Sequence[str] | None = None) -> list[Path]:
    """Draw the named diagrams (all by default) and write each as `out_dir/<name>.svg`."""
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    names = list(FIGURES) if not names else list(names)
    unknown = [name for name in names if name not in FIGURES]
    if unknown:
        raise ValueError(f"모르는 그림 이름: {', '.join(unknown)}. 가능한 이름: {', '.join(FIGURES)}")
    written = []
    for name in names:
        fig = FIGURES[name]()
        try:
            written.append(save_svg(fig, out / f"{name}.svg"))
        finally:
            plt.close(fig)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the diagrams as SVG files."""
    parser = argparse.ArgumentParser(
        prog="python -m buildllm.diagrams", description="커리큘럼의 개념 그림을 SVG 파일로 씁니다."
    )
    parser.add_argument("--out", type=Path, default=None, help="출력 폴더 (기본값: 저장소의 notes-ko/figures)")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", choices=list(FIGURES), help="이 그림들만 씁니다: " + ", ".join(FIGURES)
    )
    args = parser.parse_args(argv)
    for path in write_figures(args.out, args.only):
        print(f"{path}  ({path.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
