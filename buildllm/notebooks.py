"""The notebook runner: executes notebooks with papermill-style parameters (tests and committed outputs).

Usage::

    python -m buildllm.notebooks ch02/ch02.ipynb            # refresh outputs in place, default parameters
    python -m buildllm.notebooks ch05/ch05.ipynb -p num_epochs 2
    python -m buildllm.notebooks ch05/ch05.ipynb --quick --output /tmp/ch05.ipynb   # the tests' settings

Each notebook has one cell tagged ``parameters`` holding its expensive knobs with
the book's defaults. ``--quick`` applies the small values stored in the notebook's
metadata under ``buildllm.quick_parameters`` (what the test suite runs). The
notebook runs in its own folder. In-place runs replace the file only when every
cell succeeded, and record the parameters, device and versions in the notebook's
metadata (``buildllm.last_run``), so a reader can see what produced its outputs.

Notebooks are written exactly as JupyterLab saves them (`write_notebook`), with the
kernelspec of the kernel that ran them, so that opening one in JupyterLab changes
nothing: JupyterLab copies the running kernel's name, display name and language into
``metadata.kernelspec`` when the kernel starts, and an author's ``"Python 3"`` against
ipykernel's ``"Python 3 (ipykernel)"`` marked every notebook modified on opening.
(It also copies the kernel's ``language_info``, which holds the Python version: a
reader with another Python version still sees the notebook marked modified.)
``python -m buildllm.notebooks --normalize PATH`` applies this to a notebook without
executing it: only the kernelspec and the file's layout change, never an output.
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

RESULTS_MIME = "application/vnd.buildllm.results+json"


def report(**results) -> dict:
    """Show headline results (plain JSON values) in a notebook; the runner copies them into ``last_run["results"]``.

    ``report(weights="smollm2-135m-instruct", test_accuracy=0.973)`` prints one line and
    leaves the values in the cell's output, where a reader and the tests find them.
    """
    import json

    from IPython.display import display

    json.dumps(results)  # only plain values: a TypeError here says which one is not
    shown = ", ".join(f"{key} = {value}" for key, value in results.items())
    display({RESULTS_MIME: results, "text/plain": f"기록한 결과: {shown}"}, raw=True)
    return results


def collect_results(nb) -> dict:
    """All values the notebook showed with `report`, in cell order (a later value replaces an earlier one)."""
    results: dict = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            results.update(output.get("data", {}).get(RESULTS_MIME, {}))
    return results


def quick_parameters(path: str | os.PathLike) -> dict:
    """Return the small parameters stored in a notebook's metadata (``buildllm.quick_parameters``)."""
    nb = nbformat.read(path, as_version=4)
    return dict(nb.metadata.get("buildllm", {}).get("quick_parameters", {}))


def kernelspec_metadata(kernel_name: str = "python3") -> dict:
    """``metadata.kernelspec`` as JupyterLab writes it for kernel `kernel_name` (name, display name, language)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise RuntimeError(f"No Jupyter kernel named {kernel_name!r}: pip install ipykernel (in requirements.txt), "
                           f"or list the kernels with `jupyter kernelspec list`.") from None
    return {"display_name": spec.display_name, "language": spec.language, "name": kernel_name}


def _as_javascript_numbers(value):
    """`value` with every whole-valued float as an int, as a notebook comes back from JupyterLab.

    JupyterLab holds the notebook as JavaScript objects, where 23.0 and 23 are one number and
    are sent to the server as ``23``; the server writes that back as an int.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {key: _as_javascript_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_javascript_numbers(item) for item in value]
    return value


def notebook_text(nb) -> str:
    """The file content JupyterLab saves for `nb`: nbformat's JSON (indent 1, sorted keys), a final newline.

    JupyterLab sends the notebook to the Jupyter server, which writes it with nbformat, so
    the layout is nbformat's; only numbers pass through JavaScript on the way (see
    `_as_javascript_numbers`). Checked in a browser with JupyterLab 4.6: every committed
    notebook, opened and saved, kept every byte of this text.
    """
    text = nbformat.writes(nbformat.from_dict(_as_javascript_numbers(nb)), version=4)
    return text if text.endswith("\n") else text + "\n"


