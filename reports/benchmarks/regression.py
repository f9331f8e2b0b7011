"""Regression on diabetes, every family: holdout RMSE, export parity, ONNX vs native latency, served vs fitted.

    python reports/benchmarks/regression.py > reports/benchmarks/regression.md

State (run database, runs, model store, monitor logs) goes to a temp folder; W&B is off. Each family runs
nbs/experiments/train_regression.ipynb through papermill with its defaults (dataset=diabetes, test_size=0.25,
random_state=0: the same 111 holdout rows for every family), is exported with the parity check, and the best
(lowest RMSE) is served by a real `bentoml serve` on loopback, whose answers for the holdout rows are compared
with the fitted pipeline's predict.
"""

import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(tempfile.mkdtemp(prefix="mlkit-regression-bench-"))
os.environ.update(
    {
        "MLKIT_ROOT": str(ROOT),
        "MLKIT_RUN_DB": f"sqlite:///{STATE}/runs.db",
        "MLKIT_RUNS_DIR": str(STATE / "runs"),
        "MLKIT_MODEL_STORE": str(STATE / "bentoml"),
        "BENTOML_HOME": str(STATE / "bentoml"),
        "MLKIT_MONITOR_DIR": str(STATE / "monitor"),
        "MLKIT_WANDB_MODE": "disabled",
        "MLKIT_MODEL": "",
        "BENTOML_DO_NOT_TRACK": "true",
    }
)

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mlkit.core import get_settings  # noqa: E402
from mlkit.demo import bentoml_server, post_json  # noqa: E402
from mlkit.models.families import families  # noqa: E402
from mlkit.registry.export import export_run  # noqa: E402
from mlkit.runs.runner import run_notebook  # noqa: E402
from mlkit.runs.store import RunStore  # noqa: E402

NOTEBOOK = ROOT / "nbs" / "experiments" / "train_regression.ipynb"


def main() -> None:
    settings = get_settings()
    store = RunStore(settings.run_db)
    rows = []
    for family in families("regression"):
        run = run_notebook(NOTEBOOK, {"model": family}, settings=settings, store=store)
        if run.status != "finished":
            rows.append({"family": family, "status": run.status, "error": (run.error or "")[:120]})
            continue
        result = export_run(run.id, settings=settings, store=store)
        lat = result.latency_ms
        rows.append(
            {
                "family": family,
                "status": "finished",
                "rmse": run.metrics["rmse"],
                "mae": run.metrics["mae"],
                "r2": run.metrics["r2"],
                "cv_rmse": run.metrics["cv_rmse_mean"],
                "baseline_rmse": run.metrics["baseline_rmse"],
                "parity_max_abs": result.parity.max_abs_diff,
                "native_1": lat["reference"]["1"],
                "onnx_1": lat["onnx"]["1"],
                "native_1024": lat["reference"]["1024"],
                "onnx_1024": lat["onnx"]["1024"],
                "run": run,
                "tag": result.tag,
            }
        )
    done = [r for r in rows if r["status"] == "finished"]
    best = min(done, key=lambda r: r["rmse"])
    run_dir = Path(best["run"].run_dir)
    pipeline = joblib.load(run_dir / "model.joblib")
    holdout = pd.read_parquet(run_dir / "holdout.parquet").drop(columns="__target__")
    records = json.loads(holdout.to_json(orient="records"))
    with bentoml_server(best["tag"], settings) as url:
        status, body = post_json(f"{url}/predict", {"records": records})
    assert status == 200, body
    fitted = pipeline.predict(holdout)
    served = np.array(body["predictions"])
    delta = np.abs(served - fitted)
    allowed = settings.parity_atol + settings.parity_rtol * np.abs(fitted)
    report(rows, best, len(holdout), delta, allowed, settings)


def report(rows, best, n, delta, allowed, settings) -> None:
    print("# Regression end to end: diabetes, every regression family\n")
    print("**Command** (from the project root, in the project's virtual environment):\n")
    print("```\npython reports/benchmarks/regression.py > reports/benchmarks/regression.md\n```\n")
    print(
        "Each family runs `nbs/experiments/train_regression.ipynb` with its defaults (papermill; diabetes, 442 rows, "
        "test_size 0.25, random_state 0: the same 111 holdout rows for all) and is exported with `export_run` "
        "(ONNX, parity in atol + rtol·|y|). Latency is `export_run`'s measurement (median of repeated calls over "
        "0.2 s per batch size, one onnxruntime thread): native is the fitted pipeline's `predict` on a DataFrame, "
        "ONNX the `OnnxRegressor` on the prepared float32 matrix (so native includes building the DataFrame and "
        "scikit-learn's input validation, the overhead a served model avoids). The best family by holdout RMSE is served by a "
        "real `bentoml serve` on loopback and its answers for the 111 holdout rows are compared with the fitted "
        "pipeline's `predict`.\n"
    )
    print(
        f"**Machine.** {platform.machine()}, {os.cpu_count()} CPUs visible (a shared development VM: other jobs "
        f"ran at the same time, so latencies are indicative), Python {sys.version.split()[0]}.\n"
    )
    print("## Holdout metrics and export parity (diabetes test split, 111 rows)\n")
    print("| family | RMSE | MAE | R² | CV RMSE (3 folds) | mean-baseline RMSE | parity max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["status"] != "finished":
            print(f"| {r['family']} | {r['status']}: {r['error']} | | | | | |")
            continue
        print(
            f"| {r['family']} | {r['rmse']:.2f} | {r['mae']:.2f} | {r['r2']:.3f} | {r['cv_rmse']:.2f} | "
            f"{r['baseline_rmse']:.2f} | {r['parity_max_abs']:.2e} |"
        )
    print("\n## ONNX vs native predict latency (ms per call)\n")
    print("| family | native batch 1 | ONNX batch 1 | native batch 1024 | ONNX batch 1024 |")
    print("|---|---|---|---|---|")
    for r in rows:
        if r["status"] == "finished":
            print(
                f"| {r['family']} | {r['native_1']:.3f} | {r['onnx_1']:.3f} | {r['native_1024']:.3f} | "
                f"{r['onnx_1024']:.3f} |"
            )
    print("\n## Served vs fitted\n")
    print(
        f"Best family: **{best['family']}** ({best['tag']}). Its {n} holdout rows posted to `/predict` of a real "
        f"`bentoml serve`: max |served - fitted| = **{delta.max():.2e}**; every row within atol "
        f"{settings.parity_atol:g} + rtol {settings.parity_rtol:g}·|y|: **{bool((delta <= allowed).all())}** "
        f"(allowed per row: {allowed.min():.2e} – {allowed.max():.2e})."
    )


if __name__ == "__main__":
    main()
