"""The model registry and production commands of `mlkit` (export, build, models, promote, rollback, audit, lineage,
card): a typer group whose commands `mlkit.cli` adds at the `mlkit` app's top level. Hand-written; like mlkit.cli it
imports the library inside the commands, so `mlkit --help` stays fast."""

import enum
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mlkit.cli_common import console, console_err, show

registry_app = typer.Typer()


class Quantize(enum.StrEnum):  # an Enum: typer takes no list of Literal
    int8 = "int8"
    fp16 = "fp16"


@registry_app.command()
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
    with StepProgress(f"export {run_id}", steps, console=console_err()) as progress:
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


@registry_app.command()
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


@registry_app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    name: Annotated[str | None, typer.Option(help="only versions of this model name")] = None,
) -> Any:
    "List model versions in the store with their aliases and key metrics."
    from mlkit.registry.versions import list_versions, versions_view

    versions = list_versions(name)
    if as_json:
        rows = [v.to_json() for v in versions]
        return show(rows, json.dumps(rows, indent=1, default=str))
    return show(versions_view(versions))


@registry_app.command()
def promote(
    tag: Annotated[str, typer.Argument(help="the candidate model version, name:version")],
    alias: Annotated[str, typer.Option("--alias", help="e.g. production, champion, challenger")],
    reason: Annotated[str | None, typer.Option(help="why, for the audit log")] = None,
    force: Annotated[bool, typer.Option("--force", help="skip the gate; recorded as forced")] = False,
) -> None:
    "Point ALIAS at TAG if it passes the gate (metric margin, parity and contract, latency budget)."
    from mlkit.registry.promotion import promote as run_promote

    typer.echo(str(run_promote(tag, alias, reason=reason, force=force)))


@registry_app.command()
def rollback(
    alias: Annotated[str, typer.Option("--alias", help="the alias to point back")],
    reason: Annotated[str | None, typer.Option(help="why, for the audit log")] = None,
) -> None:
    "Point ALIAS back to the version it held before, in one audited step."
    from mlkit.registry.promotion import rollback as run_rollback

    typer.echo(str(run_rollback(alias, reason=reason)))


@registry_app.command()
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

    console().print(audit_view(entries))


@registry_app.command()
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

    console().print(chain)


@registry_app.command()
def card(
    tag: Annotated[str, typer.Argument(help="a model version, name:version")],
    out_dir: Annotated[Path | None, typer.Option(help="folder (default: reports/models)")] = None,
) -> None:
    "Write TAG's model card (Markdown and HTML) under reports/models/; prints both paths."
    from mlkit.registry.cards import write_card

    for path in write_card(tag, out_dir=out_dir):
        typer.echo(path)