def write_notebook(nb, path: str | os.PathLike) -> None:
    """Write `nb` to `path` byte for byte as JupyterLab would save it (not atomically: callers rename)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(notebook_text(nb))


def normalize_notebook(path: str | os.PathLike, kernel_name: str = "python3") -> bool:
    """Give a notebook the kernelspec JupyterLab would write and JupyterLab's layout, without executing it.

    Outputs, sources and the rest of the metadata are kept as they are. Returns True if
    the file changed (it is replaced atomically, keeping its permissions).
    """
    path = Path(path)
    before = path.read_text(encoding="utf-8")
    nb = nbformat.reads(before, as_version=4)
    nb.metadata["kernelspec"] = kernelspec_metadata(kernel_name)
    after = notebook_text(nb)
    if after == before:
        return False
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".ipynb", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(after)
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def _clean(nb) -> None:
    """Drop per-run noise (timings, papermill bookkeeping) so committed diffs show only real changes."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)


def run_notebook(
    path: str | os.PathLike,
    parameters: dict | None = None,
    output: str | os.PathLike | None = None,
    timeout: int = 3600,
    quick: bool = False,
) -> Path:
    """Execute notebook `path` with `parameters`; write it to `output` (default: in place); return that path."""
    import papermill as pm
    import torch

    from .device import get_device

    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"No notebook at {path}.")
    params = {**(quick_parameters(path) if quick else {}), **(parameters or {})}
    output = Path(output).resolve() if output else path
    output.parent.mkdir(parents=True, exist_ok=True)

    # Execute into a temporary file: a failing run never overwrites a good notebook.
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".ipynb", dir=output.parent)  # hidden: not a notebook to list
    os.close(fd)
    start = time.perf_counter()
    try:
        pm.execute_notebook(
            str(path), tmp, parameters=params, cwd=str(path.parent), kernel_name="python3",
            execution_timeout=timeout, progress_bar=False, log_output=False,
        )
        nb = nbformat.read(tmp, as_version=4)
        _clean(nb)
        nb.metadata["kernelspec"] = kernelspec_metadata("python3")  # what JupyterLab writes on opening
        nb.metadata.setdefault("buildllm", {})["last_run"] = {
            "parameters": params,
            "quick": quick,
            "device": str(get_device("auto")),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(terse=True),
            "seconds": round(time.perf_counter() - start, 1),
        }
        results = collect_results(nb)
        if results:
            nb.metadata["buildllm"]["last_run"]["results"] = results
        write_notebook(nb, tmp)
        # mkstemp made the file private (0600): keep the mode the notebook had, or a new file's usual mode.
        if output.exists():
            shutil.copymode(output, tmp)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return output


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a plain string such as cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m buildllm.notebooks",
        description="Execute notebooks with parameters; by default refreshes their committed outputs in place.",
    )
    parser.add_argument("notebooks", nargs="+", help="notebook files to run")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a value of the notebook's 'parameters' cell (Python literal or string)")
    parser.add_argument("--quick", action="store_true",
                        help="use the small parameters stored in the notebook (what the tests run)")
    parser.add_argument("--output", help="write the executed notebook here instead of in place (one notebook only)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell (default 3600)")
    parser.add_argument("--normalize", action="store_true",
                        help="do not execute: only give each notebook the kernelspec and layout JupyterLab writes "
                             "(outputs unchanged), so it opens unmodified")
    args = parser.parse_args(argv)
    if args.normalize:
        if args.parameter or args.quick or args.output:
            parser.error("--normalize executes nothing: it takes no -p, --quick or --output")
        for nb_path in args.notebooks:
            print(f"{'rewritten' if normalize_notebook(nb_path) else 'unchanged'} {nb_path}")
        return 0
    if args.output and len(args.notebooks) > 1:
        parser.error("--output works with one notebook only")
    params = {name: _parse_value(value) for name, value in args.parameter}
    failed = []
    for nb_path in args.notebooks:
        start = time.perf_counter()
        try:
            out = run_notebook(nb_path, params, args.output, args.timeout, args.quick)
            print(f"ok   {nb_path} -> {out} ({time.perf_counter() - start:.1f} s)")
        except Exception as exc:  # report every notebook, then fail
            failed.append(nb_path)
            print(f"FAIL {nb_path}: {type(exc).__name__}: {str(exc)[-2000:]}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} notebook(s) failed; their files were left unchanged: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
