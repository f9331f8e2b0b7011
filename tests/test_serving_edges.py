"""What a hostile client or an odd number sends to a served model: numbers at float32's edges, bodies that are
deep, compressed, truncated, slow or abandoned, limits that must agree, and the OpenAPI document checked by
schemathesis with every check. In process where the question is the model's arithmetic; over a real
`bentoml serve` on loopback (the session's `server`, body_timeout_s = 2) where it is HTTP."""

import gzip
import json
import math
import os
import socket
import subprocess
import sys
import time
import zlib
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from openapi_check import schemathesis_all_checks

from mlkit.data.contracts import feature_spec
from mlkit.data.datasets import load_dataset

F32 = float(np.finfo(np.float32).max)
EDGES = [
    F32,
    -F32,
    float(np.nextafter(F32, np.inf)),  # just above float32's largest: infinity once cast
    1e39,
    -1e39,
    1e300,
    -1.7976931348623157e308,
    5e-324,  # float64's smallest subnormal
    -1e-310,
    1.4e-45,  # float32's smallest subnormal
    1.1754943508222875e-38,  # float32's smallest normal
    0.0,
    -0.0,
    1e30,
    -3e35,
]


# --- numbers: every family, in process, against the fitted pipeline's own answers -------------------------------


def _family_cores(task: str, data: str):
    "(family, fitted pipeline, its ServingCore) for every registered family of `task`, trained small on `data`."
    import tempfile
    from pathlib import Path

    from mlkit.core import load_settings
    from mlkit.models.families import build_model, families
    from mlkit.monitoring.drift import reference_profile
    from mlkit.registry.convert import _run_exporter
    from mlkit.serving.core import ServingCore

    ds = load_dataset(data)
    spec = feature_spec(ds.schema)
    settings = load_settings(Path(tempfile.mkdtemp()), environ={"MLKIT_MONITOR_DIR": ""})
    classes = sorted(ds.y.unique().tolist()) if task == "classification" else []
    profile = reference_profile(ds.X, spec)
    out = []
    for family in families(task):
        model = build_model(family, spec, task=task, n_estimators=10, max_iter=50, epochs=5).fit(ds.X, ds.y)
        last = model[-1] if hasattr(model, "steps") else model
        onnx = _run_exporter(getattr(last, "mlkit_flavor", "sklearn"), model, ds.X.to_numpy(), spec)
        meta = {"features": spec, "classes": classes, "task": task}
        out.append((family, model, ServingCore(onnx, meta, f"{family}:v1", settings, None, profile)))
    return ds, out


@pytest.fixture(scope="module", params=[("classification", "breast_cancer"), ("regression", "diabetes")])
def family_cores(request):
    return load_dataset(request.param[1]), request.param[0], _family_cores(*request.param)[1]


def _numbers(value) -> list:
    "Every leaf of a JSON answer."
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return [value]


def _record(ds, names):
    "A real record with some values replaced by float edges, arbitrary floats or the model's own bound edges."
    value = st.one_of(st.sampled_from(EDGES), st.floats(allow_nan=False, allow_infinity=False))
    rows = ds.X.sample(20, random_state=0).to_dict(orient="records")
    return st.sampled_from(rows).flatmap(
        lambda row: st.dictionaries(st.sampled_from(names), value, max_size=len(names)).map(
            lambda change: {**{k: float(v) for k, v in row.items()}, **change}
        )
    )


