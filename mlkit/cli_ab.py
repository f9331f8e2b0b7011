"""`mlkit ab`: champion and challenger experiments on the command line, a typer group that `mlkit.cli` adds to the
`mlkit` app. Hand-written; like mlkit.cli it imports the library inside the commands, so `mlkit --help` stays fast."""

from pathlib import Path
from typing import Annotated, Literal

import typer

Mode = Literal["shadow", "split", "canary"]  # tests/test_cli.py checks it is mlkit.monitoring.abtest.MODES

app = typer.Typer(
    help="Champion and challenger: compare two served versions on late labels.", no_args_is_help=True
)


def _experiment(champion: str | None, challenger: str | None, mode: str | None, since: str | None) -> tuple:
    "The versions, mode and start to compare: as given (the running experiment's where one is left out)."
    from mlkit.core import ConfigError

    if champion is None or challenger is None or mode is None:
        raise ConfigError(
            "Name the experiment to report on: --champion ALIAS --challenger ALIAS --mode MODE."
        )
    return champion, challenger, mode, since


@app.command("report")
def report(
    labels: Annotated[
        Path, typer.Option(help="CSV or Parquet with columns id (as /predict returned it) and label")
    ],
    since: Annotated[
        str | None, typer.Option(help="only rows logged since (ISO time); default: the experiment's start")
    ] = None,
    champion: Annotated[str | None, typer.Option(help="alias, tag or model name of the champion")] = None,
    challenger: Annotated[str | None, typer.Option(help="alias, tag or model name of the challenger")] = None,
    mode: Annotated[Mode | None, typer.Option(help="how the experiment routed requests")] = None,
    metric: Annotated[str | None, typer.Option(help="default: the champion's primary metric")] = None,
    mde: Annotated[
        float | None,
        typer.Option(help="smallest change worth detecting, relative; default: the ab_mde setting"),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option(help="where the HTML report goes; default: reports/ab")
    ] = None,
) -> None:
    "Compare challenger and champion on late labels: metric, test, latency, agreement; write an HTML report."
    from mlkit.monitoring.abtest import ab_report

    champion, challenger, mode, since = _experiment(champion, challenger, mode, since)
    result, path = ab_report(champion, challenger, mode, labels, since, metric, mde, out_dir)
    typer.echo(f"{result['recommendation']}: {result['reason']}; report: {path}")
