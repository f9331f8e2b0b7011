"""A real `bentoml serve mlkit.serving:ModelService` on a loopback port, driven over HTTP."""

import json
import math
from pathlib import Path

import joblib
import pytest

from mlkit.data import load_dataset
from mlkit.demo import post_json
from mlkit.registry import get_model


@pytest.fixture(scope="module")
def rows():
    return load_dataset("breast_cancer").frame.sample(5, random_state=3)


@pytest.fixture(scope="module")
def pipeline(exported, settings):
    meta = get_model(exported.tag, settings).info.metadata
    return joblib.load(Path(settings.runs_dir) / meta["run_id"] / "model.joblib")


def records(rows) -> list[dict]:
    features = [c for c in rows.columns if c != "target"]
    return [{k: float(v) for k, v in r.items()} for r in rows[features].to_dict(orient="records")]


def test_valid_records_get_labels_and_probabilities_in_order(server, rows, pipeline, exported):
    status, body = post_json(server + "/predict", {"records": records(rows)})
    assert status == 200, body
    features = [c for c in rows.columns if c != "target"]
    assert body["labels"] == pipeline.predict(rows[features]).tolist()
    expected = pipeline.predict_proba(rows[features])
    for got, want in zip(body["probabilities"], expected, strict=True):
        assert got == pytest.approx(want.tolist(), abs=1e-4)
        assert math.isclose(sum(got), 1.0, abs_tol=1e-5)
    assert body["classes"] == [0, 1]
    assert body["model"] == exported.tag


def one(rows, **change) -> dict:
    rec = records(rows.head(1))[0]
    rec.update(change)
    return rec


def bad_cases(rows):
    missing = one(rows)
    del missing["worst_area"]
    return [
        ("missing field", {"records": [missing]}, ["records", 0, "worst_area"]),
        ("string for a number", {"records": [one(rows, mean_radius="12.1")]}, ["records", 0, "mean_radius"]),
        (
            "null for a required number",
            {"records": [one(rows, mean_texture=None)]},
            ["records", 0, "mean_texture"],
        ),
        ("unknown field", {"records": [one(rows, mean_radiuss=1.0)]}, ["records", 0, "mean_radiuss"]),
        ("empty list", {"records": []}, ["records"]),
        ("records not a list", {"records": {"mean_radius": 1.0}}, ["records"]),
        ("too many records", {"records": records(rows) * 11}, ["records"]),
        ("no records key", {"rows": []}, ["records"]),
    ]


@pytest.mark.parametrize("case", range(8))
def test_bad_input_gets_4xx_naming_the_field(server, rows, case):
    name, payload, loc = bad_cases(rows)[case]
    status, body = post_json(server + "/predict", payload)
    assert 400 <= status < 500, (name, status, body)
    assert loc in [d["loc"] for d in body["detail"]], (name, body)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(server, rows, literal):
    text = json.dumps({"records": [one(rows, mean_area=12345.5)]}).replace("12345.5", literal)
    status, body = post_json(server + "/predict", text.encode())
    assert status == 400, body
    assert body["detail"][0]["loc"] == ["records", 0, "mean_area"]
    assert body["detail"][0]["type"] == "finite_number"


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[]", b'"records"'])
def test_malformed_bodies_are_4xx_not_5xx(server, raw):
    status, _ = post_json(server + "/predict", raw)
    assert 400 <= status < 500


def test_health_probes_answer(server):
    import urllib.request

    for probe in ("/healthz", "/livez", "/readyz"):
        with urllib.request.urlopen(server + probe, timeout=5) as r:
            assert r.status == 200
