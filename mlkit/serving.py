"""The BentoML service that serves an mlkit model: thin glue over `mlkit.inference` and `mlkit.registry`.

    bentoml serve mlkit.serving:ModelService            # binds 127.0.0.1:<port from settings.ini>

Serves the tag in `MLKIT_MODEL` (or settings.ini [serving] model), else the newest model mlkit exported.
Only ONNX is loaded, by onnxruntime (plus a text model's tokenizer.json); nothing is unpickled. Hand-written (not generated): starting a server
makes a poor executed doc; the logic it calls is tested in nbs/07_inference.ipynb.
"""

from typing import Annotated, Any

import bentoml
from pydantic import Field

from mlkit.core import get_settings
from mlkit.inference import make_classifier, record_model
from mlkit.registry import get_model, resolve_tag

_settings = get_settings()
_stored = get_model(resolve_tag(settings=_settings), _settings)  # a clear error when the tag is not stored
_model = bentoml.models.BentoModel(str(_stored.tag))  # the exact version, declared at class scope
_metadata = _stored.info.metadata
Record = record_model(_metadata["features"])
Records = Annotated[list[Record], Field(min_length=1, max_length=_settings.max_records)]


@bentoml.service(
    name="mlkit_model",
    http={"host": _settings.host, "port": _settings.port},
    traffic={"timeout": 30},
)
class ModelService:
    "Predicts labels and class probabilities for records keyed by feature name."

    model = _model

    def __init__(self) -> None:
        self.tag = str(self.model.tag)
        files = {name: self.model.path_of(name) for name in _metadata.get("files", [])}  # e.g. tokenizer.json
        self.classifier = make_classifier(
            self.model.path_of("model.onnx"), _metadata["features"], _metadata["classes"], files
        )

    @bentoml.api
    def predict(self, records: Records) -> dict[str, Any]:
        "Labels and class probabilities, one per record, in the order sent."
        return {**self.classifier.predict_records(records), "model": self.tag}
