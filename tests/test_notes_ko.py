"""The Korean study notes (notes-ko): every note exists, follows the outline, and its links
and code references resolve.

Conventions the checker enforces (see also notes-ko/README.md, "노트와 코드의 약속"):

- Links: every markdown link ``[text](path)`` or ``[text](path#anchor)`` to a file of this
  repository is relative to the note and its file part must exist. ``http(s)://``,
  ``mailto:`` links and pure ``#anchor`` links are not checked.
- Notebooks: every ``*.ipynb`` a note mentions (in a link, in backticks or in plain text)
  exists; a mention with a folder (``ch03/ch03.ipynb``, or ``../ch03/ch03.ipynb`` in a link,
  leading ``../`` dropped) is taken from the repository root, one without a folder
  (``exercise-solutions.ipynb``) from the note's chapter folder (``ch03.md`` -> ``ch03/``).
- Qualified code references: every ``buildllm.module.Name[.attr]`` inside backticks
  (anywhere in the span, e.g. ```python -m buildllm.notebooks```) imports the module and
  resolves the attributes. In fenced code blocks, ``from buildllm.x import a, b`` and
  ``import buildllm.x`` lines are checked the same way.
- Short code references: a note's modules are the ``buildllm.<module>`` spans backticked in
  its "## 0. 메타" section (a note without that section, the index or the glossary, has all
  of them). A backticked bare name such as ``MultiHeadAttention`` or
  ``GPTModel.forward`` (optionally with ``()``) must resolve in one of those modules when its
  first part looks like a class or a constant (CamelCase such as ``GPTDatasetV1`` or
  ``SelfAttention_v1``, or UPPER_CASE such as ``GPT_CONFIG_124M``), or when it is one of the
  names in the glossary's code column (e.g. ``create_dataloader_v1``). Python builtins and
  the few outside names in ``OUTSIDE_NAMES`` (a PyTorch class, an environment variable) are exempt; PyTorch names are written with their
  module (``nn.Linear``, ``F.scaled_dot_product_attention``) and so are not checked.
- Chapter notes have the outline's headings (``HEADINGS``) in order, the checklist
  "이 장을 마치면 할 수 있는 것" in section 1, and 6-8 check questions (``<details>`` blocks)
  in section 8.
- The glossary has at least 80 terms (rows of its tables).

Fenced code blocks are skipped except for their ``buildllm`` imports. Each failure lists
every problem as ``file:line: message``.
"""

from __future__ import annotations

import builtins
import importlib
import pkgutil
import re
from functools import lru_cache
from pathlib import Path

import pytest

from conftest import REPO

NOTES = REPO / "notes-ko"
CHAPTER_NOTES = ["ch01.md", "ch02.md", "ch03.md", "ch04.md", "ch05.md", "ch06.md", "ch07.md",
                 "appendix-A.md", "appendix-E.md"]
EXPECTED_NOTES = ["README.md", "glossary.md", *CHAPTER_NOTES]
ALL_NOTES = sorted(set(EXPECTED_NOTES) | {p.name for p in NOTES.glob("*.md")})

HEADINGS = ["## 0. 메타", "## 1. 요약", "## 2. 큰 그림", "## 3. 용어 카드", "## 4. 절별 해설",
            "## 5. 코드 읽기", "## 6. 직접 해보기", "## 7. 흔한 함정", "## 8. 확인 문제",
            "## 9. 연습문제 연결", "## 10. 다음 장 연결"]
CHECKLIST = "이 장을 마치면 할 수 있는 것"
MIN_QUESTIONS, MAX_QUESTIONS = 6, 8
MIN_GLOSSARY_TERMS = 80

# Capitalized names that are not buildllm's: PyTorch/tiktoken classes a note may name bare,
# and the environment variables the curriculum reads.
OUTSIDE_NAMES = {"DataLoader", "Dataset", "Tensor", "Encoding",
                 "BUILDLLM_DATA_DIR", "BUILDLLM_CACHE_DIR", "TIKTOKEN_CACHE_DIR"}

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
QUALIFIED = re.compile(r"\bbuildllm(?:\.[A-Za-z_]\w*)+")
BARE = re.compile(r"^([A-Za-z_]\w*)((?:\.[A-Za-z_]\w*)*)(?:\(\))?$")
CLASS_LIKE = re.compile(r"^[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*(?:_v\d+)?$")
CONSTANT_LIKE = re.compile(r"^[A-Z][A-Z0-9_]{2,}$")
NOTEBOOK = re.compile(r"[\w./-]*\.ipynb\b")
FROM_IMPORT = re.compile(r"^\s*from\s+(buildllm(?:\.\w+)*)\s+import\s+\(?([\w\s,]+)\)?")
PLAIN_IMPORT = re.compile(r"^\s*import\s+(buildllm(?:\.\w+)*)")


# --- reading a note -------------------------------------------------------------------------


