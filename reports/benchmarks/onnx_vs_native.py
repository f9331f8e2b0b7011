"""Benchmark: ONNX (onnxruntime, one intra-op thread) against each family's native predict, same rows, same run.

    .venv/bin/python reports/benchmarks/onnx_vs_native.py > reports/benchmarks/onnx_vs_native.md

Families: scikit-learn logistic regression (scaled) and HistGradientBoosting and GradientBoosting on the
breast-cancer set, LightGBM and XGBoost, the PyTorch MLP (eager, torch's default threads), and the transformer
text classifier (BERT-mini's shape; FP32 and INT8 ONNX) on generated reviews. Latency is the median per call over >= 0.2 s per batch size (mlkit.registry.quantize.latency_ms).
"""

import os
import sys
import time
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from mlkit.data.datasets import load_dataset
from mlkit.metrics import task_metric
from mlkit.registry.convert import check_parity, sklearn_to_onnx
from mlkit.registry.quantize import QUANTIZERS, latency_ms
from mlkit.models.families import build_model
from mlkit.models.inference import make_classifier
from mlkit.models.text import TextClassifier, reviews


@contextmanager
def one_thread():
    "Native predictors on one core: OpenMP and BLAS pools (scikit-learn, LightGBM, XGBoost) and torch's own."
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def row(name, native, onnx, X, parity) -> str:
    n = latency_ms(native, X)
    o = latency_ms(onnx, X)
    cells = " | ".join(f"{n[b]:.3f} / {o[b]:.3f} ({n[b] / o[b]:.1f}x)" for b in ("1", "32", "1024"))
    return f"| {name} | {cells} | {parity} |"


def main() -> None:
    ds = load_dataset("breast_cancer")
    X, y = ds.X, ds.y
    spec = [{"name": c, "dtype": "float"} for c in ds.features]
    Xf = X.to_numpy(np.float32)
    cores = os.cpu_count()
    same_budget = [
        f"| family | native, default threads: ms | native, 1 thread: ms | ONNX, 1 thread: ms (speed-up over native "
        f"default / over native 1 thread) | ONNX, {cores} threads: ms (speed-up over native default) |",
        "|---|---|---|---|---|",
    ]
    lines = [
        "| family | batch 1: native / ONNX ms (speed-up) | batch 32 | batch 1024 | parity max abs diff, label agreement |",
        "|---|---|---|---|---|",
    ]
    for family, params in [
        ("logreg", {}),
        ("hgb", {}),
        ("gbm", {}),
        ("lgbm", {}),
        ("xgb", {}),
        ("mlp", {"epochs": 30}),
    ]:
        model = build_model(family, **params).fit(X, y)
        data = model.to_onnx(Xf) if hasattr(model, "to_onnx") else sklearn_to_onnx(model, X.to_numpy())
        onnx = make_classifier(data, spec, [0, 1], threads=1)
        p = check_parity(model, onnx, X)
        native = lambda b, m=model: m.predict_proba(pd.DataFrame(b, columns=ds.features))  # noqa: E731
        wide = make_classifier(data, spec, [0, 1], threads=cores)
        n, o1, on = (
            latency_ms(f, Xf, batches=(1024,))["1024"]
            for f in (native, onnx.predict_proba, wide.predict_proba)
        )
        with one_thread():
            n1 = latency_ms(native, Xf, batches=(1024,))["1024"]
        same_budget.append(
            f"| {family} | {n:.3f} | {n1:.3f} | {o1:.3f} ({n / o1:.1f}x / {n1 / o1:.1f}x) | {on:.3f} ({n / on:.1f}x) |"
        )
        lines.append(
            row(
                family,
                native,
                lambda b, o=onnx: o.predict_proba(b),
                Xf,
                f"{p.max_abs_diff:.1e}, {p.label_agreement:.1%}",
            )
        )

    train, test = reviews(3000, seed=1), reviews(600, seed=2)
    # BERT-mini's shape (4 layers, width 256), built from a config and trained here, not downloaded
    text = TextClassifier(hidden=256, layers=4, heads=4, max_length=32, epochs=2, lr=5e-4).fit(
        train[["text"]], train["target"]
    )
    tspec = [{"name": "text", "dtype": "str"}]
    files = text.mlkit_files()
    fp32_bytes = text.to_onnx(test[["text"]])
    fp32 = make_classifier(fp32_bytes, tspec, [0, 1], files, threads=1)
    int8 = make_classifier(QUANTIZERS["int8"](fp32_bytes), tspec, [0, 1], files, threads=1)
    T = test["text"].to_numpy(object)
    p = check_parity(text, fp32, test[["text"]])
    lines.append(
        row(
            "text (transformer), eager vs FP32 ONNX",
            lambda b: text.predict_proba(list(b)),
            lambda b: fp32.predict_proba(b),
            T,
            f"{p.max_abs_diff:.1e}, {p.label_agreement:.1%}",
        )
    )
    p8 = check_parity(text, int8, test[["text"]], atol=1.0, min_agreement=0.0)
    lines.append(
        row(
            "text, FP32 ONNX vs INT8 ONNX",
            lambda b: fp32.predict_proba(b),
            lambda b: int8.predict_proba(b),
            T,
            f"{p8.max_abs_diff:.1e}, {p8.label_agreement:.1%}",
        )
    )
    y_t = test["target"].to_numpy()
    acc = {
        k: task_metric("accuracy", y_t, *m.predict_proba(T), [0, 1])
        for k, m in (("fp32", fp32), ("int8", int8))
    }
    print("# ONNX against native predict\n")
    print(
        f"Command: `.venv/bin/python reports/benchmarks/onnx_vs_native.py` ({time.strftime('%Y-%m-%d')}, 2 cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, onnxruntime with 1 intra-op thread). "
        "Each cell: native / ONNX milliseconds per call (median), speed-up in brackets; the INT8 row compares the "
        "two ONNX variants.\n"
    )
    print("\n".join(lines))
    print(
        f"\nBatch 1024 again, each side on the same CPU budget: the native predictors once with their default threads "
        f"(scikit-learn's OpenMP loops, LightGBM, XGBoost and torch may use all {cores} cores) and once held to one "
        "thread (threadpoolctl and torch.set_num_threads), "
        f"onnxruntime once with one intra-op thread and once with {cores}. The target is stated for one onnxruntime "
        "thread against the native default; this table is for reading the first one, not a replacement for it.\n"
    )
    print("\n".join(same_budget))
    print(
        f"\nText holdout accuracy: FP32 ONNX {acc['fp32']:.3f}, INT8 ONNX {acc['int8']:.3f} "
        f"(drop {acc['fp32'] - acc['int8']:+.3f}; budget 0.01)."
    )


if __name__ == "__main__":
    sys.exit(main())
