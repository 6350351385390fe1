"""Execute every notebook of the repository with its small (quick) parameters, as a learner would run it."""

from __future__ import annotations

import nbformat
import pytest

from conftest import REPO

# Top-level notebooks (setup.ipynb) and those in any folder, except hidden ones (.venv, .ipynb_checkpoints).
NOTEBOOKS = sorted(
    p.relative_to(REPO)
    for p in [*REPO.glob("*.ipynb"), *REPO.glob("*/**/*.ipynb")]
    if not any(part.startswith(".") for part in p.relative_to(REPO).parts)
)


def test_every_chapter_has_its_notebooks():
    """Each chapter folder that exists holds an exercise-solutions notebook."""
    for chapter in ["ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "appendix-A", "appendix-E"]:
        folder = REPO / chapter
        if any(folder.glob("*.ipynb")):
            assert (folder / "exercise-solutions.ipynb").exists() or chapter == "appendix-E", chapter


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=str)
def test_committed_notebook_is_well_formed(notebook):
    """Committed notebooks: one 'parameters' cell, outputs from the runner, no error outputs."""
    nb = nbformat.read(REPO / notebook, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{notebook} needs exactly one cell tagged 'parameters'"
    assert "last_run" in nb.metadata.get("buildllm", {}), (
        f"{notebook} was not executed by the runner: python -m buildllm.notebooks {notebook}")
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code_cells), f"{notebook} has unexecuted cells"
    errors = [o for c in code_cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{notebook} has error outputs"
    # A plot that shows nothing means the notebook ran with a non-interactive backend (e.g. MPLBACKEND=Agg).
    blank = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "plt.show()" in c.source
             and not any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert not blank, (f"{notebook}: cells {blank} call plt.show() but hold no image; re-run it with the "
                       f"runner without MPLBACKEND=Agg")


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=str)
def test_notebook_runs(notebook, tmp_path):
    from buildllm.notebooks import run_notebook

    out = run_notebook(REPO / notebook, output=tmp_path / notebook.name, quick=True, timeout=900)
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata["buildllm"]["last_run"]["quick"] is True
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=str)
def test_notebook_opens_unmodified_in_jupyterlab(notebook):
    """The file is what JupyterLab saves, and its kernelspec is what JupyterLab writes when the kernel starts.

    JupyterLab saves a notebook as nbformat's JSON (checked in a browser: a notebook opened and saved
    unchanged in JupyterLab 4.6 kept every byte) and, when its kernel starts, copies the kernel's
    name, display name and language into metadata.kernelspec; any difference marks the notebook
    modified at once. The runner writes both; `python -m buildllm.notebooks --normalize PATH` fixes
    a notebook without executing it.
    """
    from buildllm.notebooks import kernelspec_metadata, notebook_text

    raw = (REPO / notebook).read_bytes().decode("utf-8")
    nb = nbformat.reads(raw, as_version=4)
    fix = f"python -m buildllm.notebooks --normalize {notebook}"
    assert nb.metadata.get("kernelspec") == kernelspec_metadata("python3"), (
        f"{notebook}: kernelspec {nb.metadata.get('kernelspec')} is not the one JupyterLab writes; run {fix}")
    assert nb.metadata.get("language_info", {}).get("name") == "python", f"{notebook}: no language_info; re-run it"
    assert notebook_text(nb) == raw, f"{notebook} is not laid out as JupyterLab saves it; run {fix}"