@lru_cache(maxsize=None)
def read_lines(name: str) -> tuple[tuple[int, str, bool], ...]:
    """The note's lines as (line number, text, inside a fenced code block)."""
    rows, fence = [], None
    for number, line in enumerate((NOTES / name).read_text(encoding="utf-8").splitlines(), start=1):
        marker = re.match(r"^\s*(```|~~~)", line)
        if marker and (fence is None or marker.group(1) == fence):
            fence = marker.group(1) if fence is None else None
            rows.append((number, line, True))
            continue
        rows.append((number, line, fence is not None))
    return tuple(rows)


def prose(name: str):
    """(line number, text) of the lines outside fenced code blocks."""
    return [(n, text) for n, text, in_code in read_lines(name) if not in_code]


def sections(name: str) -> dict[str, list[tuple[int, str]]]:
    """Lines of each '## ' section, keyed by its heading line (outside code blocks)."""
    result, current = {}, None
    for n, text in prose(name):
        if text.startswith("## "):
            current = text.strip()
            result[current] = []
        elif current is not None:
            result[current].append((n, text))
    return result


def require_note(name: str) -> None:
    if not (NOTES / name).exists():
        pytest.skip(f"notes-ko/{name} does not exist yet (test_note_exists reports it)")


def report(problems: list[str]) -> None:
    if problems:
        pytest.fail(f"{len(problems)} problem(s):\n" + "\n".join(problems), pytrace=False)


# --- resolving code references --------------------------------------------------------------


def resolve(dotted: str):
    """Import the longest module prefix of `dotted`, then getattr the rest; raise if missing."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and not module_name.startswith(exc.name) and exc.name != module_name:
                raise  # a module that exists failed to import one of its own dependencies
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)  # AttributeError names the missing part
        return obj
    raise ModuleNotFoundError(f"no module {parts[0]!r}")


def exists(dotted: str) -> bool:
    try:
        resolve(dotted)
        return True
    except (ImportError, AttributeError):
        return False


@lru_cache(maxsize=None)
def glossary_code_names() -> frozenset[str]:
    """Top-level names (e.g. 'GPTModel', 'create_dataloader_v1') in the glossary's code column."""
    if not (NOTES / "glossary.md").exists():
        return frozenset()
    names = set()
    for _, text in prose("glossary.md"):
        for span in CODE_SPAN.findall(text):
            for dotted in QUALIFIED.findall(span):
                parts = dotted.split(".")
                if len(parts) >= 3:
                    names.add(parts[2])
    return frozenset(names)


@lru_cache(maxsize=None)
def all_modules() -> tuple[str, ...]:
    import buildllm

    return tuple(f"buildllm.{m.name}" for m in pkgutil.iter_modules(buildllm.__path__))


def meta_modules(name: str) -> list[str]:
    """The buildllm modules backticked in the note's '## 0. 메타' section (all, if it has none)."""
    if HEADINGS[0] not in sections(name):
        return list(all_modules())  # the index and the glossary
    modules = []
    for _, text in sections(name)[HEADINGS[0]]:
        for span in CODE_SPAN.findall(text):
            for dotted in QUALIFIED.findall(span):
                try:
                    obj = resolve(dotted)
                except (ImportError, AttributeError):
                    continue
                if type(obj).__name__ == "module" and dotted not in modules:
                    modules.append(dotted)
    return modules


def is_checked_bare_name(first: str) -> bool:
    if first in OUTSIDE_NAMES or hasattr(builtins, first):
        return False
    return bool(CLASS_LIKE.match(first) or CONSTANT_LIKE.match(first)) or first in glossary_code_names()


def code_references(name: str) -> list[tuple[int, str, str | None]]:
    """Every code reference the checker verifies: (line, reference, problem or None)."""
    refs = []
    modules = meta_modules(name)
    for n, text, in_code in read_lines(name):
        if in_code:
            match = FROM_IMPORT.match(text)
            if match:
                for imported in filter(None, (s.strip() for s in match.group(2).split(","))):
                    ref = f"{match.group(1)}.{imported}"
                    refs.append((n, ref, None if exists(ref) else f"`{ref}` (imported) does not exist"))
            match = PLAIN_IMPORT.match(text)
            if match:
                ref = match.group(1)
                refs.append((n, ref, None if exists(ref) else f"module `{ref}` does not exist"))
            continue
        for span in CODE_SPAN.findall(text):
            qualified = QUALIFIED.findall(span)
            for ref in qualified:
                refs.append((n, ref, None if exists(ref) else f"`{ref}` does not exist"))
            match = BARE.match(span.strip())
            if qualified or not match or not is_checked_bare_name(match.group(1)):
                continue
            ref = match.group(1) + match.group(2)
            if not modules:
                problem = (f"`{ref}` looks like a buildllm name but the 메타 section names no module: "
                           f"write it as `buildllm.<module>.{ref}` or name its module in 메타")
            elif not any(exists(f"{m}.{ref}") for m in modules):
                problem = f"`{ref}` is in none of this note's modules ({', '.join(modules)})"
            else:
                problem = None
            refs.append((n, ref, problem))
    return refs