@settings_(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_number_is_answered_as_the_pipeline_would_or_refused_naming_field_and_range(family_cores, data):
    import pandas as pd

    from mlkit.serving.core import RequestError

    ds, task, cores = family_cores
    names = list(ds.X.columns)
    recs = data.draw(st.lists(_record(ds, names), min_size=1, max_size=4))
    for family, pipeline, core in cores:
        body = json.dumps({"records": recs})
        try:
            out = core.predict_matrix(core.matrix(body))
        except RequestError as err:
            assert err.status == 422, (family, err.detail)
            served = {f["name"]: f for f in core.served}
            for d in err.detail:
                i, field = d["loc"][1], d["loc"][2]  # a field was refused, never a whole record in range
                lo, hi, v = served[field]["min"], served[field]["max"], recs[i][field]
                assert v < lo or v > hi, (family, d, lo, hi)
                if abs(v) > core.bounds[field]:  # past what float32 computes: the message says the range
                    assert f"{core.bounds[field]:.6g}" in d["msg"] and field in d["msg"], d["msg"]
            continue
        leaves = _numbers(
            json.loads(json.dumps(out, allow_nan=False))
        )  # allow_nan=False: NaN/inf would raise
        assert None not in leaves, (family, out)
        frame = pd.DataFrame(recs, columns=names)
        if task == "regression":
            want = pipeline.predict(frame)
            scale = (
                1 + np.abs(want) + np.abs(frame.to_numpy()).max(axis=1)
            )  # float32 keeps ~7 digits of the terms
            assert np.all(np.abs(np.array(out["predictions"]) - want) <= 1e-3 * scale), (family, out, want)
        else:
            proba = pipeline.predict_proba(frame)
            clear = np.sort(proba, axis=1)[:, -1] - np.sort(proba, axis=1)[:, -2] > 1e-2  # not near a tie
            got = np.array(out["labels"])
            assert np.array_equal(got[clear], pipeline.predict(frame)[clear]), (family, out, proba)


# --- HTTP: a real `bentoml serve` (the session's server fixture) -------------------------------------------------


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server, timeout=20) as client:
        yield client


@pytest.fixture(scope="module")
def row():
    ds = load_dataset("breast_cancer")
    return {k: float(v) for k, v in ds.X.iloc[0].items()}


def raw_exchange(
    url: str, head: bytes, chunks=(), pause: float = 0.0, read: bool = True
) -> tuple[bytes, float]:
    "Send `head` and `chunks` (with `pause` s between them) over a plain socket; (what came back, seconds taken)."
    where = urlparse(url)
    started = time.monotonic()
    with socket.create_connection((where.hostname, where.port), timeout=20) as s:
        s.sendall(head)
        for chunk in chunks:
            time.sleep(pause)
            try:
                s.sendall(chunk)
            except OSError:  # the server answered and closed already
                break
        if not read:
            return b"", time.monotonic() - started
        got = b""
        while True:
            try:
                part = s.recv(65536)
            except TimeoutError:
                break
            if not part:
                break
            got += part
    return got, time.monotonic() - started


def _head(length: int, extra: str = "") -> bytes:
    return (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def test_a_value_beyond_float32_is_refused_with_the_field_and_range(http, row):
    for value in (1e39, -1e300, 1e38):
        r = http.post("/predict", json={"records": [{**row, "mean_radius": value}]})
        assert r.status_code in (200, 422), r.text
        if r.status_code == 422:
            (d,) = r.json()["detail"]
            assert d["loc"] == ["records", 0, "mean_radius"] and "between" in d["msg"], d
        else:
            assert None not in _numbers(r.json()), r.text
    r = http.post("/predict", json={"records": [{**row, "mean_radius": 1e39}]})
    assert r.status_code == 422


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deeply_nested_json_gets_400_or_422(http, depth):
    body = '{"records": ' + "[" * depth + "]" * depth + "}"
    r = http.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 413, 422), r.text[:300]


def test_gzip_and_deflate_bodies_are_answered_like_plain_ones(http, row):
    plain = json.dumps({"records": [row, row]}).encode()
    want = http.post("/predict", content=plain, headers={"Content-Type": "application/json"}).json()["labels"]
    for coding, packed in (("gzip", gzip.compress(plain)), ("deflate", zlib.compress(plain))):
        r = http.post(
            "/predict",
            content=packed,
            headers={"Content-Type": "application/json", "Content-Encoding": coding},
        )
        assert r.status_code == 200, (coding, r.text)
        assert r.json()["labels"] == want


