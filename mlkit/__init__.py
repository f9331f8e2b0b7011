"""Notebook-first research-to-production ML: papermill runs, W&B tracking, ONNX export with parity, BentoML serving.

Modules:

- `mlkit.cli`: `mlkit` on the command line: a thin typer layer over the Python API.
- `mlkit.serving`: The BentoML service that serves an mlkit model: thin glue over `mlkit.service` (tested in nbs/09c_service.ipynb)."""

__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    "`%load_ext mlkit`: registers the `%mlkit` magic (see `mlkit.magics`)."
    from mlkit.magics import load_ipython_extension as load

    load(ipython)
