"""What keeps the notebooks and notes honest and consistent (issue: learning quality).

1. Quoted run figures: a number a note or a notebook's markdown quotes from a run is
   written as a link to the notebook whose committed outputs hold it, titled
   "실행 결과" (``[0.24분](../ch06/ch06.ipynb "실행 결과")``). The link text must appear
   verbatim in that notebook's outputs, so a re-run that changes the figure fails here
   until the prose is updated.
2. One vocabulary: the style guide's terms (../shared/notes-ko-style.md) in every
   notebook (markdown, code comments, printed text) and note; the variants a review
   found are flagged.
3. Our own code: no two notebooks, and no notebook and the package, share a long run
   of identical code lines (the book's class names are kept, the code is written anew
   in each place it is taught).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import pytest

from conftest import REPO

NOTEBOOKS = sorted(p for p in REPO.glob("**/*.ipynb")
                   if not any(part.startswith(".") for part in p.relative_to(REPO).parts))
NOTES = sorted((REPO / "notes-ko").glob("*.md"))
QUOTE = re.compile(r'\[([^\]]+)\]\(([^)\s]+\.ipynb)\s+"실행 결과"\)')


@lru_cache(maxsize=None)
def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def output_text(path: Path) -> str:
    """Everything a notebook's committed outputs show as text (streams, plain-text results, HTML tables)."""
    pieces = []
    for cell in _load(path)["cells"]:
        for out in cell.get("outputs", []):
            if "text" in out:
                pieces.append("".join(out["text"]))
            data = out.get("data", {})
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in data:
                    value = data[mime]
                    pieces.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(pieces)


def _markdown_sources():
    """(where, text) of every note and every markdown cell."""
    for note in NOTES:
        yield note, note.read_text(encoding="utf-8")
    for nb in NOTEBOOKS:
        for cell in _load(nb)["cells"]:
            if cell["cell_type"] == "markdown":
                yield nb, "".join(cell["source"])


def test_quoted_run_figures_appear_in_the_outputs_they_link():
    problems, checked = [], 0
    for where, text in _markdown_sources():
        for figure, target in QUOTE.findall(text):
            path = (where.parent / target).resolve()
            if not path.is_file():
                problems.append(f"{where.relative_to(REPO)}: {target} does not exist")
                continue
            checked += 1
            if figure not in output_text(path):
                problems.append(f"{where.relative_to(REPO)}: {figure!r} is not in the outputs of {target}")
    assert not problems, "\n".join(problems)
    assert checked >= 20  # the convention is in use, not silently bypassed


# --- One vocabulary ----------------------------------------------------------------------------------

# (pattern, what the style guide uses instead). Patterns match Korean prose; code identifiers never do.
VARIANTS = [
    (r"(?<![지도전이강화기계자기비문맥내 ])학습(?!률)", "훈련 (학습 is kept only in 지도 학습, 학습률 and similar set terms)"),
    (r"과적합", "과대적합"),
    (r"탐욕적", "그리디"),
    (r"교차 ?엔트로피", "크로스 엔트로피"),
    (r"인과적 어텐션|인과 어텐션", "코잘 어텐션"),
    (r"순전파", "정방향 계산"),
    (r"사전 ?학습", "사전 훈련"),
    (r"에폭", "에포크"),
    (r"그래디언트|기울기 소실", "그레이디언트 / 그레이디언트 소실"),
    (r"윈도우", "윈도"),
]
ALLOWED = ("지도 학습", "학습률", "비지도 학습", "자기 지도 학습", "전이 학습", "강화 학습", "기계 학습",
           "문맥 내 학습", "학습 가능한 파라미터가 아니라")


def _korean_text_of_notebook(path: Path) -> str:
    """Markdown, code comments and string literals of a notebook, plus what its outputs print."""
    parts = []
    for cell in _load(path)["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            parts.append(source)
        else:
            parts += re.findall(r"#.*|\"[^\"\n]*\"|'[^'\n]*'", source)  # comments and string literals
    return "\n".join(parts) + "\n" + output_text(path)


@pytest.mark.parametrize("path", [*NOTEBOOKS, *(n for n in NOTES if n.name != "glossary.md")],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_style_guide_vocabulary(path):
    """The glossary is exempt: its third column lists the other forms on purpose."""
    text = path.read_text(encoding="utf-8") if path.suffix == ".md" else _korean_text_of_notebook(path)
    for allowed in ALLOWED:
        text = text.replace(allowed, "")
    problems = []
    for line in text.splitlines():
        for pattern, instead in VARIANTS:
            if re.search(pattern, line):
                problems.append(f"{line.strip()[:100]!r}: use {instead}")
    assert not problems, f"{path.relative_to(REPO)}:\n" + "\n".join(problems[:20])


# --- Our own code --------------------------------------------------------------------------------

MAX_SHARED_LINES = 12  # a class of the book's built twice identically would exceed this


def _code_lines(source: str) -> list[str]:
    """Normalized code lines: no blanks, comments, imports or lone brackets; whitespace folded."""
    lines = []
    for raw in source.splitlines():
        line = re.sub(r"\s+", " ", raw.split("#", 1)[0]).strip()
        if not line or line in ("(", ")", "]", "}", "):", "],", ")," ) or line.startswith(("import ", "from ")):
            continue
        lines.append(line)
    return lines


def _sources() -> dict[str, list[str]]:
    sources = {}
    for nb in NOTEBOOKS:
        code = "\n".join("".join(c["source"]) for c in _load(nb)["cells"] if c["cell_type"] == "code")
        sources[str(nb.relative_to(REPO))] = _code_lines(code)
    for module in sorted((REPO / "buildllm").glob("*.py")):
        sources[str(module.relative_to(REPO))] = _code_lines(module.read_text(encoding="utf-8"))
    return sources


def _longest_shared_run(a: list[str], b: list[str]) -> tuple[int, int]:
    """Length and start (in `a`) of the longest run of consecutive equal lines shared by `a` and `b`."""
    best, where = 0, 0
    previous = [0] * (len(b) + 1)
    for i, line in enumerate(a, 1):
        current = [0] * (len(b) + 1)
        for j, other in enumerate(b, 1):
            if line == other:
                current[j] = previous[j - 1] + 1
                if current[j] > best:
                    best, where = current[j], i - current[j]
        previous = current
    return best, where


def test_no_long_runs_of_code_shared_between_notebooks_or_with_the_package():
    sources = _sources()
    names = sorted(sources)
    problems = []
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if not (first.endswith(".ipynb") or second.endswith(".ipynb")):
                continue  # module against module: the duplicates tool's job
            length, start = _longest_shared_run(sources[first], sources[second])
            if length > MAX_SHARED_LINES:
                problems.append(f"{first} and {second} share {length} identical code lines, from "
                                f"{sources[first][start]!r}")
    assert not problems, "\n".join(problems)
