"""`mlkit` on the command line: a thin typer layer over the Python API.

Every command is one call a notebook can make too (`mlkit.runs.runner.run_notebook`, `mlkit.runs.sweep.sweep`,
`mlkit.registry.export.export_run`, ...). Heavy libraries (papermill, scikit-learn, W&B, BentoML, Optuna, Dask, torch)
are imported inside the commands that use them, so `mlkit --help` stays fast. Hand-written glue, not generated.

The commands whose result a notebook wants to look at (`run`, `runs`, `compare`, `sweep`, `report`, `models`)
return it as well as printing it: inside `returning()` they only return it, which is how `%mlkit` (`mlkit.magics`)
runs this very app and displays the table or record instead of its text.

A failure a user can cause is one line on stderr and exit code 1 (2 for a usage error: an unknown option, a value
outside an option's choices); `mlkit --debug ...` or MLKIT_DEBUG=1 shows the traceback as well (`main`).
"""

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from mlkit.cli_ab import app as ab_app
from mlkit.cli_common import returning_now, show
from mlkit.cli_data import data_app
from mlkit.cli_registry import registry_app

app = typer.Typer(
    help="mlkit: notebook-first ML from experiment to served model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # typer's rich help shows a flag as `--force <bool>`, as if it took a value
)

# The choices of options, spelled here so that `mlkit --help` imports no heavy library; tests/test_cli.py checks
# that they are the library's own (runs.store.STATUSES, runs.trials.SAMPLERS and PRUNERS, ...); `mlkit data`'s are in
# mlkit.cli_data.
Status = Literal["running", "finished", "failed", "pruned", "stopped"]
Sampler = Literal["tpe", "random", "grid"]
Pruner = Literal["median", "hyperband", "none"]
Direction = Literal["maximize", "minimize"]


app.add_typer(
    registry_app
)  # export, build, models, promote, rollback, audit, lineage, card (mlkit.cli_registry)
app.add_typer(data_app, name="data")  # mlkit data add | list | show (mlkit.cli_data)
app.add_typer(ab_app, name="ab")  # mlkit ab start | stop | promote | status | report (mlkit.cli_ab)

_debug = False  # set by `mlkit --debug`: main() shows the traceback of a failure too


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="on a failure, show the traceback too (or set MLKIT_DEBUG=1)")
    ] = False,
) -> None:
    "mlkit: notebook-first ML from experiment to served model."
    global _debug
    _debug = _debug or debug


def _overrides(notebook: Path, param: list[str] | None, params_file: Path | None) -> dict[str, Any]:
    "The values of `-f FILE` then `-p name=value` (the later wins), typed by NOTEBOOK's parameters cell."
    from mlkit.runs.params import load_params_file, parse_assignments, parse_parameters

    overrides = load_params_file(params_file) if params_file else {}
    overrides.update(parse_assignments(param or [], parse_parameters(notebook)))
    return overrides


@app.command()
def run(
    notebook: Annotated[Path, typer.Argument(help="experiment notebook to execute")],
    param: Annotated[
        list[str] | None,
        typer.Option("-p", "--param", metavar="NAME=VALUE", help="override a parameter (repeatable)"),
    ] = None,
    params_file: Annotated[
        Path | None, typer.Option("-f", "--params-file", help="YAML file of overrides")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="execute even if an identical run is cached")
    ] = False,
) -> Any:
    """Execute NOTEBOOK with parameters through papermill; prints the run id (an identical earlier run is reused).

    Exits as papermill does: 0 when the notebook ran, or stopped itself with sys.exit(0) or `raise SystemExit`
    (a warning says so; the run is recorded 'stopped'); 1 when a cell raised (KeyboardInterrupt included: the
    run is 'stopped') or exited non-zero. Ctrl-C on this command records the run 'stopped', prints one line naming
    it and exits 130 (papermill, through click, exits 1): 128 + SIGINT tells an interrupt from a failure. The kernel's
    own log goes to the run's kernel.log.
    """
    import datetime as dt

    overrides = _overrides(notebook, param, params_file)  # checked before papermill and the rest are imported

    from mlkit.runs.runner import run_notebook

    started = dt.datetime.now(dt.UTC)
    try:
        record = run_notebook(notebook, overrides, force=force)
    except KeyboardInterrupt as err:  # Ctrl-C: the runner recorded the run 'stopped' and says which in a note
        if returning_now():  # in a notebook (`%mlkit run`) the interrupt stops the cell, as any other
            raise
        typer.echo(f"stopped: {(getattr(err, '__notes__', None) or ['interrupted'])[-1]}", err=True)
        raise typer.Exit(130) from None
    if record.created_at < started:
        typer.echo(
            f"cached: run {record.id} has the same notebook, parameters and data (--force reruns)", err=True
        )
    if record.status == "stopped":  # sys.exit(0) in a cell: papermill exits 0 too, so does this command
        typer.echo(
            f"warning: run {record.id} {record.error}; it is recorded 'stopped', never reused as a cached "
            "run, and `mlkit export` refuses it.",
            err=True,
        )
    return show(record, record.id)


