"""Every script's --help: each option explained, each default shown, and shown once.

The scripts build their parsers with `buildllm.cli.make_parser`, whose formatter appends
"(default: ...)" to every option that has a default, unless the help text already says it.
A small driver runs `SCRIPT --help` for every script in one process and keeps the parser
each one built, to read every option's help line exactly as --help shows it.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import SCRIPTS


@pytest.fixture(scope="module")
def reports(help_reports):
    return help_reports


def test_the_scripts_are_found():
    names = {str(s) for s in SCRIPTS}
    assert {"ch05/gpt_train.py", "ch06/gpt_class_finetune.py", "ch07/chat.py", "appendix-A/DDP-script.py",
            "benchmarks/bench_train.py"} <= names
    assert not any(name.endswith("previous_chapters.py") for name in names)  # re-exports, not scripts


@pytest.mark.parametrize("script", SCRIPTS, ids=str)
def test_help_runs(script, reports):
    """`python SCRIPT --help` prints the usage, exits 0 and writes nothing else (no warnings)."""
    report = reports[script]
    assert report["status"] == 0, report["stderr"][-2000:]
    assert report["stdout"].startswith("usage:") and not report["stderr"].strip(), report["stderr"]
    assert report["options"], f"{script} parses no options with argparse"


@pytest.mark.parametrize("script", SCRIPTS, ids=str)
def test_every_option_is_explained_and_its_default_shown_once(script, reports):
    problems = []
    for option in reports[script]["options"]:
        flag = "/".join(option["flags"])
        shown = option["shown"]
        if not option["help"].strip():
            problems.append(f"{flag}: no help text")
            continue
        count = len(re.findall(r"\bdefault\b", shown, flags=re.IGNORECASE))
        if count > 1:
            problems.append(f"{flag}: the default is shown {count} times: {shown!r}")
        if "(default: None)" in shown:
            problems.append(f"{flag}: shows '(default: None)'; say what happens without the option instead")
        if option["has_default"] and count == 0:
            problems.append(f"{flag}: its default {option['default']} is not shown")
    assert not problems, f"{script} --help:\n  " + "\n  ".join(problems)


def test_device_reads_the_same_across_chapter_scripts(reports):
    """--device: one rule (auto|cpu|cuda|cuda:N|mps), one help text, in every chapter script.

    Appendix A's DDP scripts are the exception by design: each process takes its own GPU.
    """
    for flag, exempt in (("--device", ("appendix-A/",)),):
        texts = {}
        for script, report in reports.items():
            if str(script).startswith(("benchmarks/", *exempt)):
                continue
            for option in report["options"]:
                if flag in option["flags"]:
                    texts.setdefault(option["shown"], []).append(str(script))
        assert len(texts) == 1, f"{flag} reads differently across scripts: {json.dumps(texts, indent=1)}"
