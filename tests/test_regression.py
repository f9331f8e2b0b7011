"""Regression end to end: train_regression.ipynb on diabetes (papermill), export to ONNX with parity, the promotion
gate ranking by RMSE (lower is better), a real `bentoml serve` on loopback answering {"model", "predictions"}
within parity tolerance of the fitted pipeline, and a 4xx for bad input."""

import dataclasses
import json
import urllib.request
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

NOTEBOOK = ROOT / "nbs" / "experiments" / "train_regression.ipynb"


@pytest.fixture(scope="module")
def reg_runs(settings, store):
    "Two real runs on diabetes with the same split: histogram boosting and ridge."
    from mlkit.runs.runner import run_notebook

    return {
        name: run_notebook(NOTEBOOK, {"dataset": "diabetes", "model": name}, settings=settings, store=store)
        for name in ("hgb", "ridge")
    }


@pytest.fixture(scope="module")
def reg_exports(reg_runs, settings, store):
    from mlkit.registry.export import export_run

    return {name: export_run(run.id, settings=settings, store=store) for name, run in reg_runs.items()}


def test_runs_rank_by_rmse_and_beat_the_mean_baseline(reg_runs):
    for run in reg_runs.values():
        assert run.status == "finished"
        assert (run.primary_metric, run.direction) == ("rmse", "minimize")
        assert {"rmse", "mae", "r2", "baseline_rmse", "cv_rmse_mean", "baseline_cv_rmse_mean"} <= set(
            run.metrics
        )
        assert run.metrics["rmse"] < run.metrics["baseline_rmse"]
        assert run.metrics["cv_rmse_mean"] < run.metrics["baseline_cv_rmse_mean"]


def test_export_records_the_task_and_passes_parity(reg_exports, settings):
    from mlkit.registry.store import get_model

    for result in reg_exports.values():
        meta = get_model(result.tag, settings).info.metadata
        assert meta["task"] == "regression" and meta["classes"] == []
        assert meta["parity"]["task"] == "regression" and meta["parity"]["label_agreement"] == 1.0
        assert result.parity.ok and abs(result.parity.onnx_metric - result.parity.reference_metric) < 1e-3


def test_gate_promotes_the_lower_rmse_and_refuses_the_higher(reg_runs, reg_exports, settings):
    from mlkit.registry.promotion import promote

    ranked = sorted(reg_runs, key=lambda n: reg_runs[n].metrics["rmse"])  # best (lowest rmse) first
    worse, better = reg_exports[ranked[1]].tag, reg_exports[ranked[0]].tag
    first = promote(worse, "reg-production", settings=settings, latency_budget_ms=1000)
    assert first.tag == worse, first
    second = promote(better, "reg-production", settings=settings, latency_budget_ms=1000)
    assert second.tag == better and second.previous == worse, second
    with pytest.raises(Exception, match="rmse .* does not beat the holder's .*lower is better"):
        promote(worse, "reg-production", settings=settings, latency_budget_ms=1000)