@app.command()
def params(notebook: Annotated[Path, typer.Argument(help="experiment notebook")]) -> None:
    "List NOTEBOOK's declared parameters: name (type) = default  # help."
    from mlkit.runs.params import describe, parse_parameters

    declared = parse_parameters(notebook)
    if not declared.tagged:
        typer.echo(
            f"{notebook} has no cell tagged 'parameters': `mlkit run -p` injects overrides at its top, unchecked.",
            err=True,
        )
    if declared:
        typer.echo(describe(declared))


@app.command()
def runs(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON records instead of a table")] = False,
    notebook: Annotated[
        str | None, typer.Option(help="only runs of this notebook (path from the root)")
    ] = None,
    study: Annotated[str | None, typer.Option(help="only trials of this sweep study")] = None,
    status: Annotated[Status | None, typer.Option(help="only runs with this status")] = None,
    sort: Annotated[
        str | None, typer.Option(help="rank by this metric (default: each run's primary metric)")
    ] = None,
) -> Any:
    "List run records, best first. The cache column is the start of each run's cache key."
    from mlkit.runs.store import list_runs

    board = list_runs(notebook=notebook, status=status, study=study, sort=sort)
    if as_json:
        rows = [r.to_json() for r in board.records]
        return show(rows, json.dumps(rows, indent=1))
    return show(board)


@app.command()
def compare(run_ids: Annotated[list[str], typer.Argument(help="two or more run ids")]) -> Any:
    "Parameters and metrics of RUN_IDS side by side, differences highlighted."
    from mlkit.core import get_settings
    from mlkit.runs.store import RunStore
    from mlkit.runs.studies import compare_table

    store = RunStore(get_settings().run_db)
    return show(compare_table([store.get(r) for r in run_ids]))


@app.command()
def sweep(
    notebook: Annotated[Path, typer.Argument(help="experiment notebook")],
    space: Annotated[Path, typer.Option("--space", help="search space YAML")],
    trials: Annotated[
        int, typer.Option("--trials", help="trials in total (across all drivers of the study)")
    ],
    workers: Annotated[int | None, typer.Option(help="LocalCluster worker processes")] = None,
    sampler: Annotated[Sampler, typer.Option(help="Optuna sampler")] = "tpe",
    pruner: Annotated[Pruner, typer.Option(help="Optuna pruner of unpromising trials")] = "median",
    metric: Annotated[
        str | None, typer.Option(help="metric to optimise (default: the primary metric)")
    ] = None,
    direction: Annotated[
        Direction | None, typer.Option(help="default: the metric's own (e.g. rmse minimizes)")
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="Optuna storage: journal file or SQLAlchemy URL")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address (default: a LocalCluster)")
    ] = None,
    study: Annotated[str | None, typer.Option(help="study name (default: derived, so reruns resume)")] = None,
    max_failures: Annotated[int | None, typer.Option(help="stop once more trials than this failed")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="rerun trials whose identical run is cached")
    ] = False,
    seed: Annotated[int | None, typer.Option(help="sampler seed")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "-p", "--param", metavar="NAME=VALUE", help="a fixed parameter of every trial (repeatable)"
        ),
    ] = None,
    params_file: Annotated[
        Path | None, typer.Option("-f", "--params-file", help="YAML file of fixed parameters")
    ] = None,
) -> Any:
    "Optuna sweep of NOTEBOOK, each trial a papermill run on a Dask worker; prints the study name."
    from mlkit.core import get_settings
    from mlkit.progress import SweepProgress
    from mlkit.runs.sweep import log_sweep_table
    from mlkit.runs.sweep import sweep as run_sweep

    fixed = _overrides(notebook, param, params_file)
    with SweepProgress(trials) as progress:
        result = run_sweep(
            notebook, space, trials, workers=workers, sampler=sampler, pruner=pruner, metric=metric,
            direction=direction, storage=storage, scheduler=scheduler, study=study, max_failures=max_failures,
            force=force, seed=seed, on_event=progress.event, fixed=fixed,
        )  # fmt: skip
    log_sweep_table(result, get_settings())  # the trials as a W&B table (a warning if W&B fails)
    c = result.counts
    note = (
        f"study {result.study}: {c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed; "
        f"best {result.best_value} with {result.best_params} (run {result.best_run_id})"
    )
    return show(result, result.study, note=note)


