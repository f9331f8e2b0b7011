"""The classic baseline mlkit's service is measured against: FastAPI + uvicorn, one worker, the run's scikit-learn
pipeline unpickled with joblib. Benchmark-only code (mlkit's serving path never unpickles).

    BASELINE_MODEL_INFO=/tmp/mlkit-bench/model.json \\
        .venv/bin/uvicorn baseline_fastapi:app --app-dir reports/benchmarks --port 8001 --workers 1 --no-access-log

`BASELINE_MODEL_INFO` is the model.json that serving_common.prepare_model writes (run_dir, features, classes, tag).
Same request body and answer as mlkit's /predict: `{"records": [{feature: value, ...}]}` →
labels, probabilities, classes, model. The records are checked by the same pydantic schema mlkit builds.
"""

import json
import os
from pathlib import Path
from typing import Annotated, Any

import joblib
import numpy as np
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel, Field

from mlkit.models.inference import record_model

INFO = json.loads(Path(os.environ["BASELINE_MODEL_INFO"]).read_text())
NAMES = [f["name"] for f in INFO["features"]]
PIPELINE = joblib.load(Path(INFO["run_dir"]) / "model.joblib")
Record = record_model(INFO["features"])


class Body(BaseModel):
    records: Annotated[list[Record], Field(min_length=1, max_length=100)]  # type: ignore[valid-type]


app = FastAPI(title="baseline")


@app.post("/predict")
def predict(body: Body) -> dict[str, Any]:
    X = pd.DataFrame([r.model_dump() for r in body.records], columns=NAMES)
    probabilities = PIPELINE.predict_proba(X)
    labels = PIPELINE.classes_[probabilities.argmax(axis=1)]
    return {
        "labels": labels.tolist(),
        "probabilities": np.round(probabilities, 6).tolist(),
        "classes": INFO["classes"],
        "model": INFO["tag"],
    }


@app.post("/const")
def const(body: dict[str, Any]) -> dict[str, Any]:
    return {"labels": [1], "probabilities": [[0.0, 1.0]], "classes": [0, 1], "model": "const"}


@app.get("/healthz")
def healthz() -> str:
    return "ok"
