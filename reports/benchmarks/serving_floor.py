"""BentoML's constant-endpoint floor with mlkit's own service config, for serving_bench.py.

    bentoml serve serving_floor:FloorApi --working-dir reports/benchmarks          # POST /const, a @bentoml.api
    bentoml serve serving_floor:FloorMiddleware --working-dir reports/benchmarks   # POST /const, an ASGI middleware

Both copy `mlkit.serving.service.ModelService`'s config (traffic, tracing, logging, metrics...) and its ASGI middlewares, so
the floor is measured through the same stack as mlkit's /predict; only the model, validation and monitoring are
missing. FloorApi answers from a `@bentoml.api` (the floor of a route served by BentoML); FloorMiddleware answers
from an ASGI middleware added where mlkit's own first one sat (the floor of a hot path answered by a
middleware: BentoML's stack outside the user middlewares, plus reading the body and answering).

Since 2026-12-05 mlkit's gateway is no longer a user middleware: it wraps BentoML's whole ASGI app
(mlkit/serving/service.py), so ModelService.middlewares is empty and these two floors measure BentoML's stack with
mlkit's config only. The floor mlkit's /predict is now held against is a bare uvicorn app: serving_floor_ratio.py.
"""

from typing import Any

import bentoml

from mlkit.serving.service import ModelService

CONST = {"labels": [1], "probabilities": [[0.0, 1.0]], "classes": [0, 1], "model": "const"}
BODY = b'{"labels":[1],"probabilities":[[0.0,1.0]],"classes":[0,1],"model":"const"}'
_config = {k: v for k, v in ModelService.config.items() if k != "name"}


def _copy_middlewares(service) -> None:
    for cls, options in ModelService.middlewares:
        service.add_asgi_middleware(cls, **options)


@bentoml.service(name="mlkit_floor_api", **_config)
class FloorApi:
    @bentoml.api
    def const(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return CONST


_copy_middlewares(FloorApi)


class ConstMiddleware:
    "Answers POST /const with a constant, reading the body first, as a hot-path middleware would."

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/const":
            return await self.app(scope, receive, send)
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})


@bentoml.service(name="mlkit_floor_mw", **_config)
class FloorMiddleware:
    @bentoml.api
    def noop(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return CONST


FloorMiddleware.add_asgi_middleware(ConstMiddleware)  # first: where mlkit's own gateway sits in the stack
_copy_middlewares(FloorMiddleware)
