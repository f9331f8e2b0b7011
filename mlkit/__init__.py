"""Notebook-first research-to-production ML: papermill runs, W&B tracking, ONNX export with parity, BentoML serving.

Modules:

- `mlkit.cli`: `mlkit` on the command line: a thin typer layer over the Python API.
- `mlkit.serving`: The BentoML service that serves an mlkit model: thin glue over `mlkit.inference` and `mlkit.registry`."""

__version__ = "0.1.0"
