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

import enum
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from mlkit.cli_ab import app as ab_app
from mlkit.cli_data import data_app

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


class Quantize(enum.StrEnum):  # an Enum: typer takes no list of Literal
    int8 = "int8"
    fp16 = "fp16"


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


def _console():
    "A rich console; 140 columns when not a terminal, so piped tables are not cropped at 80."
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 140)


def _console_err():
    "The console progress bars draw on: stderr, so stdout keeps only the result."
    from rich.console import Console

    return Console(stderr=True)


_returning: ContextVar[bool] = ContextVar("mlkit_cli_returning", default=False)


@contextmanager
def returning() -> Iterator[None]:
    "Within it, commands return their result for the caller to display instead of printing it (how `%mlkit` runs them)."
    token = _returning.set(True)
    try:
        yield
    finally:
        _returning.reset(token)


def _show(
    value: Any,  # the command's result: a record, a table, a list of JSON records
    text: str | None = None,  # its form on stdout (default: `value` printed by rich)
    note: str | None = None,  # a line for stderr, on the command line only
) -> Any:
    "Print a command's result for the terminal, unless inside `returning()`; return `value` either way."
    if not _returning.get():
        if note is not None:
            typer.echo(note, err=True)
        if text is None:
            _console().print(value)
        else:
            typer.echo(text)
    return value


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
        if _returning.get():  # in a notebook (`%mlkit run`) the interrupt stops the cell, as any other
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
    return _show(record, record.id)


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
        return _show(rows, json.dumps(rows, indent=1))
    return _show(board)


@app.command()
def compare(run_ids: Annotated[list[str], typer.Argument(help="two or more run ids")]) -> Any:
    "Parameters and metrics of RUN_IDS side by side, differences highlighted."
    from mlkit.core import get_settings
    from mlkit.runs.store import RunStore
    from mlkit.runs.studies import compare_table

    store = RunStore(get_settings().run_db)
    return _show(compare_table([store.get(r) for r in run_ids]))


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
    return _show(result, result.study, note=note)


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
    return _show(report, "\n".join(report.lines()) or "nothing to push: no offline W&B runs")


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
    return _show(summary, str(summary.report))


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(help="a finished run that logged a model")],
    quantize: Annotated[
        list[Quantize] | None, typer.Option(help="also try a quantized variant (repeatable)")
    ] = None,
    card: Annotated[bool, typer.Option(help="write the version's model card under reports/models/")] = True,
) -> None:
    "Export RUN_ID's model to ONNX with a parity check into the model store, with its model card; prints the model tag."
    from mlkit.progress import StepProgress
    from mlkit.registry.cards import write_card
    from mlkit.registry.export import export_run

    steps = ["convert", "parity", "latency", *(["quantize"] if quantize else []), "save", "W&B"]
    with StepProgress(f"export {run_id}", steps, console=_console_err()) as progress:
        result = export_run(run_id, quantize=[q.value for q in quantize or []], on_step=progress.step)
    p = result.parity
    typer.echo(
        f"parity on {p.n_rows} holdout rows: max |dp| {p.max_abs_diff:.2e}, label agreement {p.label_agreement:.2%}"
        if p.task == "classification"
        else f"parity on {p.n_rows} holdout rows: max |Δ| {p.max_abs_diff:.2e}, "
        f"{p.label_agreement:.2%} of rows within atol {p.atol:g} + rtol {p.rtol:g}·|y|",
        err=True,
    )
    for name, ms in result.latency_ms.items():
        typer.echo(f"latency {name}: " + ", ".join(f"batch {b}: {v:.3f} ms" for b, v in ms.items()), err=True)
    for kind, q in result.quantization.items():
        typer.echo(f"{kind}: {'kept' if q['kept'] else 'discarded'}: {q['reason']}", err=True)
    if card:
        md, html = write_card(result.tag)
        typer.echo(f"model card: {md} and {html.name}", err=True)
    typer.echo(result.tag)


@app.command()
def build(
    model: Annotated[
        str | None, typer.Option(help="alias, tag or model name; default: the 'model' setting")
    ] = None,
) -> None:
    "Build the bento of MODEL (service, model, lineage labels, container settings); prints its tag."
    from mlkit.serving.bento import build_bento

    tag, path = build_bento(model)
    typer.echo(f"built from {path}; containerize with: bentoml containerize {tag}", err=True)
    typer.echo(tag)


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
    "Live metric of MODEL on late labels, against its training metric."
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
def models(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    name: Annotated[str | None, typer.Option(help="only versions of this model name")] = None,
) -> Any:
    "List model versions in the store with their aliases and key metrics."
    from mlkit.registry.versions import list_versions, versions_view

    versions = list_versions(name)
    if as_json:
        rows = [v.to_json() for v in versions]
        return _show(rows, json.dumps(rows, indent=1, default=str))
    return _show(versions_view(versions))


@app.command()
def promote(
    tag: Annotated[str, typer.Argument(help="the candidate model version, name:version")],
    alias: Annotated[str, typer.Option("--alias", help="e.g. production, champion, challenger")],
    reason: Annotated[str | None, typer.Option(help="why, for the audit log")] = None,
    force: Annotated[bool, typer.Option("--force", help="skip the gate; recorded as forced")] = False,
) -> None:
    "Point ALIAS at TAG if it passes the gate (metric margin, parity and contract, latency budget)."
    from mlkit.registry.promotion import promote as run_promote

    typer.echo(str(run_promote(tag, alias, reason=reason, force=force)))


@app.command()
def rollback(
    alias: Annotated[str, typer.Option("--alias", help="the alias to point back")],
    reason: Annotated[str | None, typer.Option(help="why, for the audit log")] = None,
) -> None:
    "Point ALIAS back to the version it held before, in one audited step."
    from mlkit.registry.promotion import rollback as run_rollback

    typer.echo(str(run_rollback(alias, reason=reason)))


@app.command()
def audit(
    alias: Annotated[str | None, typer.Option(help="only this alias's changes")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    "The append-only log of alias changes: who, when, from which version to which, why, the metrics."
    from mlkit.registry.aliases import audit_log, audit_view

    entries = audit_log(alias)
    if as_json:
        typer.echo(json.dumps([e.to_json() for e in entries], indent=1, default=str))
        return

    _console().print(audit_view(entries))


@app.command()
def lineage(
    tag: Annotated[str, typer.Argument(help="a model version, name:version")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    "The chain behind TAG: run, notebook and its hash, parameters, data fingerprints, git commit, packages."
    from mlkit.registry.lineage import lineage as chain_of

    chain = chain_of(tag)
    if as_json:
        typer.echo(json.dumps(chain.to_json(), indent=1, default=str))
        return

    _console().print(chain)


@app.command()
def card(
    tag: Annotated[str, typer.Argument(help="a model version, name:version")],
    out_dir: Annotated[Path | None, typer.Option(help="folder (default: reports/models)")] = None,
) -> None:
    "Write TAG's model card (Markdown and HTML) under reports/models/; prints both paths."
    from mlkit.registry.cards import write_card

    for path in write_card(tag, out_dir=out_dir):
        typer.echo(path)


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
