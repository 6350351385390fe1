"""The concept diagrams (buildllm.diagrams) and the Korean font helper (buildllm.plotting).

Reproducibility: ``python -m buildllm.diagrams`` must write the committed SVGs of notes-ko/figures
byte for byte. Byte equality holds for the same matplotlib and font files (fixed id salt, no date, glyphs as
paths). A machine with another matplotlib version, or with a system-wide NanumGothic that matplotlib
prefers to the one in koreanize-matplotlib, may draw glyphs slightly differently, so there the test
compares a normalised form instead: the texts in drawing order (matplotlib writes each as an SVG
comment) and the number of drawn patches, which still catches a stale figure.
"""

from __future__ import annotations

import re
import warnings

import matplotlib as mpl
import matplotlib.pyplot as plt
import pytest
from conftest import REPO, run_script
from matplotlib.figure import Figure

from buildllm import diagrams, plotting

FIGURES_DIR = REPO / "notes-ko" / "figures"
NOTES = REPO / "notes-ko"
HANGUL = re.compile(r"[\uac00-\ud7a3]")
CREATOR = re.compile(r"<dc:title>Matplotlib v([^,<]+)")
IMAGE_LINK = re.compile(r"!\[([^\]]*)\]\((figures/[^)\s]+)\)")

# The names the lead fixed for the notebooks and notes (team conventions), one chapter each.
EXPECTED = {
    "token_embedding_pipeline": "ch02.md",
    "sliding_window_batches": "ch02.md",
    "qkv_causal_mask": "ch03.md",
    "head_split_merge": "ch03.md",
    "gpt_block": "ch04.md",
    "training_loop": "ch05.md",
    "classification_last_token": "ch06.md",
    "instruction_masking": "ch07.md",
    "lora_update": "appendix-E.md",
    "ddp_gradient_averaging": "appendix-A.md",
}


