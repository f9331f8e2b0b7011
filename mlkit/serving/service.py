"""The BentoML service that serves an mlkit model: thin glue over `mlkit.serving.core` and `mlkit.serving.gateway`
(tested in nbs/serving/).

    bentoml serve mlkit.serving:ModelService            # binds 127.0.0.1:<port from settings.ini>
    bentoml build -f bentofile.yaml                     # a bento with this service, the model and its lineage

Serves what the `model` setting names (MLKIT_MODEL): an alias (`production` by default), a tag or a model name.
Only ONNX (and a text model's tokenizer.json, and the JSON reference profile) is loaded; nothing is unpickled.

Endpoints: POST /predict and POST /predict_batch (answered by the gateway in front of BentoML's stack; the batch
endpoint through BentoML's adaptive batcher, the CorkDispatcher of `batchable=True`), GET /metadata, GET /drift,
GET /metrics, GET /docs.json (the gateway's own OpenAPI document: mlkit.serving.openapi), and BentoML's /healthz, /livez, /readyz. With MLKIT_API_KEY set, all but the health probes need `Authorization: Bearer <key>` or `X-API-Key: <key>`.
Hand-written (not generated): starting a server makes a poor executed doc.
"""

import atexit
import gc
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

# One folder per `bentoml serve`, fresh at its start, shared by its workers: their Prometheus counters (metrics/)
# and drift windows (drift/). The first process to import this module (bentoml serve's own, before it starts any
# worker) makes it; the workers inherit the variable. prometheus_client picks its multiprocess mode at its first
# import, from PROMETHEUS_MULTIPROC_DIR: BentoML points that at one folder per BENTOML_HOME (two services would
# share and wipe it), so it is pointed here, before anything below imports prometheus_client.
_parent = "MLKIT_SERVICE_SHARED" not in os.environ
if _parent:
    os.environ["MLKIT_SERVICE_SHARED"] = tempfile.mkdtemp(prefix="mlkit-service-")
    atexit.register(shutil.rmtree, os.environ["MLKIT_SERVICE_SHARED"], ignore_errors=True)
_shared = Path(os.environ["MLKIT_SERVICE_SHARED"])
(_shared / "metrics").mkdir(exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_shared / "metrics")

import bentoml  # noqa: E402  (after the environment above)
from bentoml.validators import ContentType  # noqa: E402
from pydantic import Field, WithJsonSchema  # noqa: E402

from mlkit.core import get_settings  # noqa: E402
from mlkit.models.inference import record_model  # noqa: E402
from mlkit.registry.metadata import ModelMetadata  # noqa: E402
from mlkit.registry.resolve import resolve_model  # noqa: E402
from mlkit.registry.store import configure_store, get_model  # noqa: E402
from mlkit.serving.core import ServingCore, check_model  # noqa: E402
from mlkit.serving.gateway import Gateway  # noqa: E402
from mlkit.serving.variants import Watcher  # noqa: E402

_settings = get_settings()
configure_store(_settings)  # BentoML's store in this process (BentoModel below reads it) is the settings' one
_stored = get_model(
    resolve_model(settings=_settings).tag, _settings
)  # a clear error when nothing can be served
if _parent:  # refuse to start, naming the file, rather than start workers that fail on a corrupt model
    check_model(_stored)
Record = record_model(ModelMetadata.from_dict(_stored.info.metadata).features)
Records = Annotated[list[Record], Field(min_length=1, max_length=_settings.max_records)]
# The gateway answers /predict_batch itself (validated against Record, batched by BentoML's CorkDispatcher with
# the settings below): this signature documents Record's schema in the OpenAPI document.
Checked = Annotated[dict[str, Any], WithJsonSchema(Record.model_json_schema())]
Json = ContentType("application/json")  # a fixed media type: BentoML otherwise derives it per response
_core: ServingCore | None = None
_watcher: Watcher | None = None


def core() -> ServingCore:
    "The serving core of this worker, created once (by the service or by the gateway's first request)."
    global _core, _watcher
    if _core is None:
        _core = ServingCore.from_store(_settings, _shared)
        _core.start()
        _watcher = Watcher(_core, _settings)  # A/B experiments (mlkit ab start): picked up without a restart
        print(f"mlkit: {_core.limits_line()}", file=sys.stderr, flush=True)
        gc.collect()
        gc.freeze()  # what is loaded now lives as long as the worker: full collections need not walk it again
    return _core


@bentoml.service(
    name="mlkit_model",
    http={"host": _settings.host, "port": _settings.port},
    # BentoML keeps a timer per request for `timeout` seconds (never cancelled): at thousands of requests a
    # second a long timeout means long full garbage collections, i.e. the p99 (reports/benchmarks/serving.md)
    # (and longer than body_timeout_s, so a slow body gets the gateway's 408, not BentoML's 504)
    traffic={"timeout": max(10, _settings.body_timeout_s + 5)},
    workers=_settings.workers,  # BENTOML_CONFIG_OPTIONS="services.mlkit_model.workers=N" overrides it
    # the gateway serves mlkit's own Prometheus metrics at /metrics; BentoML's per-request metrics and tracing
    # middleware would double the cost of every request (reports/benchmarks/serving_profile.md)
    metrics={"enabled": False},
    tracing={
        "sample_rate": 0.0,
        "excluded_urls": ["/predict", "/predict_batch", "/healthz", "/livez", "/readyz"],
    },
    logging={"access": {"enabled": False}},
)
class ModelService:
    "Predicts labels and class probabilities for records keyed by feature name."

    model = bentoml.models.BentoModel(str(_stored.tag))  # the exact version, so `bentoml build` packs it

    def __init__(self) -> None:
        self.core = core()

    @bentoml.api
    def predict(self, records: Records) -> Annotated[dict[str, Any], Json]:
        "Labels, class probabilities and ids, one per record, in the order sent."
        # The gateway answers POST /predict itself (same core, same schema); this declaration gives the
        # OpenAPI document its schema and answers only if the gateway is taken out.
        return self.core.predict(records)

    @bentoml.api(
        batchable=True, max_batch_size=_settings.max_batch_size, max_latency_ms=_settings.max_latency_ms
    )
    def predict_batch(self, records: list[Checked]) -> Annotated[list[dict[str, Any]], Json]:
        "One {id, label, probabilities} per record; requests arriving together share one model call."
        # Like /predict, the gateway answers this route (same core, same batching settings); this method answers
        # only if the gateway is taken out.
        return self.core.predict_rows(records)

    @bentoml.on_shutdown
    def _flush(self) -> None:
        if _watcher is not None:
            _watcher.close()
        self.core.close()


class _GatewayFirst(type(ModelService)):
    """BentoML's service whose ASGI app is wrapped by mlkit's gateway: the gateway answers its paths before any of
    BentoML's own middlewares (Starlette's error handler, OpenTelemetry, the traffic timeout with one timer per
    request) and hands everything else, lifespan included, to BentoML's app unchanged. As a user middleware
    (`add_asgi_middleware`) it sat inside them, and they cost more than the model:
    reports/benchmarks/serving_floor_ratio.md."""

    __slots__ = ()

    def to_asgi(self, is_main: bool = True):
        return Gateway(super().to_asgi(is_main), core=core, api_key=os.environ.get("MLKIT_API_KEY") or None)


ModelService.__class__ = _GatewayFirst
