"""What the `mlkit` command groups share: the consoles they print on, and `returning()`, under which a command
returns its result instead of printing it (how `%mlkit` runs them). Hand-written, light: `mlkit --help` imports it."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import typer


def console():
    "A rich console; 140 columns when not a terminal, so piped tables are not cropped at 80."
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 140)


def console_err():
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


def returning_now() -> bool:
    "Whether a command runs inside `returning()` (`%mlkit`), where it returns its result instead of printing it."
    return _returning.get()


def show(
    value: Any,  # the command's result: a record, a table, a list of JSON records
    text: str | None = None,  # its form on stdout (default: `value` printed by rich)
    note: str | None = None,  # a line for stderr, on the command line only
) -> Any:
    "Print a command's result for the terminal, unless inside `returning()`; return `value` either way."
    if not returning_now():
        if note is not None:
            typer.echo(note, err=True)
        if text is None:
            console().print(value)
        else:
            typer.echo(text)
    return value
