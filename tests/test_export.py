"""ONNX export of a real run: parity on the holdout, lineage in the model store, refusals."""

import dataclasses
import json
import re
from pathlib import Path

import joblib
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from conftest import NOTEBOOK

from mlkit.core import ExportError, RunFailed
from mlkit.data.datasets import load_dataset
from mlkit.data.fingerprints import fingerprint
from mlkit.registry.export import export_run
from mlkit.registry.store import get_model, list_models
from mlkit.runs.runner import run_notebook


def test_export_matches_the_fitted_pipeline_on_the_holdout(exported, runs, settings):
    model = get_model(exported.tag, settings)
    meta = model.info.metadata
    run = next(r for r in runs.values() if r.id == meta["run_id"])
    # recompute parity independently of mlkit: raw onnxruntime against the pickled pipeline
    holdout = pd.read_parquet(Path(run.run_dir) / "holdout.parquet")
    X = holdout[[f["name"] for f in meta["features"]]]
    pipeline = joblib.load(Path(run.run_dir) / "model.joblib")
    session = ort.InferenceSession(model.path_of("model.onnx"), providers=["CPUExecutionProvider"])
    labels, proba = session.run(None, {"X": X.to_numpy(np.float32)})
    diff = np.abs(proba - pipeline.predict_proba(X)).max()
    assert diff < settings.parity_atol
    assert (labels == pipeline.predict(X)).all()
    assert meta["parity"]["n_rows"] == len(holdout) == 143
    assert meta["parity"]["max_abs_diff"] == pytest.approx(diff, abs=1e-6)
    assert meta["parity"]["label_agreement"] == 1.0


def test_the_exported_model_carries_its_lineage(exported, runs, settings):
    meta = get_model(exported.tag, settings).info.metadata
    run = next(r for r in runs.values() if r.id == meta["run_id"])
    assert exported.tag.startswith("breast_cancer-train_tabular:")
    assert meta["notebook_hash"] == run.notebook_hash
    assert meta["parameters"] == run.parameters
    assert meta["data"]["breast_cancer"]["fingerprint"] == run.data["breast_cancer"]["fingerprint"]
    holdout = pd.read_parquet(Path(run.run_dir) / "holdout.parquet")  # the rows the metrics came from
    assert meta["holdout"] == {"rows": 143, "fingerprint": fingerprint(holdout, order_independent=True)}
    assert meta["metrics"] == pytest.approx(run.metrics)
    assert [f["name"] for f in meta["features"]][:2] == ["mean_radius", "mean_texture"]
    assert meta["classes"] == [0, 1]
    # declared once with the data set's contract, carried through the run into the model
    assert meta["intended_use"] == load_dataset("breast_cancer").schema.metadata["intended_use"]
    assert "Not for diagnosing anyone" in meta["intended_use"]
    assert json.dumps(meta)  # JSON-clean


def test_export_beyond_tolerance_is_refused_and_stores_nothing(runs, settings, store):
    strict = dataclasses.replace(settings, parity_atol=0.0)
    before = [str(m.tag) for m in list_models(settings)]
    with pytest.raises(ExportError) as err:
        export_run(runs["logreg"].id, settings=strict, store=store)
    assert "ONNX differs from the reference on" in str(err.value) and "vs atol 0" in str(err.value)
    assert [str(m.tag) for m in list_models(settings)] == before


def test_export_of_a_failed_run_is_refused(settings, store):
    with pytest.raises(RunFailed):
        run_notebook(NOTEBOOK, {"model": "nope"}, settings=settings, store=store)
    failed = store.list(status="failed")[0]
    with pytest.raises(ExportError, match=f"Run {failed.id} is failed; only finished runs can be exported"):
        export_run(failed.id, settings=settings, store=store)


def test_a_deliberately_broken_export_is_refused_with_its_numbers(runs, settings, store, monkeypatch):
    "An exporter that halves the logistic regression's coefficients in the ONNX graph: parity must catch it."
    import onnx

    from mlkit.registry import convert

    def broken(model, X):
        graph = onnx.load_from_string(convert.sklearn_to_onnx(model, X))
        halved = 0
        for node in graph.graph.node:
            for attr in node.attribute:
                if attr.name == "coefficients":
                    attr.floats[:] = [v * 0.5 for v in attr.floats]
                    halved += 1
        assert halved, "the test needs a LinearClassifier node to break"
        return graph.SerializeToString()

    monkeypatch.setitem(convert.EXPORTERS, "sklearn", broken)
    before = [str(m.tag) for m in list_models(settings)]
    with pytest.raises(
        ExportError, match=r"ONNX differs from the reference on \d+/143 rows \(max \|Δp\| "
    ) as failure:
        export_run(runs["logreg"].id, settings=settings, store=store)
    # the task metric of both is in the message too
    assert re.search(r"; roc_auc 0\.\d{4} for ONNX vs 0\.\d{4} for the reference\)", str(failure.value))
    assert [str(m.tag) for m in list_models(settings)] == before, "nothing stored"


def test_parity_report_carries_the_task_metric_of_both(exported, settings):
    parity = get_model(exported.tag, settings).info.metadata["parity"]
    assert parity["metric"] == "roc_auc"
    assert parity["onnx_metric"] == pytest.approx(parity["reference_metric"], abs=1e-6)
