"""The transformer family end to end on CPU: a tiny BERT built from a config and a locally trained tokenizer,
fine-tuned by train_text.ipynb, exported to ONNX with parity and an int8 variant, and served over HTTP with the
tokenizer handled by the server."""

import pytest
from conftest import ROOT

from mlkit.demo import bentoml_server, post_json


@pytest.fixture(scope="module")
def text_export(settings, store):
    from mlkit.registry.export import export_run
    from mlkit.runs.runner import run_notebook

    run = run_notebook(ROOT / "nbs/experiments/train_text.ipynb", {}, settings=settings, store=store)
    return run, export_run(run.id, quantize=["int8"], settings=settings, store=store)


def test_text_model_exports_with_its_tokenizer_and_parity(text_export, settings):
    from pathlib import Path

    from mlkit.registry.store import get_model

    run, result = text_export
    assert run.status == "finished" and run.metrics["accuracy"] > run.metrics["baseline_accuracy"]
    assert result.parity.max_abs_diff < 1e-4 and result.parity.label_agreement >= 0.99
    model = get_model(result.tag, settings)
    assert Path(model.path_of("tokenizer.json")).is_file()
    meta = model.info.metadata
    assert meta["flavor"] == "text" and meta["files"] == ["tokenizer.json"]
    q = meta["quantization"]["int8"]
    assert q["kept"] == Path(model.path_of("model.int8.onnx")).is_file()
    assert "reason" in q and ("drop" in q["reason"] or "smaller" in q["reason"] or "failed" in q["reason"])


def test_text_model_card_runs_the_model_with_its_tokenizer(text_export, settings):
    from mlkit.registry.cards import model_card

    _, result = text_export
    card = model_card(
        result.tag, settings, n_boot=50
    ).markdown()  # it failed: no tokenizer for the ONNX model
    assert (
        "percentile bootstrap of those rows (50 resamples" in card and "Holdout rows unavailable" not in card
    )


def test_served_text_model_takes_raw_text(text_export, settings):
    _, result = text_export
    with bentoml_server(result.tag, settings) as url:
        status, body = post_json(
            url + "/predict",
            {"records": [{"text": "the kettle is excellent"}, {"text": "the kettle is not excellent"}]},
        )
        assert status == 200, body
        assert len(body["labels"]) == 2 and all(abs(sum(p) - 1) < 1e-5 for p in body["probabilities"])
        single = body
        status, batch = post_json(  # the batch endpoint: same model, one answer per record, same numbers
            url + "/predict_batch",
            {"records": [{"text": "the kettle is excellent"}, {"text": "the kettle is not excellent"}]},
        )
        assert status == 200, batch
        assert [a["label"] for a in batch] == single["labels"]
        for answer, want in zip(batch, single["probabilities"], strict=True):
            assert answer["probabilities"] == pytest.approx(want, abs=1e-6)
        status, body = post_json(url + "/predict", {"records": [{"text": 42}]})
        assert status == 422 and body["detail"][0]["loc"] == ["records", 0, "text"]
        status, body = post_json(url + "/predict", {"records": [{"review": "nice"}]})
        assert status == 422 and ["records", 0, "review"] in [d["loc"] for d in body["detail"]]
