"""mlkit's gateway under plain uvicorn (no BentoML), with parts of the request path replaced, for
serving_floor_ratio.py --ablation: how much of a request's CPU each part takes in a running server.

    MLKIT_MODEL=<tag> ABLATION=decode uvicorn gateway_ablation:app --loop uvloop --http httptools

ABLATION: `full` (the gateway and the serving core as the service runs them), `model` (the body checked and decoded,
the model run, a constant answer: no answer building, drift window, prediction log or counters), `decode` (the body
checked and decoded, a constant answer). Benchmark-only: the service never runs this.
"""

import gc
import os

from bare_asgi import app as bare

from mlkit.core import get_settings
from mlkit.serving.core import ServingCore
from mlkit.serving.gateway import Gateway

core = ServingCore.from_store(get_settings(), None)
core.start()
CONST = {"labels": [1], "probabilities": [[0.0, 1.0]], "classes": [0, 1], "model": "const", "ids": ["0-0"]}
mode = os.environ.get("ABLATION", "full")
if mode == "decode":
    core.predict_matrix = lambda X: CONST
elif mode == "model":
    core.predict_matrix = lambda X: (core.classifier.outputs(X), CONST)[1]
elif mode != "full":
    raise SystemExit(f"ABLATION={mode!r}: use full, model or decode")
gc.collect()
gc.freeze()  # as mlkit.serving.service does once the core is loaded
app = Gateway(bare, core=lambda: core, api_key=os.environ.get("MLKIT_API_KEY") or None)
