"""Categorical features inside the model: a real run on the churn data (raw `plan` and `region` strings, region
sometimes missing), exported to ONNX with one input per feature, agrees with its fitted pipeline, offline on the
same raw rows and through a real `bentoml serve` of the export."""

import json
from pathlib import Path

import joblib
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from conftest import NOTEBOOK
from fastpath import JSON_VALUES, allowed_values, check_fast_path, record_strategy
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from mlkit.core import ConfigError, ContractError, ExportError
from mlkit.data.contracts import validate
from mlkit.data.datasets import load_dataset
from mlkit.demo import bentoml_server, post_json
from mlkit.models.families import build_model
from mlkit.models.inference import OnnxClassifier
from mlkit.registry.convert import sklearn_to_onnx
from mlkit.registry.export import export_run
from mlkit.registry.store import get_model
from mlkit.runs.runner import run_notebook
from mlkit.serving.core import RequestError, ServingCore

CHURN = {"dataset": "churn", "time_column": "timestamp", "model": "logreg", "C": 1.0}


@pytest.fixture(scope="module")
def churn():
    return load_dataset("churn")


@pytest.fixture(scope="module")
def churn_export(settings, store):
    "A papermill run of the experiment notebook on churn, exported through mlkit's exporter: (run, export)."
    run = run_notebook(NOTEBOOK, CHURN, settings=settings, store=store)
    return run, export_run(run.id, settings=settings, store=store)


@pytest.fixture(scope="module")
def pipeline(churn_export):
    run, _ = churn_export
    return joblib.load(Path(run.run_dir) / "model.joblib")


@pytest.fixture(scope="module")
def rows(churn):
    "Raw rows as the data set has them, with missing and unseen values of both kinds added at the end."
    sample = churn.X.sample(40, random_state=7)
    odd = pd.DataFrame(
        [
            {**sample.iloc[0].to_dict(), "region": None},  # a missing category
            {**sample.iloc[1].to_dict(), "region": "atlantis"},  # a category never seen in training
            {**sample.iloc[2].to_dict(), "plan": "enterprise", "region": None},  # both
            {**sample.iloc[3].to_dict(), "age": None, "tx_count_30d": None},  # missing numbers
        ]
    )
    return pd.concat([sample, odd], ignore_index=True).astype(sample.dtypes.to_dict())


def test_the_churn_data_has_raw_categorical_features(churn):
    kinds = {c: str(churn.X[c].dtype) for c in ("plan", "region")}
    assert kinds == {"plan": "str", "region": "str"}
    assert churn.X["region"].isna().any() and not churn.X["plan"].isna().any()


def test_the_run_encodes_its_categories_inside_the_pipeline(pipeline, churn):
    columns = pipeline.named_steps["features"]
    encoder = columns.named_transformers_["categorical"].named_steps["encode"]
    assert [list(c) for c in encoder.categories_] == [
        ["basic", "pro", "team"],
        ["(missing)", "east", "north", "south", "west"],  # the missing region is a category of its own
    ]
    assert columns.transformers_[0][2] == [c for c in churn.features if c not in ("plan", "region")]


