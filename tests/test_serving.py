"""A real `bentoml serve mlkit.serving:ModelService` on a loopback port, driven over HTTP."""

import asyncio
import json
import math
import time
from pathlib import Path

import httpx
import joblib
import pytest
from fastpath import check_fast_path, record_strategy
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from mlkit.data.datasets import load_dataset
from mlkit.registry.store import get_model

FEATURES = [c for c in load_dataset("breast_cancer").frame.columns if c != "target"]


@pytest.fixture(scope="module")
def rows():
    return load_dataset("breast_cancer").frame.sample(5, random_state=3)


@pytest.fixture(scope="module")
def pipeline(exported, settings):
    meta = get_model(exported.tag, settings).info.metadata
    return joblib.load(Path(settings.runs_dir) / meta["run_id"] / "model.joblib")


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


def records(rows) -> list[dict]:
    return [{k: float(v) for k, v in r.items()} for r in rows[FEATURES].to_dict(orient="records")]


def one(rows, **change) -> dict:
    rec = records(rows.head(1))[0]
    rec.update(change)
    return rec


def test_valid_records_get_labels_probabilities_and_ids_in_order(http, rows, pipeline, exported):
    r = http.post("/predict", json={"records": records(rows)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["labels"] == pipeline.predict(rows[FEATURES]).tolist()
    for got, want in zip(body["probabilities"], pipeline.predict_proba(rows[FEATURES]), strict=True):
        assert got == pytest.approx(want.tolist(), abs=1e-4)
        assert math.isclose(sum(got), 1.0, abs_tol=1e-5)
    assert body["classes"] == [0, 1]
    assert body["model"] == exported.tag == r.headers["x-model-version"]
    assert len(set(body["ids"])) == len(rows)


def test_a_request_over_the_inline_limit_is_answered_whole_and_in_order(exported, settings, pipeline):
    """Above _INLINE_ROWS records /predict runs in a worker thread, and /predict_batch's batcher splits a request
    over max_batch_size rows across model calls: both answer whole and in order."""
    import anyio

    from mlkit.serving.core import ServingCore
    from mlkit.serving.gateway import _INLINE_ROWS, Gateway

    roomy = {"model": exported.tag, "monitor_dir": None, "max_records": 5000, "max_body_bytes": 10**7}
    core = ServingCore.from_store(type(settings)(**{**settings.__dict__, **roomy}))
    big = load_dataset("breast_cancer").frame.sample(_INLINE_ROWS + 200, replace=True, random_state=5)

    async def inner(scope, receive, send):
        raise AssertionError("the gateway answers POST /predict itself")

    async def post():
        transport = httpx.ASGITransport(app=Gateway(inner, core=lambda: core))
        async with httpx.AsyncClient(transport=transport, base_url="http://mlkit") as client:
            body = {"records": records(big)}
            return await client.post("/predict", json=body), await client.post("/predict_batch", json=body)

    assert len(big) > core.settings.max_batch_size
    r, batch = anyio.run(post)
    assert r.status_code == 200, r.text[:500]
    assert r.json()["labels"] == pipeline.predict(big[FEATURES]).tolist()
    assert batch.status_code == 200, batch.text[:500]
    assert [a["label"] for a in batch.json()] == r.json()["labels"]
    assert [a["probabilities"] for a in batch.json()] == r.json()["probabilities"]
    assert core.metrics.registry.get_sample_value("mlkit_batch_rows_count") >= 2  # split over model calls


def bad_cases(rows):
    missing = one(rows)
    del missing["worst_area"]
    return [
        ("missing field", {"records": [missing]}, ["records", 0, "worst_area"], "missing"),
        (
            "string for a number",
            {"records": [one(rows, mean_radius="12.1")]},
            ["records", 0, "mean_radius"],
            "float_type",
        ),
        (
            "null for a number",
            {"records": [one(rows, mean_texture=None)]},
            ["records", 0, "mean_texture"],
            "float_type",
        ),
        (
            "unknown field",
            {"records": [one(rows, mean_radiuss=1.0)]},
            ["records", 0, "mean_radiuss"],
            "extra_forbidden",
        ),
        ("empty list", {"records": []}, ["records"], "too_short"),
        ("records not a list", {"records": {"mean_radius": 1.0}}, ["records"], "list_type"),
        ("too many records", {"records": records(rows) * 11}, ["records"], "too_long"),
        ("no records key", {"rows": []}, ["records"], "missing"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_bad_records_get_422_naming_the_field_and_the_rule(http, rows, case):
    name, payload, loc, kind = bad_cases(rows)[case]
    r = http.post("/predict", json=payload)
    assert r.status_code == 422, (name, r.status_code, r.text)
    assert {"loc": loc, "type": kind} in [{"loc": d["loc"], "type": d["type"]} for d in r.json()["detail"]], (
        name
    )
    assert all(d["msg"] for d in r.json()["detail"])


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(http, rows, literal):
    text = json.dumps({"records": [one(rows, mean_area=12345.5)]}).replace("12345.5", literal)
    r = http.post("/predict", content=text, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["records", 0, "mean_area"]
    assert r.json()["detail"][0]["type"] == "finite_number"


@pytest.mark.parametrize(
    ("raw", "status"), [(b"{not json", 400), (b"", 400), (b"[]", 422), (b'"records"', 422)]
)
def test_malformed_bodies_get_4xx(http, raw, status):
    r = http.post("/predict", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text


@pytest.mark.parametrize("media", ["application/python-pickle", "application/x-pickle", "text/plain"])
def test_anything_but_json_gets_415(http, rows, media):
    r = http.post("/predict", content=json.dumps({"records": records(rows)}), headers={"Content-Type": media})
    assert r.status_code == 415, r.text
    assert "application/json" in r.json()["detail"][0]["msg"]


def test_oversized_body_gets_413(http, rows):
    big = {"records": records(rows) * 40}  # about 100 kB, over the fixture's 60 kB limit
    r = http.post("/predict", json=big)
    assert r.status_code == 413, r.text
    assert "max_body_bytes" in r.json()["detail"][0]["msg"]


def test_metadata_names_model_alias_lineage_contract_and_parity(http, exported, settings):
    r = http.get("/metadata")
    assert r.status_code == 200
    meta = r.json()
    stored = get_model(exported.tag, settings).info.metadata
    assert meta["model"] == exported.tag == r.headers["x-model-version"]
    assert meta["lineage"]["run_id"] == stored["run_id"]
    assert meta["lineage"]["notebook_hash"] == stored["notebook_hash"]
    assert [f["name"] for f in meta["contract"]] == FEATURES
    assert meta["parity"]["max_abs_diff"] == pytest.approx(exported.parity.max_abs_diff)
    assert meta["reference"]["rows"] > 0 and meta["reference"]["source"] == "training"


def test_health_probes_and_metrics(http):
    for probe in ("/healthz", "/livez", "/readyz"):
        r = http.get(probe)
        assert r.status_code == 200 and r.headers["x-model-version"]
    http.post("/predict", content=b"x", headers={"Content-Type": "application/python-pickle"})
    text = http.get("/metrics").text
    assert 'mlkit_rejected_requests_total{reason="media_type"}' in text
    assert "mlkit_predictions_total{" in text
    assert 'mlkit_request_duration_seconds_count{endpoint="/predict"}' in text


def batched(http) -> tuple[float, float]:
    "Model calls of the batch endpoint so far, and the rows they predicted (from /metrics)."
    found = dict.fromkeys(("mlkit_batch_rows_count", "mlkit_batch_rows_sum"), 0.0)
    for line in http.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] = float(value)
    return found["mlkit_batch_rows_count"], found["mlkit_batch_rows_sum"]


def test_batch_endpoint_gives_each_concurrent_caller_its_own_rows_in_order(http, pipeline, server):
    frame = load_dataset("breast_cancer").frame
    chunks = [frame.iloc[i * 5 : i * 5 + 1 + i % 7] for i in range(96)]  # 96 callers, 1 to 7 rows each
    calls, rows = batched(http)

    async def burst():  # all at once, 96 connections: they queue together, as under real load
        limits = httpx.Limits(max_connections=len(chunks))
        async with httpx.AsyncClient(base_url=server, timeout=30, limits=limits) as c:
            calls = (c.post("/predict_batch", json={"records": records(chunk)}) for chunk in chunks)
            return await asyncio.gather(*calls)

    answers = asyncio.run(burst())
    calls_after, rows_after = batched(http)
    assert rows_after - rows == sum(len(c) for c in chunks)  # every row went through the batcher once
    assert calls_after - calls < len(chunks), "no two requests shared a model call"
    print(f"{len(chunks)} requests, {calls_after - calls:.0f} model calls")
    for chunk, r in zip(chunks, answers, strict=True):
        assert r.status_code == 200, r.text
        assert [a["label"] for a in r.json()] == pipeline.predict(chunk[FEATURES]).tolist()
        for a, want in zip(r.json(), pipeline.predict_proba(chunk[FEATURES]), strict=True):
            assert a["probabilities"] == pytest.approx(want.tolist(), abs=1e-4)
    r = http.post("/predict_batch", json={"records": [{"mean_radius": 1.0}]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["records", 0]


# --- a second server: API key on, a small drift window -------------------------------------------------


@pytest.fixture(scope="module")
def guarded(exported, settings, tmp_path_factory):
    from mlkit.demo import bentoml_server

    monitor = tmp_path_factory.mktemp("monitor")
    env = {
        "MLKIT_API_KEY": "s3cret-key",
        "MLKIT_DRIFT_WINDOW": "200",
        "MLKIT_DRIFT_MIN_ROWS": "100",
        "MLKIT_MONITOR_DIR": str(monitor),
    }
    with bentoml_server(exported.tag, settings, env=env) as url:
        yield url, monitor


def test_api_key_is_required_everywhere_but_the_health_probes(guarded, rows):
    url, _ = guarded
    body = {"records": records(rows)}
    with httpx.Client(base_url=url, timeout=30) as c:
        assert c.post("/predict", json=body).status_code == 401
        assert c.post("/predict", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/predict_batch", json=body).status_code == 401
        for path in ("/metadata", "/drift", "/metrics", "/docs.json"):
            assert c.get(path).status_code == 401, path
        assert (
            c.post("/predict", json=body, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        )
        assert c.post("/predict", json=body, headers={"X-API-Key": "s3cret-key"}).status_code == 200
        for probe in ("/healthz", "/livez", "/readyz"):
            assert c.get(probe).status_code == 200


def test_drift_flags_exactly_the_shifted_feature_and_the_log_keeps_every_row(guarded, exported):
    from mlkit.monitoring.predlog import read_log

    url, monitor = guarded
    frame = load_dataset("breast_cancer").frame
    key = {"X-API-Key": "s3cret-key"}
    ids = []
    with httpx.Client(base_url=url, timeout=30, headers=key) as c:
        stable = frame.sample(200, random_state=11)
        for i in range(0, 200, 20):
            ids += c.post("/predict", json={"records": records(stable.iloc[i : i + 20])}).json()["ids"]
        calm = c.get("/drift").json()
        assert calm["decision"] == "no drift", calm
        shifted = frame.sample(200, random_state=12).assign(
            worst_smoothness=lambda d: d["worst_smoothness"] * 1.25
        )
        for i in range(0, 200, 20):
            ids += c.post("/predict", json={"records": records(shifted.iloc[i : i + 20])}).json()["ids"]
        alarm = c.get("/drift").json()
        assert (alarm["decision"], alarm["drifted"]) == ("drift", ["worst_smoothness"]), alarm
        metrics = c.get("/metrics").text
        assert 'mlkit_drift_detected{feature="worst_smoothness"} 1.0' in metrics
        assert 'mlkit_drift_detected{feature="mean_radius"} 0.0' in metrics
    folder = monitor / alarm["model"].replace(":", "/")
    deadline, logged = time.monotonic() + 20, None  # the log writer starts a file every 10 s
    while time.monotonic() < deadline:
        if any(folder.glob("*.parquet")):
            logged = read_log(folder)
            if set(ids) <= set(logged["__id__"]):
                break
        time.sleep(0.5)
    assert logged is not None and set(ids) <= set(logged["__id__"]), "logged rows are missing"
    assert logged["worst_smoothness"].notna().all()


# --- property-based: hypothesis on the validation, schemathesis on the OpenAPI document -------------------


@pytest.fixture(scope="module")
def core(exported, settings):
    from mlkit.serving.core import ServingCore

    tagged = type(settings)(**{**settings.__dict__, "model": exported.tag, "monitor_dir": None})
    return ServingCore.from_store(tagged)


@settings_(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_validation_accepts_exactly_what_the_contract_allows(core, rows, data):
    recs = data.draw(st.lists(record_strategy(records(rows.head(1))[0]), min_size=0, max_size=3))
    body = json.dumps({"records": recs})
    # the gateway's fast path (msgspec) may only accept what pydantic accepts, and gives the same matrix
    fast, parsed, err = check_fast_path(core, body)
    if err is not None:
        assert err.status == 422
        for d in err.detail:
            assert d["loc"][0] == "records" and d["msg"]
            if len(d["loc"]) >= 3:  # a record's field: one that was sent or one the contract needs
                assert d["loc"][2] in recs[d["loc"][1]] or d["loc"][2] in FEATURES
        return
    assert 1 <= len(recs) <= core.settings.max_records
    for rec, got in zip(recs, parsed, strict=True):
        assert set(rec) == set(FEATURES)
        for k, v in rec.items():
            assert isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            assert getattr(got, k) == pytest.approx(v)
    assert len(core.predict(parsed)["labels"]) == len(recs)
    plain = all(type(v) in (int, float) for rec in recs for v in rec.values())
    assert (fast is not None) == plain  # plain numbers always take the fast path, and nothing else does


@settings_(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_no_generated_request_gets_a_5xx_over_http(http, rows, data):
    recs = data.draw(st.lists(record_strategy(records(rows.head(1))[0]), max_size=3))
    body = json.dumps({"records": recs})  # Python writes inf as Infinity: the server must refuse it, not fail
    path = data.draw(st.sampled_from(["/predict", "/predict_batch"]))
    r = http.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code in (200, 422), r.text


def test_schemathesis_finds_no_server_error(server):
    import schemathesis
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(server + "/docs.json")
    tested = []
    for result in schema.get_all_operations():
        op = result.ok()

        @settings_(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def check(case):
            response = case.call(base_url=server)
            case.validate_response(response, checks=(not_a_server_error,))

        check()
        tested.append(op.label)
    assert {"POST /predict", "POST /predict_batch"} <= set(tested), tested


def test_the_serving_path_imports_no_training_stack():
    "What a served model imports: no papermill, Optuna, Dask, torch, W&B or scikit-learn (the bento stays small)."
    import subprocess
    import sys

    code = (
        "import sys, mlkit.serving.core, mlkit.registry.store, mlkit.monitoring.drift, mlkit.models.inference\n"
        "heavy = ('papermill', 'optuna', 'dask', 'torch', 'wandb', 'sklearn', 'skl2onnx', 'transformers')\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
