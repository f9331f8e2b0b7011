"""Schemathesis, every check on, against a running service's own OpenAPI document (shared by the serving tests)."""

import subprocess
import sys
import tempfile
from pathlib import Path


def schemathesis_all_checks(
    url: str, headers: dict[str, str] | None = None, examples: int = 30, seed: int = 1
):
    "Run `schemathesis run URL/docs.json --checks all`; returns (exit code, its output)."
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{url}/docs.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--no-color",
    ]
    for name, value in (headers or {}).items():
        command += ["--header", f"{name}: {value}"]
    with tempfile.TemporaryDirectory() as scratch:  # schemathesis keeps a .schemathesis/ cache where it runs
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=scratch)
    return done.returncode, done.stdout + done.stderr
