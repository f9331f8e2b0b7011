"""Variants of mlkit's BentoML service, one `@bentoml.service` class each, for reports/benchmarks/serving_profile.py.

    bentoml serve serving_variants:Lean --working-dir reports/benchmarks   # MLKIT_MODEL etc. as mlkit.serving.service

Every variant loads the same ONNX model the way mlkit/serving/service.py does and answers `POST /predict` (body
`{"records": [...]}`, the same 400 body on bad input) and `POST /const` (BentoML's floor: no model, no validation).
Benchmark-only code: mlkit/serving/service.py is the service.

| class | config | hot path |
|---|---|---|
| Default | mlkit/serving/service.py's today: traffic timeout 30, everything else BentoML's default | sync `@bentoml.api` |
| DefaultAsync | same config | async `@bentoml.api` (no threadpool hop) |
| NoMetrics / NoAccessLog / NoTracing | one of the three switched off | sync `@bentoml.api` |
| Lean | metrics off, access log off, /predict and /const excluded from tracing | sync `@bentoml.api` |
| LeanAsync | Lean's config | async `@bentoml.api` |
| Mounted | Lean's config (+ /fast excluded) | `@bentoml.asgi_app` Starlette app at /fast: /fast/predict, /fast/const |
| Middleware | Lean's config | `add_asgi_middleware`: answers /predict and /const itself, orjson, pydantic validate_json |
| MiddlewareMon | Lean's config | Middleware + an in-memory monitoring buffer flushed to Parquet by a thread |
"""

import asyncio
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
import orjson
import pydantic
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlkit.core import get_settings
from mlkit.models.inference import make_classifier, record_model
from mlkit.registry.resolve import resolve_model
from mlkit.registry.store import get_model

_settings = get_settings()
_stored = get_model(resolve_model(settings=_settings).tag, _settings)
_model = bentoml.models.BentoModel(str(_stored.tag))
_metadata = _stored.info.metadata
Record = record_model(_metadata["features"])
Records = Annotated[list[Record], Field(min_length=1, max_length=_settings.max_records)]
Body = pydantic.create_model("Input", records=(Records, ...))  # the same schema BentoML builds from `predict`
logger = logging.getLogger("bentoml.serve")
CONST = {"labels": [1], "probabilities": [[0.0, 1.0]], "classes": [0, 1], "model": "const"}

HOT = ["/predict", "/const", "/fast"]
LEAN = {
    "metrics": {"enabled": False},
    "logging": {"access": {"enabled": False}},
    "tracing": {"excluded_urls": HOT},
}


def _load(model) -> Any:
    files = {name: model.path_of(name) for name in _metadata.get("files", [])}
    return make_classifier(model.path_of("model.onnx"), _metadata["features"], _metadata["classes"], files)


def _service(name: str, config: dict, asynchronous: bool):
    "A service class named `name` with /predict and /const, sync or async."
    if asynchronous:

        class S:
            model = _model

            def __init__(self) -> None:
                self.tag = str(self.model.tag)
                self.classifier = _load(self.model)

            @bentoml.api
            async def predict(self, records: Records) -> dict[str, Any]:
                return {**self.classifier.predict_records(records), "model": self.tag}

            @bentoml.api
            async def const(self, records: list[dict[str, Any]]) -> dict[str, Any]:
                return CONST

    else:

        class S:
            model = _model

            def __init__(self) -> None:
                self.tag = str(self.model.tag)
                self.classifier = _load(self.model)

            @bentoml.api
            def predict(self, records: Records) -> dict[str, Any]:
                return {**self.classifier.predict_records(records), "model": self.tag}

            @bentoml.api
            def const(self, records: list[dict[str, Any]]) -> dict[str, Any]:
                return CONST

    S.__name__ = S.__qualname__ = name
    cfg = {"http": {"host": _settings.host, "port": _settings.port}, "traffic": {"timeout": 30}, **config}
    return bentoml.service(name=f"bench_{name.lower()}", **cfg)(S)


Default = _service("Default", {}, False)
DefaultAsync = _service("DefaultAsync", {}, True)
NoMetrics = _service("NoMetrics", {"metrics": {"enabled": False}}, False)
NoAccessLog = _service("NoAccessLog", {"logging": {"access": {"enabled": False}}}, False)
NoTracing = _service("NoTracing", {"tracing": {"excluded_urls": HOT}}, False)
Lean = _service("Lean", LEAN, False)
LeanAsync = _service("LeanAsync", LEAN, True)


# --- the hot path answered without BentoML's route: shared by the mounted app and the middleware ---------------


def _bad(err: pydantic.ValidationError) -> bytes:
    "BentoML's own 400 body for a pydantic error (see _bentoml_impl/server/app.py api_endpoint_wrapper)."
    detail = err.errors(include_context=False, include_input=False)
    return orjson.dumps({"error": f"{err.error_count()} validation error for {err.title}", "detail": detail})