def test_the_export_takes_one_raw_input_per_feature(churn_export, settings, churn):
    _, exported = churn_export
    model = get_model(exported.tag, settings)
    session = ort.InferenceSession(model.path_of("model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    assert list(inputs) == churn.features
    assert inputs["plan"] == inputs["region"] == ("tensor(string)", [None, 1])
    assert inputs["age"] == ("tensor(float)", [None, 1])
    meta = model.info.metadata
    assert meta["parity"]["label_agreement"] == 1.0
    assert meta["parity"]["max_abs_diff"] <= settings.parity_atol


def test_onnx_matches_the_pipeline_on_raw_rows_with_missing_and_unseen_values(
    churn_export, pipeline, rows, settings
):
    "(a) the offline transformation and the one in the ONNX graph agree on the same raw rows."
    _, exported = churn_export
    model = get_model(exported.tag, settings)
    meta = model.info.metadata
    onnx = OnnxClassifier(model.path_of("model.onnx"), meta["features"], meta["classes"])
    labels, proba = onnx.predict_proba(rows)
    want = pipeline.predict_proba(rows)
    assert np.abs(proba - want).max() <= settings.parity_atol
    assert (labels == pipeline.predict(rows)).all()
    # the unseen and missing categories really reach the graph, and change the answer as they do offline
    base = rows.iloc[[1]].copy()
    variants = pd.concat(
        [base.assign(region=r) for r in ("north", "west", None, "atlantis")], ignore_index=True
    )
    assert (
        np.abs(onnx.predict_proba(variants)[1] - pipeline.predict_proba(variants)).max()
        <= settings.parity_atol
    )
    assert len({round(p, 6) for p in pipeline.predict_proba(variants)[:, 1]}) == 4


def test_the_served_model_answers_raw_fields_as_the_pipeline_does(
    churn_export, pipeline, rows, settings, churn
):
    "(b) POST /predict with raw strings (null for missing) gives the pipeline's labels and probabilities."
    _, exported = churn_export
    known = rows.drop(index=[41, 42])  # the contract allows no unseen category: those rows go to (a)
    records = [
        {k: None if pd.isna(v) else v for k, v in r.items()} for r in known[churn.features].to_dict("records")
    ]
    assert any(r["region"] is None for r in records) and all(isinstance(r["plan"], str) for r in records)
    with bentoml_server(exported.tag, settings) as url:
        status, body = post_json(url + "/predict", {"records": records})
        assert status == 200, body
        unseen = {**records[0], "region": "atlantis"}
        refused, detail = post_json(url + "/predict", {"records": [unseen]})
    assert body["labels"] == pipeline.predict(known).tolist()
    assert (
        np.abs(np.array(body["probabilities"]) - pipeline.predict_proba(known)).max() <= settings.parity_atol
    )
    assert refused == 422 and detail["detail"][0]["loc"] == ["records", 0, "region"]
    # the endpoint names the contract's rule as validation words it: one definition at both ends
    rule = detail["detail"][0]["rule"]
    assert rule == "isin(['north', 'south', 'east', 'west'])" and rule in detail["detail"][0]["msg"]
    with pytest.raises(ContractError) as offline:
        validate(churn.frame.head(100).assign(region="atlantis"), churn.schema)
    assert f"column 'region' breaks the rule {rule} (100 rows" in str(offline.value)


def test_families_without_an_encoder_refuse_categorical_features(churn):
    from mlkit.data.contracts import feature_spec

    with pytest.raises(
        ConfigError,
        match=r"The 'mlp' family takes numeric features only; .*\['plan', 'region'\]\. Use a family that",
    ):
        build_model("mlp", features=feature_spec(churn.schema))


def test_a_pipeline_without_an_encoder_is_refused_at_export(churn):
    from mlkit.data.contracts import feature_spec

    numeric = [c for c in churn.features if c not in ("plan", "region")]
    model = build_model("hgb", max_iter=5).fit(churn.X[numeric], churn.y)
    with pytest.raises(ExportError, match="need an encoder inside the pipeline"):
        sklearn_to_onnx(model, churn.X.head(), feature_spec(churn.schema))


def test_quantized_variants_of_a_model_with_string_inputs(churn_export, pipeline, rows, settings, store):
    "int8 and fp16 of an export with string inputs: kept within budget and answering raw rows, or dropped with a reason."
    run, _ = churn_export
    result = export_run(run.id, quantize=["int8", "fp16"], settings=settings, store=store)
    assert set(result.quantization) == {"int8", "fp16"}
    model = get_model(result.tag, settings)
    meta = model.info.metadata
    for kind, report in result.quantization.items():
        assert report["reason"] and not report["reason"].startswith("conversion failed"), report
        if kind == "fp16":  # scikit-learn's ML operators stay float32: nothing to convert, said so
            assert report["reason"].startswith("not applicable: fp16 converts tensor operators"), report
            assert "OneHotEncoder" in report["reason"] and not report["kept"]
            continue
        assert report["metric"] is not None and report["size_bytes"] > 0
        stored = f"model.{kind}.onnx"
        assert (stored in meta["variants"].values()) == report["kept"]
        if report["kept"]:  # a kept variant takes the same raw strings and stays within the budget
            variant = OnnxClassifier(model.path_of(stored), meta["features"], meta["classes"])
            labels, proba = variant.predict_proba(rows)
            assert (labels == pipeline.predict(rows)).mean() >= 0.95
            assert np.abs(proba - pipeline.predict_proba(rows)).max() < 0.1


@pytest.fixture(scope="module")
def churn_core(churn_export, settings):
    _, exported = churn_export
    return ServingCore.from_store(
        type(settings)(**{**settings.__dict__, "model": exported.tag, "monitor_dir": None})
    )


def raw_records(frame: pd.DataFrame) -> list[dict]:
    return [{k: None if pd.isna(v) else v for k, v in r.items()} for r in frame.to_dict("records")]


def test_raw_strings_and_nulls_take_the_fast_path_and_refusals_keep_their_words(churn_core, rows, churn):
    known = raw_records(rows.drop(index=[41, 42])[churn.features])
    fast, parsed, err = check_fast_path(churn_core, json.dumps({"records": known}))
    assert err is None and fast is not None and fast.dtype.names == tuple(churn.features)
    assert "" in list(fast["region"]) and np.isnan(fast["age"]).any()  # missing: MISSING_STRING and NaN
    unseen = json.dumps({"records": [{**known[0], "region": "atlantis"}]})
    assert churn_core._fast_matrix(unseen) is None  # pydantic decides and words it, with the contract's rule
    with pytest.raises(RequestError) as refused:
        churn_core.matrix(unseen)
    assert refused.value.status == 422
    assert refused.value.detail[0]["rule"] == "isin(['north', 'south', 'east', 'west'])"


CHURN_VALUES = (
    JSON_VALUES
    | st.sampled_from(
        ["basic", "pro", "team", "north", "south", "east", "west", "atlantis", "", "North", "pro "]
    )
    | st.floats()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=40)
)


@settings_(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_path_takes_strings_categories_and_nulls_as_pydantic_does(churn_core, rows, churn, data):
    base = raw_records(rows[churn.features].head(1))[0]
    allowed = allowed_values(churn_core.served)
    recs = data.draw(st.lists(record_strategy(base, CHURN_VALUES, allowed), max_size=3))
    body = json.dumps({"records": recs})
    fast, parsed, err = check_fast_path(churn_core, body)
    if err is not None:
        assert err.status == 422 and all(d["loc"][0] == "records" for d in err.detail)
    else:  # whatever pydantic takes (strings, categories, nulls), msgspec takes too: no body is left slow
        assert fast is not None, body
