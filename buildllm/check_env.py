"""Environment check: ``python -m buildllm.check_env`` (appendix A, exercise A.2).

Prints the versions of the packages the curriculum uses, the device PyTorch will
use, and whether the GPT-2 tokenizer and each dataset are available offline.
Exits with status 1, and advice, when something required is missing.
"""

from __future__ import annotations

from importlib import metadata
import platform
import sys

OK, WARN, FAIL = "ok", "warn", "FAIL"


def _version(distribution: str) -> str | None:
    """Return the installed version of a package without importing it (TensorFlow is slow to import)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def run_checks() -> list[tuple[str, str, str]]:
    """Return (status, item, detail) rows for every check."""
    rows: list[tuple[str, str, str]] = []
    py = platform.python_version()
    rows.append((OK if sys.version_info >= (3, 10) else FAIL, "python", py))

    required = {"torch": "2.2.2", "tiktoken": None, "matplotlib": None, "tqdm": None, "safetensors": None}
    for name in required:
        v = _version(name)
        rows.append((OK, name, v) if v else (FAIL, name, "missing: pip install -r requirements.txt"))
    for name, why in [("pandas", "ch06"), ("jupyterlab", "notebooks"), ("tensorflow", "OpenAI's TF checkpoints only")]:
        v = _version(name)
        rows.append((OK, name, v) if v else (WARN, name, f"not installed (needed for {why})"))

    if _version("torch"):
        from .device import get_device

        device = get_device("auto")
        rows.append((OK, "device", f"{device} (change with --device in the scripts)"))

    if _version("tiktoken"):
        try:
            from .tokenizer import get_gpt2_tokenizer

            ids = get_gpt2_tokenizer().encode("Hello, world")
            ok = ids == [15496, 11, 995]
            rows.append((OK if ok else FAIL, "gpt2 tokenizer", "offline, verified" if ok else f"wrong ids {ids}"))
        except Exception as exc:
            rows.append((FAIL, "gpt2 tokenizer", str(exc)))

    from .datasets import DatasetError, configured_data_dir, get_data_path, list_datasets

    data_dir = configured_data_dir()
    for name in list_datasets():
        try:
            path = get_data_path(name, download=False, progress=False)
            rows.append((OK, f"data: {name}", str(path)))
        except DatasetError as exc:
            if data_dir is not None:  # a data folder was named: nothing will be downloaded
                rows.append((FAIL, f"data: {name}", str(exc)))
            else:
                rows.append((WARN, f"data: {name}", "not cached; downloaded on first use (or set BUILDLLM_DATA_DIR)"))
    return rows


def main() -> int:
    rows = run_checks()
    width = max(len(item) for _, item, _ in rows)
    marks = {OK: "[ok]  ", WARN: "[warn]", FAIL: "[FAIL]"}
    for status, item, detail in rows:
        print(f"{marks[status]} {item:<{width}}  {detail}")
    failures = [item for status, item, _ in rows if status == FAIL]
    if failures:
        print(f"\n{len(failures)} required item(s) missing: {', '.join(failures)}. "
              f"Install with `pip install -r requirements.txt`; for data, see README 'Offline use'.")
        return 1
    print("\nAll required items are available.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
