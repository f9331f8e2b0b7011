"""Model cards of real exports: holdout metrics with bootstrap intervals, the confusion matrix, the tables, and
what a card says when parts are missing."""

import dataclasses
import re
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix

from mlkit.data.datasets import load_dataset
from mlkit.registry.cards import bootstrap_metrics, model_card, write_card
from mlkit.registry.promotion import promote
from mlkit.registry.store import get_model, save_model


def _section(md: str, heading: str) -> str:
    return md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _table(section: str) -> list[list[str]]:
    "The rows of the first Markdown table in `section`, header first, cells stripped."
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if not line.startswith("|---")]


def test_bootstrap_intervals_match_the_binomial_width_and_collapse_on_perfect_predictions():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    right = np.arange(400) % 2 == 0  # exactly half the labels right
    labels = np.where(right, y, 1 - y)
    proba = np.column_stack([1 - labels * 0.8 - 0.1, labels * 0.8 + 0.1])
    acc = bootstrap_metrics(y, labels, proba, [0, 1], n_boot=2000, seed=3)[0]
    half = 1.96 * np.sqrt(0.25 / 400)  # normal approximation of the binomial: ±0.049
    assert acc.name == "accuracy" and acc.value == 0.5 and acc.n_boot == 2000
    assert acc.low == pytest.approx(0.5 - half, abs=0.012) and acc.high == pytest.approx(
        0.5 + half, abs=0.012
    )
    perfect = bootstrap_metrics(y, y, np.column_stack([1 - y, y]).astype(float), [0, 1], n_boot=200)
    assert [(m.name, m.low, m.value, m.high) for m in perfect[:3]] == [
        ("accuracy", 1.0, 1.0, 1.0),
        ("f1", 1.0, 1.0, 1.0),
        ("roc_auc", 1.0, 1.0, 1.0),
    ]


def test_the_card_of_a_real_export(exported, runs, settings, tmp_path):
    alias = f"champion_{uuid.uuid4().hex[:6]}"
    promote(exported.tag, alias, settings=settings)
    md_path, html_path = write_card(exported.tag, settings, out_dir=tmp_path, n_boot=300)
    name, version = exported.tag.split(":")
    assert (md_path, html_path) == (tmp_path / f"{name}-{version}.md", tmp_path / f"{name}-{version}.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [md_path.name, html_path.name]
    )  # no temp files
    md = md_path.read_text()
    model = get_model(exported.tag, settings)
    meta = model.info.metadata
    run = next(r for r in runs.values() if r.id == meta["run_id"])

    # the holdout, run again through the stored ONNX file independently of mlkit
    holdout = pd.read_parquet(Path(run.run_dir) / "holdout.parquet")
    X = holdout[[f["name"] for f in meta["features"]]].to_numpy(np.float32)
    session = ort.InferenceSession(model.path_of("model.onnx"), providers=["CPUExecutionProvider"])
    labels, _ = session.run(None, {"X": X})
    y = holdout["__target__"].to_numpy()

    rows = _table(_section(md, "Metrics on the holdout"))
    assert rows[0] == ["metric", "holdout", "95% CI", "recorded by the run"]
    figures = {r[0]: r for r in rows[1:]}
    assert sorted(figures) == ["accuracy", "f1", "log_loss", "roc_auc"]
    for metric, (_, value, ci, recorded) in figures.items():
        low, high = (float(x) for x in ci.split(" – "))
        assert low <= float(value) <= high and high - low > 0, (metric, value, ci)
        if metric in run.metrics:
            assert float(value) == pytest.approx(run.metrics[metric], abs=1e-4), metric
            assert recorded == f"{run.metrics[metric]:.4f}"
        else:
            assert recorded == "—"
    assert float(figures["accuracy"][1]) == pytest.approx((labels == y).mean(), abs=1e-4)
    assert "percentile bootstrap of those rows (300 resamples, seed 0)" in md

    matrix = confusion_matrix(y, labels, labels=meta["classes"])
    cm = _table(_section(md, "Confusion matrix"))
    assert cm[0] == ["", "predicted 0", "predicted 1"]
    assert [[int(n) for n in row[1:]] for row in cm[1:]] == matrix.tolist() and matrix.sum() == len(
        holdout
    ) == 143

    parity = _table(_section(md, "Parity"))[1]
    assert parity[0] == "143" and parity[-1] == "yes"
    latency = _table(_section(md, "Latency"))
    assert latency[0] == ["variant", "batch 1 (ms)", "batch 32 (ms)", "batch 1024 (ms)"]
    assert [r[0] for r in latency[1:]] == list(meta["latency_ms"])
    assert float(latency[2][1]) == pytest.approx(meta["latency_ms"]["onnx"]["1"], rel=1e-3)
    held = [r[1] for r in _table(_section(md, "Model")) if r[0] == "aliases"][0]
    assert alias in held.split(", ")  # other tests may have given the same model other aliases
    assert (
        _section(md, "Intended use").strip() == load_dataset("breast_cancer").schema.metadata["intended_use"]
    )
    assert f"breast_cancer | 569 | 31 | `{run.data['breast_cancer']['fingerprint']}`" in md
    limits = _section(md, "Limitations")
    assert "Evaluated on 143 holdout rows only: the 95% interval of accuracy is" in limits
    assert "Requires all 30 features of its contract" in limits and "Not tested:" in limits
    lineage = _section(md, "Lineage")
    assert "(complete)" in lineage and run.id in lineage and run.notebook_hash in lineage

    page = html_path.read_text()
    assert (
        page.count("* plotly.js v") == 1 and page.count("Plotly.newPlot(") == 1
    )  # one figure, plotly inlined once
    assert (
        re.findall(r"<script[^>]*\bsrc=", page) == [] and "<link" not in page
    )  # nothing fetched: works offline
    assert "<h2>Confusion matrix</h2>" in page and "<td>predicted 0</td>" not in page


