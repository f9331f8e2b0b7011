"""The CLI is thin and fast (`mlkit --help` imports none of the heavy stack), and every failure a user can cause is
one line naming the thing, exit code 1 (2 for usage), the traceback only under --debug; Ctrl-C stops a run cleanly."""

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import get_args

import nbformat
import pytest
from conftest import NOTEBOOK, ROOT

from mlkit import cli, cli_ab, cli_data, cli_registry
from mlkit.cli import app

HEAVY = ["papermill", "sklearn", "wandb", "bentoml", "torch", "onnxruntime", "pandas", "pandera", "skl2onnx"]


def test_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from mlkit.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout and "demo" in done.stdout
    assert done.stdout.splitlines()[-1] == "HEAVY=", f"imported by --help: {done.stdout.splitlines()[-1]}"


def test_params_lists_the_notebook_parameters():
    done = subprocess.run(
        [sys.executable, "-m", "mlkit.cli", "params", str(NOTEBOOK)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert (
        lines[0]
        == "  model (str) = 'logreg'  # model family: logreg | gbm | hgb | mlp, lgbm | xgb where installed"
    )
    assert any(line.startswith("  C (float) = 1.0") for line in lines)


# ---- failures a user can cause: one line, exit 1 (2 for usage), no traceback unless --debug ----

MLKIT = Path(sys.executable).parent / "mlkit"  # the console script, as a user runs it


def user_env(**extra: str) -> dict[str, str]:
    "A user's environment: no MLKIT_* variable (the project is found from the working directory), W&B offline."
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLKIT_", "BENTOML_"))}
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "BENTOML_DO_NOT_TRACK": "true", **extra}


def mlkit(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(MLKIT), *args], cwd=cwd, env=user_env(**env), capture_output=True, text=True, timeout=120
    )


def write_nb(path: Path, *sources: str) -> Path:
    cells = [nbformat.v4.new_code_cell(sources[0], metadata={"tags": ["parameters"]})]
    cells += [nbformat.v4.new_code_cell(s) for s in sources[1:]]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    "A project made by `mlkit new`, with a notebook that is not JSON, a corrupt database file and one run record."
    home = tmp_path_factory.mktemp("user")
    done = mlkit(home, "new", "proj")
    assert done.returncode == 0, done.stderr
    root = Path(done.stdout.strip())
    (root / "nbs" / "text.ipynb").write_text("garbage\n")
    (root / "broken.db").write_text("not a database" * 200)
    from mlkit.runs.store import RunRecord, RunStore

    RunStore(f"sqlite:///{root}/.mlkit/runs.db").create(
        RunRecord(
            id="r1", notebook="nbs/x.ipynb", notebook_hash="sha256:0", parameters={}, status="finished",
            created_at=dt.datetime.now(dt.UTC), run_dir="r", output_path="r/x.ipynb", metrics={"accuracy": 0.9},
            primary_metric="accuracy",
        )
    )  # fmt: skip
    return root


FAILURES = {  # id: (arguments, extra environment, exit code, what the message must name)
    "missing notebook": (["run", "nbs/nope.ipynb"], {}, 1, "No notebook at nbs/nope.ipynb"),
    "not a notebook": (["run", "nbs/text.ipynb"], {}, 1, "nbs/text.ipynb is not a Jupyter notebook"),
    "corrupt database": (["runs"], {"MLKIT_RUN_DB": "sqlite:///broken.db"}, 1, "broken.db is not a usable SQLite"),
    "invalid tag": (["promote", "bad tag!!:v1", "--alias", "production"], {}, 1, "'bad tag!!:v1' is not a model tag"),
    "bad alias": (["rollback", "--alias", "bad alias"], {}, 1, "Got 'bad alias' instead"),
    "unknown data set": (["data", "show", "nope"], {}, 1, "No data set named 'nope'"),
    "unknown sort metric": (["runs", "--sort", "nonexistent"], {}, 1, "metric 'nonexistent'"),
    "unknown status": (["runs", "--status", "bogus"], {}, 2, "'bogus' is not one of 'running', 'finished'"),
    "unknown sampler": (["sweep", "x.ipynb", "--space", "s.yaml", "--trials", "2", "--sampler", "bogus"], {}, 2, "--sampler"),
    "unknown quantization": (["export", "r1", "--quantize", "int4"], {}, 2, "'int4' is not one of 'int8', 'fp16'"),
    "port out of range": (["lab", "--port", "99999"], {}, 2, "--port"),
}  # fmt: skip


