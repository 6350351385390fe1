"""The notebook runner (`python -m buildllm.notebooks`) on tiny notebooks written by the tests."""

from __future__ import annotations

import os
import stat

import nbformat
import pytest
from nbformat import v4

from buildllm.notebooks import _parse_value, main, quick_parameters, run_notebook
from conftest import run_script


def write_notebook(path, body: str) -> None:
    """Write a notebook: a markdown cell, a 'parameters' cell (n=3, name="default"), then `body`."""
    params = v4.new_code_cell('n = 3\nname = "default"')
    params.metadata["tags"] = ["parameters"]
    nb = v4.new_notebook(cells=[v4.new_markdown_cell("# A tiny notebook"), params, v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["buildllm"] = {"quick_parameters": {"n": 1}}
    nbformat.write(nb, path)


def text_outputs(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


BODY = "import os\nprint(n * 2, name)\nprint('cwd', os.getcwd())"


def test_parameters_injected_and_run_recorded(tmp_path):
    source = tmp_path / "nb" / "tiny.ipynb"
    source.parent.mkdir()
    write_notebook(source, BODY)
    original = source.read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    out = run_notebook(source, parameters={"n": 5}, output=tmp_path / "out" / "tiny.ipynb", timeout=120)

    assert out == tmp_path / "out" / "tiny.ipynb"
    assert source.read_bytes() == original  # --output leaves the source alone
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # a normal new file, not mkstemp's 0600
    nb = nbformat.read(out, as_version=4)
    assert "10 default" in text_outputs(nb)
    assert f"cwd {source.parent}" in text_outputs(nb)  # runs in the notebook's own folder
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "n = 5" in injected[0].source
    last_run = nb.metadata["buildllm"]["last_run"]
    assert last_run["parameters"] == {"n": 5} and last_run["quick"] is False
    assert {"device", "python", "torch", "platform", "seconds"} <= set(last_run)
    assert nb.metadata["buildllm"]["quick_parameters"] == {"n": 1}
    # Per-run noise is dropped, so committed diffs only show real changes.
    assert "papermill" not in nb.metadata
    assert not any("papermill" in c.metadata or "execution" in c.metadata for c in nb.cells)


def test_cli_quick_in_place(tmp_path, capsys):
    path = tmp_path / "tiny.ipynb"
    write_notebook(path, BODY)
    path.chmod(0o664)
    assert main([str(path), "--quick", "-p", "name", "cli", "--timeout", "120"]) == 0
    assert f"ok   {path} -> {path}" in capsys.readouterr().out
    nb = nbformat.read(path, as_version=4)
    assert "2 cli" in text_outputs(nb)  # n from quick_parameters, name from -p
    assert nb.metadata["buildllm"]["last_run"]["parameters"] == {"n": 1, "name": "cli"}
    assert nb.metadata["buildllm"]["last_run"]["quick"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.ipynb"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o664  # the in-place run keeps the file's mode


def test_failing_notebook_is_left_unchanged(tmp_path, capsys):
    path = tmp_path / "broken.ipynb"
    write_notebook(path, "raise RuntimeError('this cell fails on purpose')")
    original = path.read_bytes()
    assert main([str(path), "--timeout", "120"]) == 1
    err = capsys.readouterr().err
    assert f"FAIL {path}: PapermillExecutionError" in err
    assert "this cell fails on purpose" in err
    assert "their files were left unchanged" in err
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.ipynb"]  # no temporary file left


def test_missing_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="No notebook at"):
        run_notebook(tmp_path / "nope.ipynb")


def test_quick_parameters_and_value_parsing(tmp_path):
    path = tmp_path / "tiny.ipynb"
    write_notebook(path, "pass")
    assert quick_parameters(path) == {"n": 1}
    assert _parse_value("5") == 5 and _parse_value("0.5") == 0.5 and _parse_value("[1, 2]") == [1, 2]
    assert _parse_value("cpu") == "cpu" and _parse_value("True") is True


def test_output_with_several_notebooks_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["a.ipynb", "b.ipynb", "--output", str(tmp_path / "x.ipynb")])
    assert info.value.code == 2
    assert "--output works with one notebook only" in capsys.readouterr().err


def test_cli_help(tmp_path):
    proc = run_script(["-m", "buildllm.notebooks", "--help"], cwd=tmp_path)
    assert "usage: python -m buildllm.notebooks" in proc.stdout
    assert "--quick" in proc.stdout and "--parameter NAME VALUE" in proc.stdout


def test_reported_results_reach_the_notebook_metadata(tmp_path):
    """`report(...)` in a cell: the runner records the values in last_run["results"]."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("n = 3", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("from buildllm.notebooks import report\nreport(weights='random', accuracy=n / 4)"),
        nbformat.v4.new_code_cell("report(accuracy=0.5, note='later values win')"),
    ]
    path = tmp_path / "r.ipynb"
    nbformat.write(nb, path)
    run_notebook(path)
    done = nbformat.read(path, as_version=4)
    assert done.metadata["buildllm"]["last_run"]["results"] == {"weights": "random", "accuracy": 0.5,
                                                                 "note": "later values win"}
    assert "기록한 결과: weights = random, accuracy = 0.75" in done.cells[1].outputs[0]["data"]["text/plain"]


def test_runner_writes_what_jupyterlab_saves(tmp_path):
    """The kernelspec JupyterLab writes on opening (ipykernel's display name), and JupyterLab's file layout."""
    from buildllm.notebooks import kernelspec_metadata, notebook_text

    path = tmp_path / "tiny.ipynb"
    write_notebook(path, "print('hi')")  # an author's "Python 3", which JupyterLab would replace
    run_notebook(path, timeout=120)
    raw = path.read_text(encoding="utf-8")
    nb = nbformat.reads(raw, as_version=4)
    assert nb.metadata["kernelspec"] == kernelspec_metadata("python3")
    assert nb.metadata["kernelspec"]["display_name"] != "Python 3"  # ipykernel's own name, e.g. "Python 3 (ipykernel)"
    assert nb.metadata["language_info"]["name"] == "python"
    assert notebook_text(nb) == raw and raw.endswith("}\n")


def test_normalize_changes_the_kernelspec_only(tmp_path, capsys):
    from buildllm.notebooks import kernelspec_metadata

    path = tmp_path / "tiny.ipynb"
    write_notebook(path, "print('hi')")
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].outputs = [v4.new_output("stream", name="stdout", text="an output the runner never re-made\n")]
    nb.cells[2].execution_count = 7
    with open(path, "w", encoding="utf-8") as f:
        f.write(nbformat.writes(nb, indent=2))  # another layout, as some editors write
    os.chmod(path, 0o640)
    assert main(["--normalize", str(path)]) == 0
    assert capsys.readouterr().out == f"rewritten {path}\n"
    after = nbformat.read(path, as_version=4)
    assert after.metadata["kernelspec"] == kernelspec_metadata("python3")
    after.metadata["kernelspec"] = nb.metadata["kernelspec"]
    assert after == nb  # same cells, outputs and metadata otherwise
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert main(["--normalize", str(path)]) == 0
    assert capsys.readouterr().out == f"unchanged {path}\n"
    with pytest.raises(SystemExit):
        main(["--normalize", "--quick", str(path)])


def test_numbers_are_written_as_jupyterlab_writes_them():
    """JupyterLab sends numbers through JavaScript, where 23.0 is 23; other floats keep Python's spelling."""
    from buildllm.notebooks import notebook_text

    nb = v4.new_notebook()
    nb.metadata["buildllm"] = {"last_run": {"seconds": 23.0, "lr": 5e-05, "share": 0.5, "steps": 90, "big": 1e22}}
    text = notebook_text(nb)
    assert '"seconds": 23,' in text and '"lr": 5e-05,' in text and '"share": 0.5,' in text
    assert '"big": 1e+22,' in text and '"steps": 90' in text
    assert notebook_text(nbformat.reads(text, as_version=4)) == text  # a second save changes nothing
