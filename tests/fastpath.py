"""Generated request bodies, and the check that the serving core's fast path (msgspec) accepts only what its
pydantic schema accepts and then gives the same model input: shared by the property tests of each model kind."""

import json
import math

import numpy as np
from hypothesis import strategies as st

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def allowed_values(features: list[dict], max_text_chars: int | None = None) -> dict:
    "Feature name -> a strategy of the values its contract allows (the served spec: ranges, allowed values, null)."
    out = {}
    for f in features:
        lo, hi = f.get("min"), f.get("max")
        if f.get("allowed"):
            kind = st.sampled_from(f["allowed"])
        elif f["dtype"] == "float":
            kind = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
        elif f["dtype"] == "int":
            kind = st.integers(None if lo is None else math.ceil(lo), None if hi is None else math.floor(hi))
        elif f["dtype"] == "bool":
            kind = st.booleans()
        else:
            kind = st.text(max_size=max_text_chars or 40)
        out[f["name"]] = (kind | st.none()) if f.get("nullable") else kind
    return out


def record_strategy(base: dict, values=JSON_VALUES, allowed: dict | None = None):
    """A real record with some fields replaced by arbitrary `values`, some dropped, some added; with `allowed`
    (`allowed_values`), half the records instead take every field from the real record or what its contract allows."""
    arbitrary = (
        st.fixed_dictionaries({k: st.one_of(st.just(v), values) for k, v in base.items()})
        .flatmap(
            lambda rec: st.tuples(
                st.just(rec),
                st.sets(st.sampled_from(sorted(rec)), max_size=2),
                st.dictionaries(st.text(max_size=6), values, max_size=1),
            )
        )
        .map(lambda t: {**{k: v for k, v in t[0].items() if k not in t[1]}, **t[2]})
    )
    if not allowed:
        return arbitrary
    return arbitrary | st.fixed_dictionaries({k: st.just(v) | allowed[k] for k, v in base.items()})


def same_input(a: np.ndarray, b: np.ndarray) -> bool:
    "Two model inputs alike: dtype, shape and every value (NaN equal to NaN; structured and object arrays too)."
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.names:
        return all(same_input(a[n], b[n]) for n in a.dtype.names)
    if a.dtype == object:
        return all(type(x) is type(y) and x == y for x, y in zip(a.tolist(), b.tolist(), strict=True))
    return bool(np.array_equal(a, b, equal_nan=True))


def check_fast_path(core, body: str):
    """Decode `body` both ways: the fast path may only accept what pydantic accepts, and then gives the same input.
    Returns (the fast path's input or None, pydantic's records or None, pydantic's RequestError or None)."""
    from mlkit.serving.core import RequestError

    fast = core._fast_matrix(body)
    try:
        parsed = core.parse(body)
    except RequestError as err:
        assert fast is None, f"the fast path accepted what the contract refuses: {err.detail}"
        return None, None, err
    if fast is not None:
        assert same_input(fast, core.classifier.matrix(parsed)), (fast, core.classifier.matrix(parsed))
    return fast, parsed, None


def lone_surrogate(value) -> bool:
    "A string in `value` with half a UTF-16 pair: pydantic takes it (through json.loads), msgspec refuses it."
    return any(0xD800 <= ord(c) <= 0xDFFF for c in json.dumps(value, ensure_ascii=False))


TEXT = [{"name": "text", "dtype": "str", "nullable": False}]


def text_model() -> tuple[bytes, bytes]:
    "(ONNX, tokenizer.json) of a tiny text classifier: the score is the sum of the token ids, as a text export's inputs."
    from onnx import TensorProto, helper
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "good": 2, "bad": 3}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.enable_padding(pad_id=1, pad_token="[PAD]")
    ints = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["n", "l"])
        for n in ("input_ids", "attention_mask")
    ]
    nodes = [
        helper.make_node("Mul", ["input_ids", "attention_mask"], ["kept"]),
        helper.make_node("Cast", ["kept"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["f", "axis"], ["s"], keepdims=1),
        helper.make_node("Mul", ["s", "tenth"], ["a"]),
        helper.make_node("Neg", ["a"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["logits"], axis=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    consts = [
        helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
        helper.make_tensor("tenth", TensorProto.FLOAT, [], [0.1]),
    ]
    outputs = [
        helper.make_tensor_value_info("label", TensorProto.INT64, ["n"]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 2]),
    ]
    graph = helper.make_graph(nodes, "tiny_text", ints, outputs, consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString(), tok.to_str().encode()
