"""A real bundled multi-class set through the whole path: palmerpenguins (three species as strings, `island` and
`sex` as string features, missing measurements and sexes) run through the experiment notebook by papermill,
exported with parity, described by its model card, and served by a real `bentoml serve`."""

import re
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import NOTEBOOK

from mlkit.data.datasets import load_dataset
from mlkit.demo import bentoml_server, post_json
from mlkit.models.inference import OnnxClassifier
from mlkit.registry.cards import write_card
from mlkit.registry.export import export_run
from mlkit.registry.store import get_model
from mlkit.runs.runner import run_notebook

SPECIES = ["Adelie", "Chinstrap", "Gentoo"]


@pytest.fixture(scope="module")
def penguins():
    return load_dataset("penguins")


@pytest.fixture(scope="module")
def penguin_export(settings, store):
    "A papermill run of the experiment notebook on the penguins with gradient boosting, exported: (run, export)."
    run = run_notebook(
        NOTEBOOK, {"dataset": "penguins", "model": "gbm", "n_estimators": 30}, settings=settings, store=store
    )
    return run, export_run(run.id, settings=settings, store=store)


def test_the_set_is_multi_class_with_strings_and_missing_values(penguins):
    assert sorted(penguins.y.unique()) == SPECIES
    assert {c: str(penguins.X[c].dtype) for c in ("island", "sex")} == {"island": "str", "sex": "str"}
    assert penguins.X["sex"].isna().sum() == 11 and penguins.X["body_mass_g"].isna().sum() == 2


def test_the_run_scores_three_classes_and_its_guard_flags_a_near_perfect_feature(penguin_export, store):
    run, _ = penguin_export
    rec = store.get(run.id)
    assert rec.status == "finished" and rec.primary_metric == "roc_auc"
    # one-vs-rest ROC AUC and macro F1 over the three species, both well above the class-prior baseline
    assert rec.metrics["roc_auc"] > 0.95 and rec.metrics["f1"] > 0.9
    assert rec.metrics["accuracy"] > rec.metrics["baseline_accuracy"] + 0.4
    # flipper length alone separates the species almost perfectly: the single-feature leak guard says so
    leaks = [f for f in rec.findings if f["check"] == "single_feature_leak"]
    assert any("'flipper_length_mm' alone predicts 'species'" in f["message"] for f in leaks), rec.findings


def test_the_export_agrees_with_the_pipeline_on_raw_rows_with_missing_values(
    penguin_export, penguins, settings
):
    run, exported = penguin_export
    pipeline = joblib.load(Path(run.run_dir) / "model.joblib")
    model = get_model(exported.tag, settings)
    meta = model.info.metadata
    assert meta["classes"] == SPECIES and meta["parity"]["label_agreement"] == 1.0
    onnx = OnnxClassifier(model.path_of("model.onnx"), meta["features"], meta["classes"])
    rows = penguins.X[penguins.X.isna().any(axis=1)]  # every bird with a missing measurement or sex
    assert len(rows) == 11
    labels, proba = onnx.predict_proba(rows)
    assert proba.shape == (11, 3)
    assert np.abs(proba - pipeline.predict_proba(rows)).max() <= settings.parity_atol
    assert labels.tolist() == pipeline.predict(rows).tolist()


def test_the_card_has_a_three_class_confusion_matrix_and_the_guard_finding(
    penguin_export, settings, tmp_path
):
    _, exported = penguin_export
    md, html = write_card(exported.tag, settings, out_dir=tmp_path, n_boot=200)
    text = md.read_text()
    assert "| true Chinstrap |" in text and "predicted Gentoo" in text
    # the card's metrics are the run's, by the same names (one-vs-rest ROC AUC, macro F1): next to the recorded value
    for metric in ("roc_auc", "f1", "accuracy", "log_loss"):
        assert re.search(rf"\| {metric} \| [\d.]+ \| [\d.]+ – [\d.]+ \| [\d.]+ \|", text), metric
    assert "'flipper_length_mm' alone predicts 'species'" in text
    # the intended use the penguins' contract declares, not the "not declared" placeholder
    assert "## Intended use\n\nTelling Adelie, Chinstrap and Gentoo penguins apart" in text
    assert html.is_file()


def test_the_served_model_answers_species_names(penguin_export, penguins, settings):
    run, exported = penguin_export
    pipeline = joblib.load(Path(run.run_dir) / "model.joblib")
    rows = pd.concat([penguins.X.head(3), penguins.X[penguins.X["sex"].isna()].head(2)])
    records = [{k: None if pd.isna(v) else v for k, v in r.items()} for r in rows.to_dict("records")]
    with bentoml_server(exported.tag, settings) as url:
        status, body = post_json(url + "/predict", {"records": records})
        assert status == 200, body
        refused, detail = post_json(url + "/predict", {"records": [{**records[0], "island": "Antarctica"}]})
        unnamed, missing = post_json(url + "/predict", {"records": [{**records[0], "island": None}]})
    assert body["classes"] == SPECIES
    assert body["labels"] == pipeline.predict(rows).tolist()
    assert (
        np.abs(np.array(body["probabilities"]) - pipeline.predict_proba(rows)).max() <= settings.parity_atol
    )
    assert refused == 422 and detail["detail"][0]["loc"] == ["records", 0, "island"]
    # each refusal names the contract's rule as validation words it
    assert detail["detail"][0]["rule"] == "isin(['Biscoe', 'Dream', 'Torgersen'])"
    assert unnamed == 422 and missing["detail"][0]["rule"] == "not_nullable"
