"""Benchmark: what the live W&B run costs a notebook run and a training loop (offline W&B, as by default).

    python reports/benchmarks/wandb_live.py                    # 5 notebook runs per mode, a 10,000-step loop
    python reports/benchmarks/wandb_live.py --repeat 3 --steps 2000   # a quicker run

1. The tabular experiment notebook (nbs/experiments/train_tabular.ipynb, model=logreg) run by `run_notebook`
   (papermill, force=True so nothing is cached) with W&B offline (live in the kernel, closed by the runner,
   data artifact, holdout table) and with W&B disabled, alternating, `--repeat` times each: median seconds.
2. A training loop of `--steps` steps, each one minibatch step of a numpy logistic regression (1,024 rows x 64
   features, forward and gradient, numpy on one thread) and one `log_history(step, **5 metrics)`, in a fresh process per mode (W&B live,
   W&B disabled) and `--loops` times each: median seconds of the loop. The W&B run is opened before the clock starts
   (in every mode: its start, about a second, is reported apart); mlkit's own history.jsonl line per step is in both.
   A third process shows what one `run.log` per step would cost (every row sent, no budget). `--settle S` waits S
   seconds between opening W&B and starting the loop: W&B's own start-up work (a few seconds in the background after
   `wandb.init`) then falls outside the loop, as it does for any loop longer than a few seconds.
Every state (run database, runs, W&B folders) goes to a temporary folder; W&B never touches the network.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LOOP = r"""
import json, os, sys, time
import numpy as np
from mlkit.runs import tracking
mode, steps = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
live = tracking.wandb_run()  # None when disabled; opened here, outside the clock, in every mode
opened = time.perf_counter() - t0
time.sleep(float(os.environ.get('SETTLE_S', '0')))  # let W&B's start-up work end first
rng = np.random.default_rng(0)
X, w = rng.normal(size=(1024, 64)), np.zeros(64)
y = (X[:, 0] + rng.normal(size=1024) > 0).astype(float)
t0 = time.perf_counter()
for step in range(steps):
    p = 1 / (1 + np.exp(-X @ w))
    grad = X.T @ (p - y) / len(y)
    w -= 0.1 * grad
    loss = float(np.mean(-y * np.log(p + 1e-9) - (1 - y) * np.log(1 - p + 1e-9)))
    metrics = dict(loss=loss, acc=float(np.mean((p > 0.5) == y)), grad_norm=float(np.linalg.norm(grad)),
                   w_norm=float(np.linalg.norm(w)), lr=0.1)
    if mode == "every-row":
        live.run.log({**metrics, "step": step})
    else:
        tracking.log_history(step, **metrics)
loop = time.perf_counter() - t0
sent = live.sent if live is not None and mode != "every-row" else (steps if mode == "every-row" else 0)
print(json.dumps({"open_s": opened, "loop_s": loop, "rows_to_wandb": sent}))
"""


def env_for(folder: Path, mode: str) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import isolated_env

    return {**os.environ, **isolated_env(folder, MLKIT_WANDB_MODE=mode)}


def notebook_runs(repeat: int, folder: Path) -> dict:
    code = (
        "import sys, time\nfrom mlkit.runs.runner import run_notebook\nt = time.perf_counter()\n"
        f"run_notebook({str(ROOT / 'nbs/experiments/train_tabular.ipynb')!r}, {{'model': 'logreg'}}, force=True)\n"
        "print(time.perf_counter() - t)"
    )
    times = {"offline": [], "disabled": []}
    for _ in range(repeat):
        for mode in times:
            out = subprocess.run([sys.executable, "-c", code], env=env_for(folder / mode, mode), capture_output=True,
                                 text=True, check=True, cwd=ROOT)  # fmt: skip
            times[mode].append(float(out.stdout.strip().splitlines()[-1]))
    return {m: {"median_s": statistics.median(t), "runs_s": t} for m, t in times.items()}


def loops(steps: int, n: int, folder: Path, settle_s: float = 0.0) -> dict:
    out, runs = {}, {"offline": [], "disabled": [], "every-row": []}
    for i in range(n):  # the modes alternate, so a busy spell of the machine falls on both
        for mode in runs if i == 0 else ("offline", "disabled"):
            env = env_for(folder / f"loop-{mode}-{i}", "disabled" if mode == "disabled" else "offline")
            env["MLKIT_RUN_DIR"] = str(folder / f"loop-{mode}-{i}" / "run")
            env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "1"  # one core for the loop's numpy
            env["SETTLE_S"] = str(settle_s)
            done = subprocess.run([sys.executable, "-c", LOOP, mode, str(steps)], env=env, capture_output=True,
                                  text=True, check=True, cwd=ROOT)  # fmt: skip
            runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    for mode, results in runs.items():
        out[mode] = {
            "median_loop_s": statistics.median(r["loop_s"] for r in results),
            "loops_s": [r["loop_s"] for r in results],
            "open_s": statistics.median(r["open_s"] for r in results),
            "rows_to_wandb": results[0]["rows_to_wandb"],
        }
    base = out["disabled"]["median_loop_s"]
    for mode in ("offline", "every-row"):
        out[mode]["overhead"] = out[mode]["median_loop_s"] / base - 1
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5, help="notebook runs per mode")
    ap.add_argument("--steps", type=int, default=10_000, help="training-loop steps")
    ap.add_argument("--loops", type=int, default=5, help="loop processes per mode")
    ap.add_argument("--settle", type=float, default=0.0, help="seconds between opening W&B and the loop")
    ap.add_argument("--only", choices=["notebook", "loop"], help="run one part only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {}
        if args.only != "loop":
            result["notebook"] = notebook_runs(args.repeat, Path(tmp))
        if args.only != "notebook":
            result["loop"] = loops(args.steps, args.loops, Path(tmp), args.settle)
    print(json.dumps(result, indent=1))
