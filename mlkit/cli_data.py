"""`mlkit data`: the project's data catalog on the command line (add, list, show), a typer group that `mlkit.cli`
adds to the `mlkit` app. Hand-written; like mlkit.cli it imports the library inside the commands, so `mlkit --help`
stays fast."""

from typing import Annotated, Literal

import typer

Task = Literal[
    "classification", "regression"
]  # `data add --task`; tests/test_cli.py checks it is the library's

data_app = typer.Typer(
    help="The project's data catalog (datasets.yaml): add, list and show data sets.", no_args_is_help=True
)


@data_app.command("add")
def data_add(
    name: Annotated[str, typer.Argument(help="the data set's name")],
    source: Annotated[
        str,
        typer.Argument(
            help="a .csv/.parquet file, a SQLAlchemy URL, duckdb:///file or featurestore:///folder (with --table VIEW)"
        ),
    ],
    target: Annotated[str, typer.Option(help="the column to predict")],
    task: Annotated[Task | None, typer.Option(help="default: inferred from the target column")] = None,
    time_column: Annotated[str | None, typer.Option(help="rows sorted by it; not a feature")] = None,
    drop: Annotated[
        list[str] | None, typer.Option(help="a column that is not a feature, e.g. an id (repeatable)")
    ] = None,
    table: Annotated[str | None, typer.Option(help="SQL/DuckDB: the table; feature store: the view")] = None,
    query: Annotated[str | None, typer.Option(help="SQL/DuckDB: the query")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="redraft an entry of that name")] = False,
) -> None:
    "Read SOURCE, draft its contract (contracts/NAME.yaml, for you to review) and add NAME to the catalog."
    from mlkit.data.catalog import add_dataset
    from mlkit.data.datasets import registered_datasets

    entry, spec = add_dataset(
        name,
        source,
        target,
        task,
        time_column,
        drop or [],
        table,
        query,
        replace=replace,
        reserved=tuple(registered_datasets()),
    )
    features = spec["features"]
    kind = f"classes {spec['classes']}" if "classes" in spec else "numeric target"
    typer.echo(f"{name}: {entry.task} of '{target}' ({kind}) from {entry.source}")
    typer.echo(
        f"{len(features)} features, at least {spec['min_rows']} rows; contract drafted in {entry.contract}: review it"
    )
    for col, rule in features.items():
        extra = ", ".join(f"{k}={v}" for k, v in rule.items() if k != "dtype")
        typer.echo(f"  {col}: {rule['dtype']}" + (f" ({extra})" if extra else ""))


@data_app.command("list")
def data_list() -> None:
    "The data sets: the catalog's, then the built-in ones."
    from mlkit.data.catalog import read_catalog
    from mlkit.data.datasets import registered_datasets

    for name, entry in read_catalog().items():
        typer.echo(f"{name}\t{entry.task}\ttarget={entry.target}\t{entry.source}")
    for name in registered_datasets():
        typer.echo(f"{name}\tbuilt in")


@data_app.command("show")
def data_show(name: Annotated[str, typer.Argument(help="a data set's name")]) -> None:
    "NAME's contract, rows and fingerprint (the data is read and checked)."
    import yaml

    from mlkit.data.datasets import load_dataset
    from mlkit.data.fingerprints import fingerprint

    ds = load_dataset(name)
    rules = {k: ds.schema.metadata.get(k) for k in ("target", "task", "classes", "min_rows", "time_column")}
    typer.echo(
        f"{name}: {len(ds.frame)} rows, {len(ds.features)} features, fingerprint {fingerprint(ds.frame)}"
    )
    if ds.origin:
        typer.echo(f"from {ds.origin['source']} (catalog {ds.origin['catalog_hash']})")
    typer.echo(yaml.safe_dump({**rules, "features": ds.schema.metadata["rules"]}, sort_keys=False).rstrip())