# --- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXPECTED_NOTES)
def test_note_exists(name):
    assert (NOTES / name).is_file(), f"notes-ko/{name} is missing (outline and conventions: notes-ko/README.md)"


@pytest.mark.parametrize("name", ALL_NOTES)
def test_relative_links_resolve(name):
    require_note(name)
    problems = []
    for n, text in prose(name):
        text = CODE_SPAN.sub("", text)
        for target in LINK.findall(text):
            if re.match(r"^(https?:|mailto:|#)", target):
                continue
            file_part = target.split("#", 1)[0]
            if not (NOTES / file_part).exists():
                problems.append(f"notes-ko/{name}:{n}: link target {target!r} does not exist")
    report(problems)


@pytest.mark.parametrize("name", ALL_NOTES)
def test_mentioned_notebooks_exist(name):
    require_note(name)
    chapter_dir = REPO / Path(name).stem if name in CHAPTER_NOTES else None
    problems = []
    for n, text in prose(name):
        # '[ch03/ch03.ipynb](../ch03/ch03.ipynb)' is one mention: drop leading './' and '../'.
        mentions = dict.fromkeys(re.sub(r"^(\.\.?/)+", "", m) for m in NOTEBOOK.findall(text))
        for mention in mentions:
            if "/" in mention:
                candidates = [REPO / mention]
            else:
                candidates = [chapter_dir / mention] if chapter_dir else []
            if not any(c.exists() for c in candidates):
                where = "" if candidates else " (name it with its folder, e.g. ch03/" + mention + ")"
                problems.append(f"notes-ko/{name}:{n}: notebook {mention!r} does not exist{where}")
    report(problems)


@pytest.mark.parametrize("name", ALL_NOTES)
def test_code_references_resolve(name):
    require_note(name)
    report([f"notes-ko/{name}:{n}: {problem}" for n, _, problem in code_references(name) if problem])


@pytest.mark.parametrize("name", CHAPTER_NOTES)
def test_chapter_note_follows_the_outline(name):
    require_note(name)
    found = [(n, text.strip()) for n, text in prose(name) if text.startswith("## ")]
    found_headings = [h for _, h in found]
    problems = [f"notes-ko/{name}: missing heading {h!r}" for h in HEADINGS if h not in found_headings]
    present = [h for h in found_headings if h in HEADINGS]
    if not problems and present != HEADINGS:
        problems.append(f"notes-ko/{name}: headings out of order or repeated: {present}")
    problems += [f"notes-ko/{name}:{n}: unexpected section {h!r} (sections are {HEADINGS})"
                 for n, h in found if h not in HEADINGS]
    summary = sections(name).get(HEADINGS[1], [])
    if summary and not any(CHECKLIST in text for _, text in summary):
        problems.append(f"notes-ko/{name}:{summary[0][0]}: section 1 lacks the checklist {CHECKLIST!r}")
    report(problems)


@pytest.mark.parametrize("name", CHAPTER_NOTES)
def test_chapter_note_has_check_questions(name):
    require_note(name)
    lines = sections(name).get(HEADINGS[8])
    if lines is None:
        pytest.fail(f"notes-ko/{name}: no section {HEADINGS[8]!r}", pytrace=False)
    count = sum(text.count("<details>") for _, text in lines)
    start = lines[0][0] if lines else 0
    assert MIN_QUESTIONS <= count <= MAX_QUESTIONS, (
        f"notes-ko/{name}:{start}: {count} check questions (<details> blocks) in section 8, "
        f"expected {MIN_QUESTIONS}-{MAX_QUESTIONS}")


def glossary_terms() -> list[tuple[int, str]]:
    """(line, English term) of each row of the glossary's tables."""
    rows = []
    for n, text in prose("glossary.md"):
        cells = [c.strip() for c in text.strip().strip("|").split("|")]
        if not text.lstrip().startswith("|") or len(cells) < 4:
            continue
        if set("".join(cells)) <= set("-: ") or cells[0].lower() in {"english", "영어"}:
            continue  # separator or header row
        rows.append((n, cells[0]))
    return rows


def test_glossary_has_enough_terms():
    require_note("glossary.md")
    terms = glossary_terms()
    assert len(terms) >= MIN_GLOSSARY_TERMS, f"notes-ko/glossary.md has {len(terms)} terms, expected at least 80"
    seen, problems = {}, []
    for n, term in terms:
        key = term.lower()
        if key in seen:
            problems.append(f"notes-ko/glossary.md:{n}: term {term!r} repeats line {seen[key]}")
        seen.setdefault(key, n)
    report(problems)