def test_served_predictions_match_the_fitted_pipeline(reg_runs, reg_exports, settings):
    from mlkit.demo import bentoml_server, post_json

    best = min(reg_runs, key=lambda n: reg_runs[n].metrics["rmse"])
    run_dir = Path(reg_runs[best].run_dir)
    pipeline = joblib.load(run_dir / "model.joblib")
    holdout = pd.read_parquet(run_dir / "holdout.parquet").drop(columns="__target__")
    records = json.loads(holdout.to_json(orient="records"))  # plain floats, as a client sends them
    with bentoml_server("reg-production", settings) as url:
        status, body = post_json(f"{url}/predict", {"records": records})
        assert status == 200, body
        assert body["model"] == str(reg_exports[best].tag) and set(body) >= {"model", "predictions", "ids"}
        served = np.array(body["predictions"])
        fitted = pipeline.predict(holdout)
        allowed = settings.parity_atol + settings.parity_rtol * np.abs(fitted)
        assert len(served) == len(holdout) and (np.abs(served - fitted) <= allowed).all(), np.abs(
            served - fitted
        ).max()

        status, rows = post_json(f"{url}/predict_batch", {"records": records[:3]})
        assert status == 200 and [set(r) for r in rows] == [{"id", "prediction"}] * 3, rows
        assert np.allclose([r["prediction"] for r in rows], served[:3], rtol=1e-6)

        bad = {**records[0], "bmi": 5.0}  # outside the contract's range [-0.5, 0.5]
        status, body = post_json(f"{url}/predict", {"records": [bad]})
        assert status == 422 and body["detail"][0]["loc"] == ["records", 0, "bmi"], body
        status, body = post_json(f"{url}/predict", {"records": [{"age": 0.01}]})
        assert status == 422, body
        status, body = post_json(f"{url}/predict", b"{not json")
        assert status == 400, body

        with urllib.request.urlopen(f"{url}/drift", timeout=30) as r:  # inputs and the predicted values
            drift = json.loads(r.read())
        tested = {f["feature"]: f for f in drift["features"]}
        assert {"bmi", "__prediction__"} <= set(tested), drift
        assert tested["__prediction__"]["rows"] >= len(holdout) and tested["__prediction__"]["test"] == "ks"
        # the holdout rows and their predictions look like the training ones (discrete `sex` included)
        assert drift["drifted"] == [], drift

        from openapi_check import schemathesis_all_checks  # the regression answer's schema, every check on

        code, out = schemathesis_all_checks(url)
        assert code == 0 and "No issues found" in out, out[-4000:]


def test_feedback_reports_rmse_and_mae_against_training(reg_runs, settings, tmp_path):
    "Late true values for served predictions: live RMSE, MAE and R² next to the run's holdout figures."
    from mlkit.demo import bentoml_server, post_json
    from mlkit.monitoring.feedback import feedback

    best = min(reg_runs, key=lambda n: reg_runs[n].metrics["rmse"])
    holdout = pd.read_parquet(Path(reg_runs[best].run_dir) / "holdout.parquet")
    records = json.loads(holdout.drop(columns="__target__").to_json(orient="records"))
    with bentoml_server(
        "reg-production", settings, env={"MLKIT_MONITOR_DIR": str(tmp_path / "monitor")}
    ) as url:
        status, body = post_json(f"{url}/predict", {"records": records})
        assert status == 200, body
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"id": body["ids"], "label": holdout["__target__"]}).to_csv(labels, index=False)
    monitored = dataclasses.replace(settings, monitor_dir=tmp_path / "monitor")
    out = feedback(labels, "reg-production", settings=monitored)
    assert out["metric"] == "rmse" and out["labelled"] == len(holdout)
    assert abs(out["live"] - reg_runs[best].metrics["rmse"]) < 1e-3  # the same rows: the same RMSE
    assert set(out["others"]) == {"mae", "r2"}
    assert abs(out["others"]["mae"]["live"] - reg_runs[best].metrics["mae"]) < 1e-3


def test_the_cli_runs_and_exports_a_regression_run(tmp_path):
    "`mlkit run ... -p dataset=diabetes` finishes and `mlkit export` reports parity in atol + rtol (own state folder)."
    import os
    import subprocess
    import sys

    from conftest import isolated_env

    env = {**os.environ, **isolated_env(tmp_path, MLKIT_WANDB_MODE="disabled", COLUMNS="200")}
    env["BENTOML_HOME"] = env["MLKIT_MODEL_STORE"]

    def mlkit(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mlkit.cli", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=300,
        )

    run = mlkit("run", "nbs/experiments/train_regression.ipynb", "-p", "dataset=diabetes", "-p", "model=gbm")
    assert run.returncode == 0, run.stderr[-2000:]
    exported = mlkit("export", run.stdout.strip().splitlines()[-1], "--no-card")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "100.00% of rows within atol 0.0001 + rtol 0.0001·|y|" in exported.stderr, exported.stderr
    assert exported.stdout.strip().startswith("diabetes-train_regression:")
