"""`mlkit ab`: A/B experiments of the served model on the command line (start, stop, promote, status), a typer group
that `mlkit.cli` adds to the `mlkit` app. Hand-written; like mlkit.cli it imports the library inside the commands, so
`mlkit --help` stays fast. Every command is one call of mlkit.registry.abtest (or promotion.promote_challenger)."""

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

Mode = Literal[
    "shadow", "split", "canary"
]  # tests/test_ab_serving.py and tests/test_cli.py check it is mlkit.registry.abtest.MODES and monitoring.abtest's

app = typer.Typer(
    help="A/B experiments of the served model: a challenger beside the champion (shadow, split or canary), compared on late labels.",
    no_args_is_help=True,
)


def _line(exp: dict) -> str:
    share = f"share {exp['share']:g}" + (
        f" (step {exp['step'] + 1}/{len(exp['steps'])})" if exp["steps"] else ""
    )
    return (
        f"experiment {exp['id']} {exp['status']}: {exp['mode']} of {exp['challenger']} against {exp['champion']}, "
        f"{share}, seed {exp['seed']}"
    )


@app.command("start")
def ab_start(
    challenger: Annotated[
        str | None, typer.Option(help="its alias (or tag); default: the ab_challenger setting")
    ] = None,
    mode: Annotated[Mode | None, typer.Option(help="default: the ab_mode setting")] = None,
    share: Annotated[
        float | None,
        typer.Option(min=0, max=1, help="split: the challenger's share; shadow: the share it also predicts"),
    ] = None,
    champion: Annotated[
        str | None, typer.Option(help="what the service serves; default: the model setting")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="why, for the audit log")] = None,
) -> None:
    "Start an experiment: the running service serves the challenger beside the champion within ab_poll_s seconds."
    from mlkit.registry.abtest import start_experiment

    typer.echo(_line(start_experiment(challenger, mode, share, champion, reason)))


@app.command("stop")
def ab_stop(reason: Annotated[str | None, typer.Option(help="why, for the audit log")] = None) -> None:
    "Stop the running experiment: the champion answers alone again."
    from mlkit.registry.abtest import stop_experiment

    typer.echo(_line(stop_experiment(reason)))


@app.command("promote")
def ab_promote(
    reason: Annotated[str | None, typer.Option(help="why, for the audit log")] = None,
    force: Annotated[bool, typer.Option("--force", help="skip the gate; recorded as forced")] = False,
) -> None:
    "Promote the challenger to the champion's alias through the gate, and stop the experiment."
    from mlkit.registry.promotion import promote_challenger

    typer.echo(str(promote_challenger(reason, force)))


@app.command("status")
def ab_status(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    "The running (or last) experiment."
    from mlkit.core import NotFound
    from mlkit.registry.abtest import current_experiment

    exp = current_experiment()
    if exp is None:
        raise NotFound(
            "No experiment has run: start one with `mlkit ab start --challenger ALIAS --mode MODE`."
        )
    typer.echo(json.dumps(exp, indent=1) if as_json else _line(exp))


def _experiment(champion: str | None, challenger: str | None, mode: str | None, since: str | None) -> tuple:
    "The versions, mode and start to compare: as given, the running (or last) experiment's where left out."
    from mlkit.core import ConfigError
    from mlkit.registry.abtest import current_experiment

    if champion is None and challenger is None:  # the experiment's own pair, since its start
        exp = current_experiment()
        if exp is None:
            raise ConfigError(
                "No experiment has run: start one (mlkit ab start), or name the versions to compare with "
                "--champion ALIAS --challenger ALIAS --mode MODE."
            )
        champion, challenger = exp["champion"], exp["challenger"]
        mode, since = mode or exp["mode"], since or exp["started_at"]
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
