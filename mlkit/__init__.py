"""Notebook-first research-to-production ML: papermill runs, W&B tracking, ONNX export with parity, BentoML serving.

Modules:

- `mlkit.cli`: `mlkit` on the command line: a thin typer layer over the Python API.
- `mlkit.serving.service`: The BentoML service that serves an mlkit model: thin glue over `mlkit.serving.core` and `mlkit.serving.gateway` (tested in nbs/serving/)."""

__version__ = "0.1.0"

# The architecture, bottom up: each top-level module or subpackage of mlkit and its layer. A module imports only
# from its own layer or below (tests/test_layout.py walks the imports and checks it; mlkit.docs groups its pages
# by it).
LAYERS: dict[str, int] = {
    **dict.fromkeys(("core", "db", "metrics", "display", "progress"), 0),  # foundation
    **dict.fromkeys(("data", "models"), 1),  # where data comes from and what it must look like; estimators
    "runs": 2,  # experiment runs and their evidence: params, tracking, W&B, runner, sweeps
    **dict.fromkeys(
        ("registry", "monitoring"), 3
    ),  # model versions and how they move; what served models see
    "serving": 4,  # the served model over HTTP
    **dict.fromkeys(
        (
            "cli",
            "cli_common",
            "cli_data",
            "cli_ab",
            "cli_registry",
            "magics",
            "demo",
            "retrain",
            "lab",
            "docs",
            "project",
        ),
        5,
    ),  # faces: nothing below uses them
}


def load_ipython_extension(ipython) -> None:
    "`%load_ext mlkit`: registers the `%mlkit` magic (see `mlkit.magics`)."
    from mlkit.magics import (
        load_ipython_extension as load,
    )  # the top layer: imported when IPython asks for it

    load(ipython)
