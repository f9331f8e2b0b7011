"""Every notebook shape papermill runs, run by `mlkit run` with the same outcome: one small notebook per shape,
through a real kernel, each checked for its run record (status, parameters, error) and the CLI's exit code,
against papermill's own exit code where the shape is about how a run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

from mlkit.runs.runner import cached_run

BIN = Path(sys.executable).parent


def write_nb(path: Path, *sources: str, parameters: bool = True) -> Path:
    "A notebook of code cells; the first is tagged 'parameters' unless `parameters` is False."
    cells = [nbformat.v4.new_code_cell(s) for s in sources]
    if parameters:
        cells[0].metadata["tags"] = ["parameters"]
    kernel = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": kernel}), path)
    return path


def mlkit(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlkit.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ.copy(),
        timeout=timeout,
    )


def papermill_rc(nb: Path, tmp_path: Path) -> int:
    "The exit code of papermill's own CLI on `nb`."
    done = subprocess.run(
        [str(BIN / "papermill"), str(nb), str(tmp_path / f"pm-{nb.name}"), "--no-progress-bar"],
        capture_output=True,
        text=True,
        cwd=nb.parent,
        timeout=300,
    )
    return done.returncode


def run_cli(nb: Path, *params: str) -> tuple[subprocess.CompletedProcess, str | None]:
    "`mlkit run NB -p ...` and the id of the run it made (the last stdout line, else the newest record)."
    done = mlkit("run", str(nb), *[a for p in params for a in ("-p", p)])
    lines = done.stdout.strip().splitlines()
    return done, (lines[-1] if lines else None)


def newest(store, nb: Path):
    return next(r for r in store.list() if r.notebook.endswith(nb.name))


def test_untyped_literals_take_their_literals_types(state_dir, store, tmp_path):
    layers = "layers = [\n    32,  # first\n    16,\n]"
    nb = write_nb(
        tmp_path / "untyped.ipynb",
        f'%load_ext autoreload\nalpha = 0.5  # learning rate\nmsg = None\nn = 3\nname = "x"\n{layers}\nb = n * 2  # derived',
        "assert (type(alpha), type(n), type(name), type(layers)) == (float, int, str, list)\n"
        "assert b == 6  # papermill does not recompute a derived line",
    )
    described = mlkit("params", str(nb)).stdout
    assert "alpha (float) = 0.5  # learning rate" in described and "n (int) = 3" in described
    assert "layers (list) = [32, 16]" in described and "b (derived) = n * 2" in described
    done, run_id = run_cli(nb, "alpha=1", "n=4", "name=123", "layers=[8, 4]")
    assert done.returncode == 0, done.stderr
    rec = store.get(run_id)
    assert rec.status == "finished" and rec.error is None
    assert rec.parameters == {"alpha": 1, "msg": None, "n": 4, "name": "123", "layers": [8, 4]}
    assert "'b = n * 2' in the parameters cell keeps the value computed from the defaults" in done.stderr
    refused = mlkit("run", str(nb), "-p", "n=2.5")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "The 'n' parameter must be int. Got 2.5 (float) instead." in refused.stderr
    derived = mlkit("run", str(nb), "-p", "b=5")
    assert derived.returncode == 1 and "Traceback" not in derived.stderr
    assert "is not a literal (`b = n * 2`)" in derived.stderr
    assert "move that line to the next cell" in derived.stderr


def test_none_defaults_take_any_literal(state_dir, store, tmp_path):
    nb = write_nb(tmp_path / "nones.ipynb", "msg = None\nseed = None  # random seed", "print(msg, seed)")
    done, run_id = run_cli(nb, "msg=[1, two]", "seed=7")
    assert done.returncode == 0, done.stderr
    rec = store.get(run_id)
    assert (rec.status, rec.parameters) == ("finished", {"msg": [1, "two"], "seed": 7})


def test_quoted_annotations_are_read(state_dir, store, tmp_path):
    nb = write_nb(
        tmp_path / "quoted.ipynb",
        'c: "NoneType" = None\nd: "float" = 1.0  # a quoted float',
        "assert isinstance(d, float) and c == 5",
    )
    assert "d (float) = 1.0  # a quoted float" in mlkit("params", str(nb)).stdout
    done, run_id = run_cli(nb, "c=5", "d=2.5")
    assert done.returncode == 0, done.stderr
    rec = store.get(run_id)
    assert (rec.status, rec.parameters) == ("finished", {"c": 5, "d": 2.5})
    refused = mlkit("run", str(nb), "-p", "d=abc")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "The 'd' parameter must be float. Got 'abc' (str) instead." in refused.stderr


def test_a_notebook_without_parameters_cell_gets_overrides_at_its_top(state_dir, store, tmp_path):
    nb = write_nb(
        tmp_path / "bare.ipynb", "seen = globals().get('k', 'unset')\nprint(seen)", parameters=False
    )
    done, run_id = run_cli(nb, "k=5")
    assert done.returncode == 0, done.stderr
    assert "does not contain a cell with tag 'parameters'" in done.stderr
    rec = store.get(run_id)
    assert (rec.status, rec.parameters) == ("finished", {"k": 5})
    first = nbformat.read(rec.output_path, as_version=4).cells[0]
    assert "injected-parameters" in first.metadata["tags"] and "k = 5" in first.source
    plain, plain_id = run_cli(nb)  # no overrides: it just runs, nothing injected
    assert plain.returncode == 0, plain.stderr
    rec = store.get(plain_id)
    assert (rec.status, rec.parameters) == ("finished", {})
    cells = nbformat.read(rec.output_path, as_version=4).cells
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in cells)


@pytest.mark.parametrize(
    "name, stop, error",
    [
        ("sysexit", "sys.exit(0)", "stopped early at cell 3 (`sys.exit(0)`) by SystemExit: 0"),
        (
            "raise_systemexit",
            "raise SystemExit",
            "stopped early at cell 3 (`raise SystemExit`) by SystemExit",
        ),
    ],
)
def test_an_early_exit_is_stopped_never_cached_never_exported(state_dir, store, tmp_path, name, stop, error):
    nb = write_nb(tmp_path / f"{name}.ipynb", "k = 1", "import sys", stop, "raise ValueError('not reached')")
    done, run_id = run_cli(nb)
    assert done.returncode == papermill_rc(nb, tmp_path) == 0, done.stderr  # papermill: success
    rec = store.get(run_id)
    assert (rec.status, rec.error, rec.parameters) == ("stopped", error, {"k": 1})
    assert f"warning: run {run_id} {error}" in done.stderr
    assert cached_run(store, rec.cache_key) is None
    again, again_id = run_cli(nb)  # executed again, not reused
    assert again.returncode == 0 and again_id != run_id and "cached:" not in again.stderr
    refused = mlkit("export", run_id)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"Run {run_id} {error}" in refused.stderr and "run to its end" in refused.stderr
    listed = json.loads(mlkit("runs", "--json", "--status", "stopped").stdout)
    assert run_id in [r["id"] for r in listed]
    table = mlkit("runs", "--notebook", rec.notebook)
    assert table.returncode == 0 and "stopped" in table.stdout


def test_a_nonzero_exit_fails_as_papermill_fails_it(state_dir, store, tmp_path):
    nb = write_nb(tmp_path / "exit1.ipynb", "k = 1", "import sys\nsys.exit(3)")
    done, _ = run_cli(nb)
    assert done.returncode == papermill_rc(nb, tmp_path) == 1
    rec = newest(store, nb)
    assert (rec.status, rec.error) == ("failed", "SystemExit: 3")


def test_a_keyboard_interrupt_in_the_kernel_is_stopped(state_dir, store, tmp_path):
    nb = write_nb(tmp_path / "kbi.ipynb", "k = 1", "raise KeyboardInterrupt", "print('not reached')")
    done, _ = run_cli(nb)
    assert done.returncode == papermill_rc(nb, tmp_path) == 1  # papermill fails it; mlkit too, as stopped
    rec = newest(store, nb)
    error = "stopped early at cell 2 (`raise KeyboardInterrupt`) by KeyboardInterrupt"
    assert (rec.status, rec.error) == ("stopped", error)
    assert error in done.stderr and "Traceback" not in done.stderr
    assert cached_run(store, rec.cache_key) is None


def test_ctrl_c_on_mlkit_run_records_a_stopped_run(state_dir, store, tmp_path):
    nb = write_nb(tmp_path / "ctrlc.ipynb", "k = 1", "import time\ntime.sleep(120)", "print('not reached')")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlkit.cli", "run", str(nb)],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # SIGINT as a terminal has it, even when pytest runs in a background job (where `&` ignores it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until papermill has saved the sleeping cell as running
            runs = [r for r in store.list(status="running") if r.notebook.endswith(nb.name)]
            out = Path(runs[0].output_path) if runs else None
            if out and out.exists() and "time.sleep" in _running_source(out):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the run never reached its sleeping cell")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, (proc.returncode, stderr)  # 128 + SIGINT, as a shell reports Ctrl-C
    rec = newest(store, nb)
    assert rec.status == "stopped", rec
    assert rec.error.startswith("stopped early at cell 2 (`import time`) by KeyboardInterrupt")
    assert cached_run(store, rec.cache_key) is None


def _running_source(out: Path) -> str:
    try:
        cells = nbformat.read(out, as_version=4).cells
    except Exception:  # caught mid-write
        return ""
    running = [c for c in cells if c.metadata.get("papermill", {}).get("status") == "running"]
    return running[0].source if running else ""


def test_a_broken_cell_fails_with_its_error(state_dir, store, tmp_path):
    nb = write_nb(tmp_path / "broken.ipynb", "k = 1", "raise ValueError('broken on purpose')")
    done, _ = run_cli(nb)
    assert done.returncode == papermill_rc(nb, tmp_path) == 1
    rec = newest(store, nb)
    assert (rec.status, rec.error) == ("failed", "ValueError: broken on purpose")
    assert "ValueError: broken on purpose" in done.stderr and "marked at the failing cell" in done.stderr


@pytest.mark.parametrize(
    "name, magic, message",
    [
        ("notamagic", "%notamagic", "UsageError: Line magic function `%notamagic` not found."),
        ("runmissing", "%run missing.py", "File `'missing.py'` not found."),
    ],
)
def test_a_line_magic_failure_keeps_its_message(state_dir, store, tmp_path, name, magic, message):
    nb = write_nb(tmp_path / f"{name}.ipynb", "k = 1", magic, "print('not reached')")
    done, _ = run_cli(nb)
    assert done.returncode == papermill_rc(nb, tmp_path) == 1
    rec = newest(store, nb)
    assert rec.status == "failed" and message in rec.error, rec.error
    assert message in done.stderr


def test_a_sweep_trial_that_stops_early_counts_as_failed(settings, store, tmp_path):
    from mlkit.runs.sweep import run_trial

    nb = write_nb(tmp_path / "trial_exit.ipynb", "k = 1", "raise SystemExit(0)")
    out = run_trial(str(nb), {"k": 2}, settings, "exit-study", 0, 0, str(tmp_path / "j"), "none")
    rec = store.get(out["run_id"])
    assert (out["state"], rec.status, rec.study, rec.trial) == ("fail", "stopped", "exit-study", 0)
    assert out["error"] == rec.error == "stopped early at cell 2 (`raise SystemExit(0)`) by SystemExit: 0"


def test_params_says_when_a_notebook_has_no_parameters_cell(state_dir, tmp_path):
    nb = write_nb(tmp_path / "bare_params.ipynb", "print(1)", parameters=False)
    done = mlkit("params", str(nb))
    assert done.returncode == 0 and done.stdout == ""
    assert "has no cell tagged 'parameters'" in done.stderr
