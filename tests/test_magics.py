"""The %mlkit magic in a real IPython shell: a real papermill run of the experiment notebook, the runs table,
the CLI's cache message, and one-line errors instead of tracebacks."""

import shlex
from pathlib import Path

import nbformat
import pytest
from conftest import NOTEBOOK
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from mlkit.runs.store import Leaderboard, RunRecord


@pytest.fixture(scope="module")
def shell(state_dir):
    "A real IPython shell with `%load_ext mlkit` done, on the isolated state of `state_dir`."
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "mlkit")
    return sh


@pytest.fixture(scope="module")
def magic_run(shell):
    "One real papermill run of the experiment notebook through `%mlkit run` with small parameters."
    line = f"run {shlex.quote(str(NOTEBOOK))} -p C=0.25 -p cv_folds=2"
    result = shell.run_cell(f"rec = %mlkit {line}")
    assert result.success, result.error_in_exec
    return shell.user_ns["rec"], line


def test_run_magic_executes_the_notebook_and_returns_its_record(magic_run, store):
    rec, _ = magic_run
    assert isinstance(rec, RunRecord) and rec.status == "finished", rec.error
    assert (
        rec.parameters["C"] == 0.25
        and rec.parameters["cv_folds"] == 2
        and rec.parameters["model"] == "logreg"
    )
    assert store.get(rec.id) == rec
    assert 0.9 < rec.metrics["roc_auc"] <= 1.0
    executed = Path(rec.output_path)
    assert executed.is_file() and '"papermill"' in executed.read_text()  # papermill executed it
    page = rec._repr_html_()
    assert f"run {rec.id}" in page and "roc_auc" in page and "primary, maximize" in page


def test_run_magic_reuses_a_cached_run_like_the_cli(magic_run, shell, capsys):
    rec, line = magic_run
    capsys.readouterr()
    again = shell.run_line_magic("mlkit", line)
    assert again.id == rec.id
    assert f"cached: run {rec.id} has the same notebook, parameters and data" in capsys.readouterr().err


def test_runs_and_compare_magics_return_tables(magic_run, shell):
    rec, _ = magic_run
    board = shell.run_line_magic("mlkit", "runs --notebook nbs/experiments/train_tabular.ipynb")
    assert isinstance(board, Leaderboard) and rec.id in [r.id for r in board.records]
    assert rec.id in board._repr_html_() and rec.id in repr(board)
    frame = shell.run_line_magic("mlkit", f"compare {rec.id} {rec.id}").to_frame()
    assert frame.loc[("parameters", "C")].tolist() == [0.25, 0.25, False]


def test_mistakes_show_the_message_not_a_traceback(shell, capsys):
    for line, message in [
        ("%mlkit compare nope-1 nope-2", "UsageError: No run with id 'nope-1'"),
        ("%mlkit runs --sortt roc_auc", "UsageError: No such option: --sortt"),
        (f"%mlkit run {shlex.quote(str(NOTEBOOK))} -p nope=1", "UsageError: Unknown parameter 'nope'"),
        ("%mlkit lsit", "UsageError: No such command 'lsit' for %mlkit"),
    ]:
        capsys.readouterr()
        result = shell.run_cell(line)
        out = capsys.readouterr()
        assert isinstance(result.error_in_exec, UsageError), line
        assert out.err.startswith(message), (line, out.err)  # the CLI's message, as `mlkit` prints it
        assert "Traceback" not in out.err + out.out and "File " not in out.err, out.err


def test_other_commands_run_through_the_cli(shell, capsys):
    capsys.readouterr()
    assert shell.run_line_magic("mlkit", f"params {shlex.quote(str(NOTEBOOK))}") is None
    assert "C (float) = 1.0" in capsys.readouterr().out


def test_sweep_and_report_magics(shell, tmp_path, monkeypatch):
    from mlkit.core import get_settings
    from mlkit.runs.studies import StudySummary
    from mlkit.runs.sweep import SweepResult

    nb = tmp_path / "peak.ipynb"
    cells = [
        nbformat.v4.new_code_cell("x: float = 0.0  # the knob", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from mlkit.runs.tracking import log_metrics\nlog_metrics({'score': -(x - 2) ** 2}, primary='score')"
        ),
    ]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, nb)
    space = tmp_path / "space.yaml"
    space.write_text("x: {type: float, low: 0, high: 4}\n")
    monkeypatch.setenv("MLKIT_WANDB_MODE", "disabled")
    get_settings.cache_clear()
    try:
        result = shell.run_line_magic(
            "mlkit", f"sweep {nb} --space {space} --trials 2 --workers 1 --sampler random --seed 0"
        )
        assert isinstance(result, SweepResult) and result.counts == {"complete": 2, "pruned": 0, "fail": 0}
        assert "2 complete" in result._repr_html_() and result.study in str(result)
        summary = shell.run_line_magic("mlkit", f"report --study {result.study}")
        assert isinstance(summary, StudySummary) and summary.report.is_file()
        assert summary.best["value"] == result.best_value and summary.best["run_id"] == result.best_run_id
        summary.report.unlink()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