def texts_of(fig: Figure) -> list[str]:
    """Every string drawn in the figure."""
    return [t.get_text() for t in fig.findobj(mpl.text.Text) if t.get_text()]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Run the command line once, from a folder outside the repository, into a fresh folder."""
    out = tmp_path_factory.mktemp("figures")
    proc = run_script(["-m", "buildllm.diagrams", "--out", str(out)], cwd=tmp_path_factory.mktemp("elsewhere"))
    return out, proc.stdout


def test_figures_are_the_agreed_names():
    assert list(diagrams.FIGURES) == list(EXPECTED)
    for name, function in diagrams.FIGURES.items():
        assert function.__name__ == name and function.__doc__, name


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_diagram_is_a_figure_with_korean_labels(name):
    fig = diagrams.FIGURES[name]()
    try:
        assert isinstance(fig, Figure)
        texts = texts_of(fig)
        korean = [t for t in texts if HANGUL.search(t)]
        assert len(korean) >= 5, f"{name}: only {len(korean)} Korean labels: {korean}"
        # The Korean font is really used (not a fallback that would draw empty boxes).
        families = {tuple(t.get_fontfamily()) for t in fig.findobj(mpl.text.Text) if HANGUL.search(t.get_text())}
        assert all("NanumGothic" in fam for fam in families), families
        # Nothing is drawn outside the canvas: every text lies inside the figure.
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        width, height = fig.bbox.width, fig.bbox.height
        for t in fig.findobj(mpl.text.Text):
            if not t.get_text():
                continue
            box = t.get_window_extent(renderer)
            assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1, (
                f"{name}: text {t.get_text()!r} is cut off at the edge ({box})"
            )
    finally:
        plt.close(fig)


def test_code_identifiers_appear_where_learners_look_for_them():
    expected = {
        "qkv_causal_mask": ["W_query", "W_key", "W_value"],
        "head_split_merge": ["out_proj", ".transpose(1, 2)"],
        "gpt_block": ["trf_blocks", "out_head", "final_norm", "tok_emb", "pos_emb", "drop_shortcut"],
        "training_loop": ["optimizer.zero_grad()", "loss.backward()", "optimizer.step()", "eval_freq"],
        "classification_last_token": ["out_head", "[:, -1, :]"],
        "instruction_masking": ["-100", "50256"],
        "lora_update": ["alpha / r"],
        "ddp_gradient_averaging": ["all-reduce", "DistributedSampler"],
    }
    for name, needles in expected.items():
        fig = diagrams.FIGURES[name]()
        try:
            joined = "\n".join(texts_of(fig))
        finally:
            plt.close(fig)
        for needle in needles:
            assert needle in joined, f"{name} does not show {needle!r}"


def test_example_tokens_are_what_the_gpt2_tokenizer_produces():
    from buildllm.tokenizer import get_gpt2_tokenizer

    tokenizer = get_gpt2_tokenizer()
    for text, tokens, ids in [
        (diagrams.EXAMPLE_TEXT, diagrams.EXAMPLE_TOKENS, diagrams.EXAMPLE_IDS),
        (diagrams.WINDOW_TEXT, diagrams.WINDOW_TOKENS, diagrams.WINDOW_IDS),
        (diagrams.SPAM_TEXT, diagrams.SPAM_TOKENS, diagrams.SPAM_IDS),
    ]:
        assert tokenizer.encode(text) == ids
        assert [tokenizer.decode([i]) for i in ids] == tokens


def test_instruction_masking_matches_custom_collate_fn():
    """The diagram's rows are what the real collate function returns for two such samples."""
    from buildllm.instruction import custom_collate_fn

    eot, ignore = diagrams.END_OF_TEXT_ID, diagrams.IGNORE_INDEX
    a = [11, 12, 13, 14, 21, 22, 23]  # 4 prompt + 3 response tokens, as sample A
    b = [11, 12, 13, 21, 22]  # 3 prompt + 2 response tokens, as sample B
    inputs, targets = custom_collate_fn([a, b])
    assert inputs.tolist() == [a, b + [eot, eot]]
    assert targets.tolist() == [a[1:] + [eot], b[1:] + [eot, ignore, ignore]]
    _, masked = custom_collate_fn([(a, 4), (b, 3)])  # exercise 7.2: prompt targets ignored too
    assert masked.tolist() == [[ignore] * 3 + [21, 22, 23, eot], [ignore] * 2 + [21, 22, eot, ignore, ignore]]


def test_command_line_writes_every_figure(generated):
    out, stdout = generated
    written = sorted(p.name for p in out.glob("*.svg"))
    assert written == sorted(f"{name}.svg" for name in EXPECTED)
    for name in EXPECTED:
        data = (out / f"{name}.svg").read_bytes()
        assert data.startswith(b"<?xml") and data.rstrip().endswith(b"</svg>")
        assert b"<dc:date>" not in data  # no date: the same bytes on every run
        assert b"<text" not in data  # glyphs are paths: Korean renders without the font installed
        assert len(data) < 300_000, f"{name}.svg is {len(data)} bytes"
        assert name in stdout


def test_only_writes_the_named_figures(tmp_path):
    diagrams.main(["--out", str(tmp_path), "--only", "gpt_block"])
    assert [p.name for p in tmp_path.iterdir()] == ["gpt_block.svg"]
    with pytest.raises(SystemExit):
        diagrams.main(["--out", str(tmp_path), "--only", "no_such_figure"])
    with pytest.raises(ValueError, match="가능한 이름"):
        diagrams.write_figures(tmp_path, ["no_such_figure"])


def test_same_bytes_on_every_run(tmp_path):
    fig = diagrams.lora_update()
    try:
        first = diagrams.svg_bytes(fig)
        second = diagrams.svg_bytes(fig)
    finally:
        plt.close(fig)
    assert first == second
    assert diagrams.save_svg(diagrams.lora_update(), tmp_path / "x.svg").read_bytes() == first
    plt.close("all")


def same_fonts_as_committed(svg: str) -> bool:
    """True when this machine draws with what made the committed file: that matplotlib, our NanumGothic."""
    nanum = mpl.font_manager.findfont("NanumGothic", fallback_to_default=False)
    return CREATOR.search(svg).group(1) == mpl.__version__ and "koreanize_matplotlib" in nanum


