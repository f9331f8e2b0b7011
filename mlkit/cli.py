"""`mlkit` on the command line: a thin typer layer over the Python API.

Every command is one call a notebook can make too (`mlkit.runner.run_notebook`, `mlkit.export.export_run`, ...).
Heavy libraries (papermill, scikit-learn, W&B, BentoML, torch) are imported inside the commands that use them,
so `mlkit --help` stays fast. Hand-written glue, not generated.
"""

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="mlkit: notebook-first ML from experiment to served model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def run(
    notebook: Annotated[Path, typer.Argument(help="experiment notebook to execute")],
    param: Annotated[
        list[str] | None, typer.Option("-p", "--param", help="override: name=value (repeatable)")
    ] = None,
    params_file: Annotated[
        Path | None, typer.Option("-f", "--params-file", help="YAML file of overrides")
    ] = None,
) -> None:
    "Execute NOTEBOOK with parameters through papermill; prints the run id."
    from mlkit.params import load_params_file, parse_assignments, parse_parameters
    from mlkit.runner import run_notebook

    declared = parse_parameters(notebook)
    overrides = load_params_file(params_file) if params_file else {}
    overrides.update(parse_assignments(param or [], declared))
    typer.echo(run_notebook(notebook, overrides).id)


@app.command()
def params(notebook: Annotated[Path, typer.Argument(help="experiment notebook")]) -> None:
    "List NOTEBOOK's declared parameters: name (type) = default  # help."
    from mlkit.params import describe, parse_parameters

    typer.echo(describe(parse_parameters(notebook)))


@app.command()
def runs(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON records instead of a table")] = False,
    notebook: Annotated[
        str | None, typer.Option(help="only runs of this notebook (path from the root)")
    ] = None,
    status: Annotated[str | None, typer.Option(help="only runs with this status")] = None,
) -> None:
    "List run records, best first."
    from mlkit.core import get_settings
    from mlkit.tracking import RunStore, leaderboard

    records = RunStore(get_settings().run_db).list(notebook=notebook, status=status)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in records], indent=1))
        return
    from rich.console import Console

    Console().print(leaderboard(records))


@app.command()
def export(run_id: Annotated[str, typer.Argument(help="a finished run that logged a model")]) -> None:
    "Export RUN_ID's model to ONNX with a parity check into the model store; prints the model tag."
    from mlkit.export import export_run

    result = export_run(run_id)
    p = result.parity
    typer.echo(
        f"parity on {p.n_rows} holdout rows: max |dp| {p.max_abs_diff:.2e}, "
        f"label agreement {p.label_agreement:.2%}",
        err=True,
    )
    typer.echo(result.tag)


@app.command()
def demo() -> None:
    "The main job end to end on embedded defaults: data, three runs, best model to ONNX, served and queried."
    from mlkit.demo import run_demo

    run_demo()


def main() -> None:
    "Console entry point: an MlkitError becomes one clear line on stderr and exit code 1, never a traceback."
    from mlkit.core import MlkitError

    try:
        app()
    except MlkitError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