@app.command()
def sync(
    run_id: Annotated[
        str | None, typer.Option("--run", help="push this run (all its offline segments)")
    ] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="push every offline run not yet synced")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list what would be pushed")] = False,
) -> Any:
    "Push offline W&B runs and their artifacts to W&B (needs WANDB_API_KEY or `wandb login`); prints what it pushed and skipped."
    from mlkit.core import ConfigError, get_settings
    from mlkit.runs.wandb_log import sync_runs

    if bool(run_id) == all_runs:
        raise ConfigError("Say which runs to push: `mlkit sync --run RUN_ID` or `mlkit sync --all`.")
    report = sync_runs(get_settings(), run_id, dry_run=dry_run)
    return show(report, "\n".join(report.lines()) or "nothing to push: no offline W&B runs")


@app.command()
def report(
    study: Annotated[str, typer.Option("--study", help="the sweep study to report")],
    storage: Annotated[
        str | None, typer.Option(help="Optuna storage (default: setting sweep_storage)")
    ] = None,
) -> Any:
    "Write the study's HTML report (leaderboard, history, importances, slices) under reports/; prints its path."
    from mlkit.runs.studies import study_report, study_summary

    summary = study_summary(study, storage, report=study_report(study, storage=storage))
    return show(summary, str(summary.report))


@app.command()
def drift(
    model: Annotated[
        str | None, typer.Option(help="alias, tag or model name; default: the 'model' setting")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="only rows logged since (ISO time); default: the last window")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option(help="where the HTML report goes; default: reports/drift")
    ] = None,
) -> None:
    "Test the served inputs of MODEL for drift against its reference; write an HTML report."
    from mlkit.monitoring.drift import drift_check

    report, path = drift_check(model, since=since, out_dir=out_dir)
    typer.echo(repr(report), err=True)
    typer.echo(f"{report.decision}: {', '.join(report.drifted) or 'no feature flagged'}; report: {path}")


@app.command()
def feedback(
    file: Annotated[
        Path, typer.Argument(help="CSV or Parquet with columns id (as /predict returned it) and label")
    ],
    model: Annotated[
        str | None, typer.Option(help="alias, tag or model name; default: the 'model' setting")
    ] = None,
) -> None:
    "Live metric of MODEL on late labels, against its training metric; while a canary runs, its guard judges them too."
    from mlkit.monitoring.feedback import feedback as run_feedback

    out = run_feedback(file, model)
    change = (
        "" if out["change"] is None else f" (training {out['training']:.4f}, change {out['change']:+.4f})"
    )
    typer.echo(
        f"{out['model']}: live {out['metric']} {out['live']:.4f} on {out['labelled']} labelled predictions{change}; "
        f"{out['unmatched']} ids matched no logged prediction"
    )
    for name, o in out.get("others", {}).items():
        was = "" if o["training"] is None else f" (training {o['training']:.4f}, change {o['change']:+.4f})"
        typer.echo(f"  live {name} {o['live']:.4f}{was}")
    from mlkit.core import MlkitError
    from mlkit.monitoring.abtest import live_guard

    try:  # while a canary runs, the same labels judge its challenger (mlkit.monitoring.abtest.live_guard)
        guard = live_guard(file)
    except MlkitError as err:
        typer.echo(f"the canary's live-metric guard could not judge these labels: {err}", err=True)
        return
    if guard is not None:
        verdict = "rolled back to share 0" if guard["rolled_back"] else "passed"
        typer.echo(
            f"canary {guard['experiment']}: live-metric guard {verdict}: {guard['checks'][0]['detail']}"
        )