class Monitor:
    "Monitoring stand-in: rows appended in the request, written to Parquet by a thread every `every` s."

    def __init__(self, folder: str, names: list[str], every: float = 2.0) -> None:
        self.folder, self.names, self.every = Path(folder), names, every
        self.folder.mkdir(parents=True, exist_ok=True)
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True).start()

    def log(self, matrix, labels) -> None:
        self.q.put((matrix, labels))

    def _run(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = 0
        while True:
            time.sleep(self.every)
            items = []
            while not self.q.empty():
                items.append(self.q.get())
            if not items:
                continue
            X = np.concatenate([m for m, _ in items])
            y = np.concatenate([np.asarray(lb) for _, lb in items])
            cols = {name: X[:, i] for i, name in enumerate(self.names)}
            pq.write_table(
                pa.table({**cols, "label": y}), self.folder / f"part-{os.getpid()}-{n:06d}.parquet"
            )
            n += 1


class Hot:
    "The hot path: bytes in, bytes out. Loads the model the first time it is called (in the worker)."

    def __init__(self, monitor: bool = False) -> None:
        self.classifier = None
        self.monitor = monitor

    def setup(self) -> None:
        # the bentoml.Model itself: the class-scope BentoModel only resolves inside a service instance
        self.classifier = _load(_stored)
        self.tag = str(_stored.tag)
        # BENCH_GC_FREEZE: startup objects (modules, model, schemas) out of every full collection
        if os.environ.get("BENCH_GC_FREEZE"):
            import gc

            gc.collect()
            gc.freeze()
        if self.monitor:
            folder = os.environ.get("MLKIT_MONITOR_DIR", "/tmp/mlkit-bench-monitor")
            self.mon = Monitor(folder, self.classifier.names)

    def predict(self, body: bytes) -> tuple[int, bytes]:
        if self.classifier is None:
            self.setup()
        try:
            records = Body.model_validate_json(body or b"{}").records
        except pydantic.ValidationError as err:
            return 400, _bad(err)
        X = self.classifier.matrix(records)
        labels, probabilities = self.classifier.predict_proba(X)
        if self.monitor:
            self.mon.log(X, labels)
        out = {
            "labels": labels.tolist(),
            "probabilities": probabilities.astype(np.float64).round(6).tolist(),
            "classes": self.classifier.classes,
            "model": self.tag,
        }
        return 200, orjson.dumps(out)


_hot = Hot()


async def _fast_predict(request: Request) -> Response:
    status, out = _hot.predict(await request.body())
    return Response(out, status, media_type="application/json")


async def _fast_const(request: Request) -> Response:
    await request.body()
    return Response(orjson.dumps(CONST), media_type="application/json")


fast_app = Starlette(
    routes=[
        Route("/predict", _fast_predict, methods=["POST"]),
        Route("/const", _fast_const, methods=["POST"]),
    ]
)


@bentoml.asgi_app(fast_app, path="/fast")
@bentoml.service(
    name="bench_mounted",
    http={"host": _settings.host, "port": _settings.port},
    traffic={"timeout": 30},
    **LEAN,
)
class Mounted:
    model = _model

    def __init__(self) -> None:
        self.classifier = _load(self.model)

    @bentoml.api
    def predict(self, records: Records) -> dict[str, Any]:
        return {**self.classifier.predict_records(records), "model": str(self.model.tag)}


async def _read_body(receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


_JSON = [(b"content-type", b"application/json")]


class FastPath:
    """ASGI middleware (Service.add_asgi_middleware) that answers POST /predict and /const itself; every other
    request (health probes, /metrics, docs, errors of method) goes on to BentoML's app."""

    def __init__(self, app, monitor: bool = False) -> None:
        self.app = app
        self.hot = Hot(monitor)
        self.const = orjson.dumps(CONST)

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or scope["method"] != "POST" or path not in ("/predict", "/const"):
            return await self.app(scope, receive, send)
        body = await _read_body(receive)
        try:
            status, out = (200, self.const) if path == "/const" else self.hot.predict(body)
        except (
            Exception
        ):  # answer here: an exception raised into BentoML's TimeoutMiddleware hangs the request
            logger.exception("predict failed")
            status, out = 500, b'{"error":"An unexpected error has occurred, please check the server log."}'
        headers = [*_JSON, (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})


def cancel_timeout_timers() -> None:
    """Patch BentoML 1.4.40's TimeoutMiddleware to cancel its timer once the request is done. As shipped it calls
    `loop.call_later(timeout, ...)` per request and never cancels it, so every request's timer handle, future and
    contextvars snapshot (with the request's span when tracing is on) live `traffic.timeout` seconds."""
    from bentoml._internal.server.http import traffic

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except TimeoutError:
            if fut.cancel():
                resp = JSONResponse(
                    {"error": f"Not able to process the request in {self.timeout} seconds"}, 504
                )
                await resp(scope, receive, send)
        else:
            await fut
        finally:
            timer.cancel()

    traffic.TimeoutMiddleware.__call__ = __call__


if os.environ.get(
    "BENCH_GC_LOG"
):  # one line per full (generation 2) collection in the worker: ms, objects freed
    import gc

    _gc_start = [0.0]

    def _gc_cb(phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            _gc_start[0] = time.perf_counter()
        else:
            with open(os.environ["BENCH_GC_LOG"], "a") as f:
                f.write(f"{(time.perf_counter() - _gc_start[0]) * 1e3:.1f} {info['collected']}\n")

    gc.callbacks.append(_gc_cb)

if os.environ.get("BENCH_PATCH_TIMEOUT"):
    cancel_timeout_timers()

Middleware = _service("Middleware", LEAN, False)
Middleware.add_asgi_middleware(FastPath)
MiddlewareMon = _service("MiddlewareMon", LEAN, False)
MiddlewareMon.add_asgi_middleware(FastPath, monitor=True)
