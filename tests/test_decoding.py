"""The serving core's fast path (msgspec) against its pydantic schema on generated bodies, for what the breast
cancer model (tests/test_serving.py) and the churn model (tests/test_categorical.py) lack: free text (a text
classifier with its tokenizer, its ONNX graph made here in a few nodes), ints and bools."""

import json
from types import SimpleNamespace

import msgspec
import pytest
from fastpath import (
    JSON_VALUES,
    TEXT,
    allowed_values,
    check_fast_path,
    lone_surrogate,
    record_strategy,
    text_model,
)
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from mlkit.models.inference import record_model
from mlkit.serving.core import RequestError, ServingCore, _fast_decoder

TEXTS = st.text(max_size=30) | st.text(st.characters(codec="utf-8"), min_size=18, max_size=24)


@pytest.fixture(scope="module")
def text_core(settings):
    onnx, tokenizer = text_model()
    short = type(settings)(**{**settings.__dict__, "monitor_dir": None, "max_text_chars": 20})
    meta = {"features": TEXT, "classes": [0, 1], "flavor": "text", "files": ["tokenizer.json"]}
    return ServingCore(onnx, meta, "tiny-text:v1", short, files={"tokenizer.json": tokenizer})


def test_plain_text_takes_the_fast_path_and_is_answered(text_core):
    body = json.dumps({"records": [{"text": "good good"}, {"text": "bad 😀 é"}, {"text": "x" * 20}]})
    fast, parsed, err = check_fast_path(text_core, body)
    assert err is None and fast is not None and fast.tolist() == ["good good", "bad 😀 é", "x" * 20]
    answer = text_core.predict_matrix(text_core.matrix(body))
    assert len(answer["labels"]) == 3
    for bad, kind in [({"text": "x" * 21}, "string_too_long"), ({"text": 7}, "string_type"), ({}, "missing")]:
        with pytest.raises(RequestError) as refused:  # pydantic words the refusal, as it always has
            text_core.matrix(json.dumps({"records": [bad]}))
        assert refused.value.status == 422 and refused.value.detail[0]["type"] == kind


@settings_(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_path_takes_free_text_as_pydantic_does(text_core, data):
    texts = (
        TEXTS | st.text(st.characters(categories=["Cs", "Ll"]), max_size=6) | JSON_VALUES
    )  # lone surrogates too
    allowed = allowed_values(TEXT, max_text_chars=20)
    recs = data.draw(st.lists(record_strategy({"text": "good"}, texts, allowed), max_size=3))
    body = json.dumps({"records": recs})
    fast, parsed, err = check_fast_path(text_core, body)
    if err is None:  # pydantic took it: so does msgspec, unless a text holds half a surrogate pair
        assert (fast is not None) == (not lone_surrogate(recs)), body


SPEC = [
    {"name": "visits", "dtype": "int", "nullable": False, "min": 0, "max": 1000},
    {"name": "clicks", "dtype": "int", "nullable": True},
    {"name": "member", "dtype": "bool", "nullable": False},
    {"name": "score", "dtype": "float", "nullable": True, "min": -1.5, "max": 1e30},
    {"name": "plan", "dtype": "str", "nullable": True, "allowed": ["basic", "pro"]},
    {"name": "note", "dtype": "str", "nullable": False},
    {"name": "a b-c", "dtype": "float", "nullable": False},  # a name that is not an identifier
]
BASE = {"visits": 3, "clicks": None, "member": True, "score": 0.5, "plan": "pro", "note": "hi", "a b-c": 1.0}


@pytest.fixture(scope="module")
def decoders():
    "The two decoders of SPEC's bodies: msgspec's, and pydantic's behind ServingCore.parse's error handling."
    from typing import Annotated

    import pydantic
    from pydantic import ConfigDict, Field

    Record = record_model(SPEC, max_text_chars=8)
    records = Annotated[list[Record], Field(min_length=1, max_length=3)]
    Request = pydantic.create_model("R", __config__=ConfigDict(extra="forbid"), records=(records, ...))
    core = SimpleNamespace(Request=Request, _refusal=lambda error: error)
    return _fast_decoder(SPEC, 3, max_text_chars=8), lambda body: ServingCore.parse(core, body)


NUMBERS = (
    st.integers()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.sampled_from([2**63 - 1, 2**63, -(2**63), 1e400, -0.0, 1000, 1001, -1.5, 1e30])
)


@settings_(max_examples=400, deadline=None)
@given(data=st.data())
def test_ints_bools_and_texts_decode_as_pydantic_decodes_them(decoders, data):
    fast, slow = decoders
    values = JSON_VALUES | NUMBERS | st.sampled_from(["basic", "pro", "Pro", ""]) | TEXTS
    recs = data.draw(st.lists(record_strategy(BASE, values, allowed_values(SPEC, 8)), max_size=4))
    body = json.dumps({"records": recs})
    try:
        got = fast.decode(body).records
    except (msgspec.ValidationError, msgspec.DecodeError):
        got = None
    try:
        want = slow(body)
    except RequestError:
        assert got is None, f"msgspec accepted what pydantic refuses: {body}"
        return
    beyond = any(
        isinstance(r.get(k), int) and not -(2**63) <= r[k] < 2**63 for r in recs for k in ("visits", "clicks")
    )
    assert (got is not None) == (not beyond and not lone_surrogate(recs)), body
    if got is not None:  # the same values of the same types, in the feature order
        names = [f["name"] for f in SPEC]
        rows = [msgspec.structs.astuple(r) for r in got]
        assert rows == [tuple(getattr(r, n) for n in names) for r in want]
        assert [tuple(map(type, r)) for r in rows] == [
            tuple(type(getattr(r, n)) for n in names) for r in want
        ]


def test_rules_without_an_exact_msgspec_twin_leave_the_model_to_pydantic():
    for odd in (
        {
            "name": "grade",
            "dtype": "int",
            "allowed": [1, 2],
        },  # pydantic's Literal[1] takes what msgspec's would not
        {"name": "x", "dtype": "float", "min": 2**53 + 1},  # a bound no float holds
        {"name": "x", "dtype": "float", "max": float("nan")},
        {"name": "x", "dtype": "int", "min": float("inf")},
        {"name": "s", "dtype": "str", "min": "a"},
        {"name": "x", "dtype": "decimal"},
    ):
        assert _fast_decoder([odd], 10) is None, odd