@app.command()
def retrain(
    alias: Annotated[
        str, typer.Option("--alias", help="the alias whose model to retrain and move")
    ] = "production",
    if_drift: Annotated[bool, typer.Option("--if-drift", help="only when the served inputs drift")] = False,
) -> None:
    "Rerun ALIAS's training notebook on today's data, export, and promote through the gate."
    from mlkit.retrain import retrain as run_retrain

    out = run_retrain(alias, if_drift=if_drift)
    typer.echo(json.dumps(out, indent=1))
    if out["action"] == "failed":
        raise typer.Exit(1)


@app.command()
def quality(
    dataset: Annotated[str, typer.Argument(help="a data set: built in, or in the project's datasets.yaml")],
    out: Annotated[
        Path | None, typer.Option(help="the HTML file (default: reports/quality/DATASET.html)")
    ] = None,
) -> None:
    "Write a data-quality report (shape, missing share, cardinality, distributions, leaks) of DATASET; prints its path."
    from mlkit.core import get_settings
    from mlkit.data.datasets import load_dataset
    from mlkit.data.quality import quality_report

    ds = load_dataset(dataset)
    path = out or get_settings().root / "reports" / "quality" / f"{dataset}.html"
    report = quality_report(
        ds.frame, path, title=f"Data quality: {dataset}", schema=ds.schema, target=ds.target
    )
    typer.echo(report)


@app.command()
def new(
    path: Annotated[Path, typer.Argument(help="the project folder to create (new, or empty)")],
    name: Annotated[
        str | None, typer.Option(help="the project's name (default: the folder's); W&B's project")
    ] = None,
) -> None:
    "Start a project of your own at PATH: settings.ini, experiment notebooks, a data catalog, .gitignore, git hooks."
    from mlkit.lab import install_kernel
    from mlkit.project import new_project

    root = new_project(path, name)
    install_kernel()  # the experiment notebooks ask for the 'mlkit' kernel: this environment's Python
    typer.echo(root)
    typer.echo(
        f"next: cd {root} && mlkit data add NAME FILE --target COLUMN  (see {root / 'README.md'})", err=True
    )


@app.command()
def demo() -> None:
    "The main job end to end on embedded defaults: data, three runs, best model to ONNX, served and queried."
    from mlkit.demo import run_demo

    run_demo()


@app.command()
def lab(
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="TCP port (default: a free one)")] = None,
    ip: Annotated[str, typer.Option(help="interface to bind (loopback: this machine only)")] = "127.0.0.1",
    root: Annotated[Path | None, typer.Option(help="folder to serve (default: the project root)")] = None,
    browser: Annotated[bool, typer.Option("--browser", help="open a browser tab")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for JupyterLab to answer")] = 120.0,
) -> None:
    "JupyterLab on the project with the 'Python (mlkit)' kernel; prints the URL with its token. Ctrl-C stops it."
    from mlkit.lab import run_lab

    code = run_lab(echo=typer.echo, root=root, port=port, ip=ip, open_browser=browser, timeout=timeout)
    raise typer.Exit(code)


@app.command()
def docs(
    out: Annotated[Path | None, typer.Option(help="site folder (default: reports/docs)")] = None,
    readme: Annotated[bool, typer.Option(help="also write README.md from nbs/index.ipynb")] = True,
) -> None:
    "Render the notebooks and their API to a static HTML site; prints its index.html."
    from mlkit.docs import build_docs

    typer.echo(build_docs(out=out, readme=readme))


def _one_line(err: Exception) -> str:
    "What `mlkit` prints for a failure: an MlkitError's message; for any other error its type and first line."
    from mlkit.core import MlkitError

    if isinstance(
        err, MlkitError | OSError
    ):  # mlkit's own, or a file the user named: the message says it all
        return f"error: {err}"
    first = next((line for line in str(err).splitlines() if line.strip()), "")
    return f"error: {type(err).__name__}: {first} (`mlkit --debug ...` or MLKIT_DEBUG=1 shows the traceback)"


def main() -> None:
    "Console entry point: a failure becomes one line on stderr and exit code 1; the traceback only under --debug."
    try:
        app()
    except Exception as err:
        if _debug or os.environ.get("MLKIT_DEBUG", "").lower() in ("1", "true", "yes"):
            raise
        typer.echo(_one_line(err), err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