def test_a_zip_bomb_gets_413_and_broken_or_unknown_encodings_get_4xx(http, row):
    bomb = gzip.compress(b" " * 50_000_000)  # 49 kB that would be 50 MB
    r = http.post(
        "/predict", content=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert r.status_code == 413 and "once gzip is undone" in r.json()["detail"][0]["msg"], r.text
    packed = gzip.compress(json.dumps({"records": [row]}).encode())
    for coding, body, status in (
        ("gzip", b"not gzip at all", 400),
        ("gzip", packed[: len(packed) // 2], 400),  # truncated stream
        ("br", packed, 415),
    ):
        r = http.post(
            "/predict", content=body, headers={"Content-Type": "application/json", "Content-Encoding": coding}
        )
        assert r.status_code == status, (coding, r.status_code, r.text)
        assert r.json()["detail"][0]["msg"]


def test_a_body_shorter_than_its_content_length_gets_408_and_the_connection_closes(server):
    got, seconds = raw_exchange(server, _head(1000) + b'{"records": [')
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b"body_timeout_s" in got
    assert seconds < 15  # the socket was closed by the server (recv returned b""), not by our 20 s timeout


def test_a_slow_sender_gets_408_and_the_worker_stays_free(server, http, row):
    body = json.dumps({"records": [row]}).encode()
    got, _ = raw_exchange(server, _head(len(body)), [body[i : i + 1] for i in range(len(body))], pause=0.5)
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert http.post("/predict", json={"records": [row]}).status_code == 200


def test_a_client_that_leaves_mid_body_costs_nothing(server, http, row):
    before = _count(http, 'mlkit_requests_total{endpoint="/predict",status="499"}')
    raw_exchange(server, _head(5000) + b'{"records": [{"mean_', read=False)
    deadline = time.monotonic() + 10
    while _count(http, 'mlkit_requests_total{endpoint="/predict",status="499"}') == before:
        assert time.monotonic() < deadline, "the abandoned request was not counted"
        time.sleep(0.2)
    assert http.post("/predict", json={"records": [row]}).status_code == 200


def test_a_huge_declared_length_gets_413_at_once(server):
    got, _ = raw_exchange(server, _head(10**12))
    assert got.startswith(b"HTTP/1.1 413"), got[:200]


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/predict"), ("TRACE", "/predict"), ("POST", "/metadata")]
)
def test_a_wrong_method_gets_405_with_allow(http, method, path):
    r = http.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] in ("GET", "POST"), r.text
    assert r.json()["detail"][0]["type"] == "method_not_allowed"


def test_the_documented_maximum_of_records_can_be_sent(http, row):
    "The largest records this model takes, as many as /metadata and the OpenAPI document promise, fit the body limit."
    limits = http.get("/metadata").json()["limits"]
    doc = http.get("/docs.json").json()
    most = doc["components"]["schemas"]["Request"]["properties"]["records"]["maxItems"]
    assert most == limits["max_records"] >= 1
    widest = {k: -2.2250738585072014e-308 for k in row}  # the longest number Python writes, in bounds
    body = json.dumps({"records": [widest] * most})  # json.dumps' default ", " and ": " spaces
    assert len(body) <= limits["max_body_bytes"]
    r = http.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text[:300]
    r = http.post("/predict", json={"records": [row] * (most + 1)})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "too_long", r.text[:300]


def test_schemathesis_with_every_check_finds_nothing(server):
    code, out = schemathesis_all_checks(server)
    assert code == 0 and "No issues found" in out, out[-4000:]


def test_schemathesis_with_every_check_finds_nothing_behind_an_api_key(exported, settings):
    from mlkit.demo import bentoml_server

    with bentoml_server(exported.tag, settings, env={"MLKIT_API_KEY": "s3cret"}) as url:
        assert httpx.get(url + "/docs.json").status_code == 401
        doc = httpx.get(url + "/docs.json", headers={"X-API-Key": "s3cret"}).json()
        assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        code, out = schemathesis_all_checks(url, {"Authorization": "Bearer s3cret"}, seed=2)
    assert code == 0 and "No issues found" in out, out[-4000:]


def test_a_port_out_of_range_stops_the_server_with_the_key_named(exported, settings):
    env = {**os.environ, "MLKIT_MODEL": exported.tag, "MLKIT_PORT": "99999", "BENTOML_DO_NOT_TRACK": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "bentoml", "serve", "mlkit.serving:ModelService"],
        env=env,
        cwd=settings.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "MLKIT_PORT must be a TCP port, 1 to 65535. Got '99999'" in done.stdout + done.stderr


def _count(http, sample: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_answers_never_carry_nan(http, row):
    "Whatever was accepted, every number in the answer is finite (the JSON has no null where numbers go)."
    for value in EDGES:
        r = http.post("/predict", json={"records": [{**row, "mean_texture": value}]})
        assert r.status_code in (200, 422)
        if r.status_code == 200:
            assert all(
                isinstance(x, int | float | str) and not (isinstance(x, float) and not math.isfinite(x))
                for x in _numbers(r.json())
            )