@pytest.mark.parametrize("case", FAILURES.values(), ids=FAILURES.keys())
def test_a_failure_is_one_line_naming_the_thing(project, case):
    args, env, code, named = case
    done = mlkit(project, *args, **env)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert named in done.stderr
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    else:  # click's usage error: usage, where to find help, the error
        assert len(lines) <= 3 and lines[-1].startswith("Error: "), done.stderr


def test_debug_shows_the_traceback(project):
    for done in (
        mlkit(project, "--debug", "rollback", "--alias", "bad alias"),
        mlkit(project, "rollback", "--alias", "bad alias", MLKIT_DEBUG="1"),
    ):
        assert done.returncode == 1
        assert "Traceback (most recent call last)" in done.stderr and "Got 'bad alias' instead" in done.stderr


def interruptible() -> None:
    "In the child: SIGINT as a terminal has it, even when pytest runs in a background job (where `&` ignores it)."
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_run_records_it_and_prints_one_line(project):
    "SIGINT to the process group, as a terminal's Ctrl-C sends it, while the notebook's cell sleeps."
    started = project / "nbs" / "started"
    write_nb(
        project / "nbs" / "sleep.ipynb",
        "seconds = 120",
        "import pathlib, time",
        "pathlib.Path('started').touch()\ntime.sleep(seconds)",
    )
    proc = subprocess.Popen(
        [str(MLKIT), "run", "nbs/sleep.ipynb"], cwd=project, env=user_env(), start_new_session=True,
        preexec_fn=interruptible,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(1200):  # the kernel is in the sleeping cell once the file is there
            if started.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert started.exists(), proc.communicate(timeout=30)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert len(lines) == 1 and lines[0].startswith("stopped: run "), err
    assert "Traceback" not in out + err and "IPKernelApp" not in out + err
    from mlkit.runs.store import RunStore

    record = RunStore(f"sqlite:///{project}/.mlkit/runs.db").list(notebook="nbs/sleep.ipynb")[0]
    assert record.status == "stopped" and record.id in lines[0]
    assert "stopped early at cell 3" in record.error and "(Ctrl-C)" in record.error
    assert (Path(record.run_dir) / "kernel.log").is_file()  # the kernel's own complaints went there


def test_help_lists_choices_and_shows_flags_as_flags():
    from typer.testing import CliRunner

    runner = CliRunner()
    run_help = runner.invoke(app, ["run", "--help"]).output
    assert "--force " in run_help and "<bool>" not in run_help
    runs_help = runner.invoke(app, ["runs", "--help"]).output
    assert "<running|finished|failed|pruned|stopped>" in runs_help
    sweep_help = runner.invoke(app, ["sweep", "--help"]).output
    assert "<tpe|random|grid>" in sweep_help and "<median|hyperband|none>" in sweep_help
    assert "<maximize|minimize>" in sweep_help


def test_the_choices_are_the_library_s_own():
    "The CLI spells its choices out (so --help imports nothing heavy): they must be the library's."
    from mlkit.data.catalog import TASKS
    from mlkit.monitoring.abtest import MODES
    from mlkit.registry.quantize import QUANTIZERS
    from mlkit.runs.store import STATUSES
    from mlkit.runs.trials import PRUNERS, SAMPLERS

    assert get_args(cli.Status) == STATUSES
    assert get_args(cli.Sampler) == tuple(SAMPLERS) and get_args(cli.Pruner) == tuple(PRUNERS)
    assert get_args(cli_data.Task) == TASKS and [q.value for q in cli_registry.Quantize] == list(QUANTIZERS)
    assert get_args(cli_ab.Mode) == MODES
