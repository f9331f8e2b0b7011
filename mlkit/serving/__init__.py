"""Serving: the serving core, the ASGI gateway, Prometheus metrics, the bento, and the BentoML service.

`bentoml serve mlkit.serving:ModelService` finds the service here; it is imported on first use only, because
defining it resolves and loads the served model (importing `mlkit.serving.core` in a test must not)."""


def __getattr__(name: str):
    if name == "ModelService":
        from mlkit.serving.service import ModelService

        return ModelService
    raise AttributeError(f"module 'mlkit.serving' has no attribute {name!r}")
