"""In-process cost of `ServingCore.matrix(body)` (decode, validate, build the model's input) for a churn-like model
(raw `plan`/`region` strings, one ONNX input per feature, nullable numbers) and a text model, one record and 100.

    .venv/bin/python reports/benchmarks/decode_bench.py                       # this checkout
    PYTHONPATH=/tmp/old .venv/bin/python reports/benchmarks/decode_bench.py   # another mlkit (git archive of a commit)
"""

import json
import sys
import tempfile
import timeit
from pathlib import Path

import mlkit
from mlkit.core import load_settings
from mlkit.data.contracts import feature_spec
from mlkit.data.datasets import load_dataset
from mlkit.models.families import build_model
from mlkit.registry.convert import sklearn_to_onnx
from mlkit.serving.core import ServingCore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from fastpath import TEXT, text_model  # noqa: E402  the tiny text classifier of the tests

settings = load_settings(Path(tempfile.mkdtemp()), environ={})
churn = load_dataset("churn")
spec = feature_spec(churn.schema)
pipe = build_model("logreg", features=spec).fit(churn.X, churn.y)
churn_core = ServingCore(
    sklearn_to_onnx(pipe, churn.X.head(200), spec),
    {"features": spec, "classes": [0, 1]},
    "churn:bench",
    settings,
)
onnx, tokenizer = text_model()
text_core = ServingCore(
    onnx, {"features": TEXT, "classes": [0, 1]}, "text:bench", settings, files={"tokenizer.json": tokenizer}
)

rows = [{k: None if v != v else v for k, v in r.items()} for r in churn.X.head(100).to_dict("records")]
review = "the kettle is excellent, it boils fast and the handle stays cool " * 3
cases = {
    "churn, 1 record": (churn_core, {"records": rows[:1]}),
    "churn, 100 records": (churn_core, {"records": rows}),
    "text, 1 record": (text_core, {"records": [{"text": review}]}),
    "text, 100 records": (text_core, {"records": [{"text": review}] * 100}),
}
print(
    f"mlkit from {Path(mlkit.__file__).parent}; fast decoder: churn {getattr(churn_core, '_fast', None) is not None}, "
    f"text {getattr(text_core, '_fast', None) is not None}"
)
print("| body | matrix(body) µs (min of 15) | pydantic path µs (parse + classifier.matrix) |")
print("|---|---|---|")
for name, (core, body) in cases.items():
    raw = json.dumps(body).encode()
    n = 2000 if len(body["records"]) == 1 else 100
    fast = min(timeit.repeat(lambda core=core, raw=raw: core.matrix(raw), number=n, repeat=15)) / n * 1e6
    slow = (
        min(
            timeit.repeat(
                lambda core=core, raw=raw: core.classifier.matrix(core.parse(raw)), number=n, repeat=15
            )
        )
        / n
        * 1e6
    )
    print(f"| {name} | {fast:.1f} | {slow:.1f} |")