def normalised(svg: str) -> tuple[list[str], int]:
    """What a figure shows, independent of glyph placement: its texts in order and its patch count."""
    return re.findall(r"<!-- (.*?) -->", svg, re.DOTALL), svg.count('<g id="patch_')


def test_committed_figures_are_reproducible_and_up_to_date(generated):
    out, _ = generated
    committed = sorted(p.name for p in FIGURES_DIR.glob("*.svg"))
    assert committed == sorted(f"{name}.svg" for name in EXPECTED), "run: python -m buildllm.diagrams"
    for name in EXPECTED:
        old = (FIGURES_DIR / f"{name}.svg").read_text(encoding="utf-8")
        new = (out / f"{name}.svg").read_text(encoding="utf-8")
        if same_fonts_as_committed(old):
            assert old == new, f"notes-ko/figures/{name}.svg is stale: run python -m buildllm.diagrams"
        else:  # another matplotlib or a system NanumGothic draws glyphs a little differently; compare what is shown
            assert normalised(old) == normalised(new), (
                f"notes-ko/figures/{name}.svg differs from the code (committed with matplotlib "
                f"{CREATOR.search(old).group(1)}, this is {mpl.__version__}): run python -m buildllm.diagrams"
            )


def test_every_diagram_is_shown_in_its_note_and_every_link_resolves():
    linked = {}
    for note in NOTES.glob("*.md"):
        for alt, target in IMAGE_LINK.findall(note.read_text(encoding="utf-8")):
            assert (NOTES / target).is_file(), f"{note.name}: {target} does not exist"
            assert HANGUL.search(alt), f"{note.name}: the image {target} needs Korean alt text"
            linked.setdefault(target, set()).add(note.name)
    for name, note in EXPECTED.items():
        assert note in linked.get(f"figures/{name}.svg", set()), f"notes-ko/{note} does not show {name}.svg"


# --- plotting.use_korean_font ----------------------------------------------------------------


def test_use_korean_font_registers_nanum_once():
    with mpl.rc_context():
        assert plotting.use_korean_font() == "NanumGothic"
        count = len(mpl.font_manager.fontManager.ttflist)
        assert plotting.use_korean_font() == "NanumGothic"  # idempotent: nothing added twice
        assert len(mpl.font_manager.fontManager.ttflist) == count
        assert mpl.rcParams["font.family"] == ["NanumGothic"]
        assert mpl.rcParams["axes.unicode_minus"] is False
        path = mpl.font_manager.findfont("NanumGothic", fallback_to_default=False)
        assert path.endswith(".ttf") and "Nanum" in path, path


def test_use_korean_font_without_the_package_warns_once(monkeypatch):
    monkeypatch.setattr(plotting, "_korean_font_files", list)
    monkeypatch.setattr(plotting, "_warned_missing_font", False)
    with mpl.rc_context({"font.family": ["DejaVu Sans"]}):
        with pytest.warns(UserWarning, match="koreanize-matplotlib"):
            assert plotting.use_korean_font() == "DejaVu Sans"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert plotting.use_korean_font() == "DejaVu Sans"  # no second warning


def test_training_curves_have_korean_labels(tmp_path):
    with mpl.rc_context():
        fig = plotting.plot_losses([0, 1, 2], [0, 100, 200], [3.0, 2.0, 1.5], [3.2, 2.5, 2.2], tmp_path / "loss")
        try:
            labels = texts_of(fig)
            assert {"에포크", "손실", "본 토큰 수", "훈련 손실", "검증 손실"} <= set(labels), labels
        finally:
            plt.close(fig)
        assert (tmp_path / "loss.png").is_file() and (tmp_path / "loss.pdf").is_file()
        fig = plotting.plot_values([0, 1], [0, 50], [0.5, 0.9], [0.4, 0.8], "accuracy")
        try:
            assert {"정확도", "훈련 정확도", "검증 정확도", "본 예제 수"} <= set(texts_of(fig))
        finally:
            plt.close(fig)
