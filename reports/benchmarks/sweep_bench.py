"""Benchmark: papermill and mlkit overhead per run, sweep orchestration overhead per trial, and 2 vs 1 workers.

    .venv/bin/python reports/benchmarks/sweep_bench.py > reports/benchmarks/sweeps.md

Everything runs in a throw-away state folder (W&B disabled except where a row says offline). Prints markdown.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(tempfile.mkdtemp(prefix="mlkit-bench-"))
os.environ.update(
    {
        "MLKIT_ROOT": str(ROOT),
        "MLKIT_RUN_DB": f"sqlite:///{STATE}/runs.db",
        "MLKIT_RUNS_DIR": str(STATE / "runs"),
        "MLKIT_WANDB_DIR": str(STATE),
        "MLKIT_WANDB_MODE": "disabled",
        "MLKIT_SWEEP_STORAGE": str(STATE / "o.journal"),
    }
)

TRIVIAL = "x = 0\ny = x + 1"
SPIN = "import time\nend = time.perf_counter() + work\nwhile time.perf_counter() < end:\n    pass"


def notebook(name: str, params: str, body: str) -> Path:
    path = STATE / f"{name}.ipynb"
    cells = [
        nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def median_time(fn, n=5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    import dataclasses

    import papermill as pm

    from mlkit.core import get_settings
    from mlkit.runs.runner import run_notebook
    from mlkit.runs.sweep import sweep

    settings = get_settings()
    trivial = notebook("trivial", "x: int = 0  # knob", "y = x + 1")
    out = STATE / "pm-out.ipynb"
    rows = []
    script = median_time(lambda: subprocess.run([sys.executable, "-c", TRIVIAL], check=True))
    rows.append(("same code as a plain script (`python -c`, interpreter start included)", script))
    papermill = median_time(
        lambda: pm.execute_notebook(
            str(trivial), str(out), parameters={"x": 1}, progress_bar=False, log_output=False
        )
    )
    rows.append(("`papermill.execute_notebook` in a warm process", papermill))
    runner = median_time(lambda: run_notebook(trivial, {"x": 1}, settings=settings, force=True))
    rows.append(("`mlkit.runs.runner.run_notebook` (record, W&B disabled), warm process", runner))
    offline = dataclasses.replace(settings, wandb_mode="offline")
    tracked = median_time(lambda: run_notebook(trivial, {"x": 1}, settings=offline, force=True))
    rows.append(("`mlkit.runs.runner.run_notebook` with W&B offline, warm process", tracked))

    n = 12
    t0 = time.perf_counter()
    sweep(
        trivial,
        {"x": {"type": "int", "low": 0, "high": 10**6}},
        n_trials=n,
        workers=1,
        sampler="random",
        seed=0,
        settings=settings,
        study="trivial-overhead",
    )
    wall = time.perf_counter() - t0
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as c, Client(c):
        pass
    cluster = time.perf_counter() - t0
    per_trial = (wall - cluster) / n

    spin = notebook("spin", "work: float = 3.0  # seconds of CPU work\nx: int = 0  # knob", SPIN)
    space = {"x": {"type": "int", "low": 0, "high": 10**6}}
    sweeps = {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        sweep(
            spin,
            space,
            n_trials=20,
            workers=workers,
            sampler="random",
            seed=workers,
            settings=settings,
            study=f"spin-{workers}-workers",
        )  # a fresh study each, not a resume of the other
        sweeps[workers] = time.perf_counter() - t0

    print("# Sweep and run overhead\n")
    print(
        f"Command: `.venv/bin/python reports/benchmarks/sweep_bench.py` ({time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}). Medians of 5 after a warm-up.\n"
    )
    print("## One run of a trivial notebook (no work)\n\n| what | seconds |\n|---|---|")
    for what, secs in rows:
        print(f"| {what} | {secs:.3f} |")
    print(
        f"\npapermill's overhead over a plain script: {papermill - script:.2f} s per run; mlkit's runner over "
        f"papermill: {runner - papermill:.2f} s (W&B offline adds {tracked - runner:.2f} s).\n"
    )
    print("## Sweep orchestration\n")
    print(
        f"{n}-trial sweep of the trivial notebook on 1 worker: {wall:.1f} s wall, of which {cluster:.1f} s "
        f"starting and closing the LocalCluster (measured separately). Total overhead per trial, everything but the "
        f"notebook's own work: **{per_trial:.2f} s** (target <= 1.3 s); beyond `run_notebook` itself: "
        f"{per_trial - runner:.2f} s.\n"
    )
    print("## 20 trials of a 3 s CPU-bound notebook\n\n| workers | wall seconds |\n|---|---|")
    for workers, secs in sweeps.items():
        print(f"| {workers} | {secs:.1f} |")
    print(f"\nSpeed-up of 2 workers over 1: **{sweeps[1] / sweeps[2]:.2f}x** (target >= 1.7x).")


if __name__ == "__main__":
    main()
