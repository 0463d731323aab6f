"""descend in Jupyter: the example notebook runs top to bottom through nbclient (a real kernel), fits and loaded runs
display their curves and summary, and a user's mistake in a cell is one line, not a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import descend as ds
from descend import config, notebook
from descend.runs import experiment

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("nb") / "iris"
    recipe = config.validate({"name": "iris-nb", "data": {"name": "iris"}, "train": {"epochs": 3, "device": "cpu"}})
    return experiment.build(recipe).fit(out=out), out


def test_a_fit_and_a_loaded_run_show_their_curves_and_summary(fitted):
    result, out = fitted
    for shown, title in (
        (result._repr_html_(), f"iris-nb -&gt; {out}"),
        (ds.load_run(out)._repr_html_(), f"{out} (final weights)"),
    ):
        assert f"<h3>{title}</h3>" in shown and '<img alt="loss and metric per epoch' in shown
        assert '<td class="text">test_accuracy</td>' in shown and "best epoch" in shown


@pytest.fixture
def shell():
    interactive = pytest.importorskip("IPython.core.interactiveshell")
    ipython = interactive.InteractiveShell.instance()
    yield ipython
    interactive.InteractiveShell.clear_instance()


def test_a_user_error_in_a_cell_is_one_line_and_other_errors_keep_their_traceback(shell, capsys):
    assert notebook.install()
    result = shell.run_cell(
        'from descend import config\nconfig.validate({"data": {"name": "iris"}, "train": {"epoch": 3}})'
    )
    out = capsys.readouterr()
    lines = (out.out + out.err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("descend: error: config: unknown field 'train.epoch'; allowed")
    assert "epochs" in lines[0]
    assert isinstance(result.error_in_exec, ds.UserError)  # the cell still failed
    shell.run_cell("1 / 0")
    out = capsys.readouterr()
    assert "ZeroDivisionError" in out.out + out.err and "Traceback" in out.out + out.err


def test_a_handler_of_the_users_own_is_kept(shell):
    def own(self, etype, value, tb, tb_offset=None):
        return ["mine"]

    shell.set_custom_exc((KeyError,), own)
    assert notebook.install() is False and shell.custom_exceptions == (KeyError,)


def test_outside_ipython_nothing_is_installed():
    assert notebook.install() is False


@pytest.mark.slow
def test_the_example_notebook_runs_in_a_kernel(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for name in ("notebook.ipynb", "digits_mlp.toml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    book = nbformat.read(tmp_path / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(
        book, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    fit, report, predict, mistake = code[1], code[2], code[3], code[4]
    kinds = {key for output in fit.outputs for key in output.get("data", {})}
    assert "application/vnd.jupyter.widget-view+json" in kinds  # the live progress bar (rich, ipywidgets)
    assert any("<img" in output.get("data", {}).get("text/html", "") for output in fit.outputs)
    assert "<h1>" in report.outputs[0]["data"]["text/html"]
    assert "predicted:" in "".join(output.get("text", "") for output in predict.outputs)
    (error,) = [output for output in mistake.outputs if output.output_type == "error"]
    assert error.ename == "UserError" and len(error.traceback) == 1
    assert error.traceback[0].startswith("descend: error: ") and "train.epoch" in error.traceback[0]
    assert (tmp_path / "runs" / "notebook-digits" / "summary.json").is_file()