def test_declared_use_and_quantization_figures_appear_on_the_card(exported, settings):
    model = get_model(exported.tag, settings)
    quantization = {
        "int8": {"kept": True, "reason": "roc_auc 0.9950 (drop 0.0004 <= 0.01); smaller", "metric": 0.995,
                 "size_bytes": 900, "latency_ms": {"1": 0.01, "32": 0.02, "1024": 0.3}},
        "fp16": {"kept": False, "reason": "conversion failed: no"},
    }  # fmt: skip
    fields = {
        **model.info.metadata,
        "intended_use": "Ranking biopsy reports for a second read; never a diagnosis.",
        "quantization": quantization,
    }
    tag = save_model(
        model.tag.name, {"model.onnx": Path(model.path_of("model.onnx")).read_bytes()}, fields, settings
    )
    md = model_card(tag, settings, n_boot=100).markdown()
    assert (
        _section(md, "Intended use").strip() == "Ranking biopsy reports for a second read; never a diagnosis."
    )
    rows = _table(_section(md, "Quantization"))
    assert rows[0] == ["variant", "kept", "reason", "roc_auc", "size_bytes", "batch 1 (ms)", "batch 32 (ms)", "batch 1024 (ms)"]  # fmt: skip
    assert [r[:2] for r in rows[1:]] == [["fp32", "served"], ["int8", "yes"], ["fp16", "no"]]
    assert rows[2][3:] == ["0.995", "900", "0.01", "0.02", "0.3"]
    assert rows[1][4] == str(Path(model.path_of("model.onnx")).stat().st_size)


def test_a_card_without_its_holdout_still_renders_and_says_why(exported, settings, tmp_path):
    model = get_model(exported.tag, settings)
    fields = {k: v for k, v in model.info.metadata.items() if k not in ("latency_ms", "quantization")}
    fields["run_id"] = "run-that-was-deleted"
    tag = save_model(
        model.tag.name, {"model.onnx": Path(model.path_of("model.onnx")).read_bytes()}, fields, settings
    )
    other_root = dataclasses.replace(settings, root=tmp_path)
    md_path, _ = write_card(tag, other_root)  # default location: <root>/reports/models
    assert md_path == tmp_path / "reports" / "models" / f"{tag.replace(':', '-')}.md"
    md = md_path.read_text()
    why = "Holdout rows unavailable (run run-that-was-deleted is not in the run database)"
    assert why in _section(md, "Metrics on the holdout") and "95% CI" not in md
    assert _table(_section(md, "Metrics on the holdout"))[0] == ["metric", "recorded by the run"]
    assert "Not computed: holdout rows unavailable" in _section(md, "Confusion matrix")
    assert "Not measured at export" in _section(md, "Latency")
    assert "None tried: only the float32 ONNX model is stored." in _section(md, "Quantization")
    limits = _section(md, "Limitations")
    assert (
        "no confidence intervals and no confusion matrix" in limits and "Latency was not measured" in limits
    )
    assert "Lineage incomplete: run not recorded." in limits
    assert "Plotly.newPlot(" not in md_path.with_suffix(".html").read_text()
