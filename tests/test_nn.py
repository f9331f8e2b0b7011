"""The PyTorch family: scikit-learn's estimator checks, and a real run of train_torch.ipynb exported with
torch.onnx and parity-checked on CPU."""

from pathlib import Path

import pytest
from conftest import ROOT
from sklearn.utils.estimator_checks import parametrize_with_checks

from mlkit.models.nn import TorchMLPClassifier, TorchMLPRegressor


@parametrize_with_checks(
    [TorchMLPClassifier(epochs=20, hidden=16, lr=0.05), TorchMLPRegressor(epochs=20, hidden=16, lr=0.05)]
)
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


def test_torch_run_exports_with_parity_and_quantized_variants(settings, store, runs):
    from mlkit.registry.export import export_run
    from mlkit.registry.store import get_model
    from mlkit.runs.runner import run_notebook

    run = run_notebook(
        ROOT / "nbs/experiments/train_torch.ipynb", {"epochs": 15}, settings=settings, store=store
    )
    assert run.status == "finished" and run.metrics["roc_auc"] > 0.95
    # the same contract as the scikit-learn notebook: its split and CV parameters, every metric it records
    tabular = runs["logreg"]
    shared = ("dataset", "test_size", "time_column", "cv_folds", "random_state")
    assert {k: run.parameters[k] for k in shared} == {k: tabular.parameters[k] for k in shared}
    assert set(tabular.metrics) <= set(run.metrics) and run.primary_metric == tabular.primary_metric
    assert run.metrics["cv_accuracy_mean"] > run.metrics["baseline_cv_accuracy_mean"]
    result = export_run(run.id, quantize=["int8"], settings=settings, store=store)
    assert result.parity.max_abs_diff < 1e-5 and result.parity.label_agreement == 1.0
    meta = get_model(result.tag, settings).info.metadata
    assert meta["flavor"] == "torch" and meta["run_id"] == run.id
    assert set(meta["latency_ms"]["onnx"]) == {"1", "32", "1024"}
    q = meta["quantization"]["int8"]
    assert q["kept"] == (Path(get_model(result.tag, settings).path_of("model.int8.onnx")).is_file())
    assert abs(q["metric"] - run.metrics["roc_auc"]) <= settings.quantize_budget or not q["kept"]


def test_bad_hyperparameters_fail_in_fit_with_the_name():
    import numpy as np

    with pytest.raises(
        ValueError, match="The 'epochs' parameter of TorchMLPClassifier must be a positive int"
    ):
        TorchMLPClassifier(epochs=0).fit(np.zeros((4, 2)), [0, 1, 0, 1])


def test_regressor_bad_hyperparameters_fail_in_fit_with_the_name():
    import numpy as np

    with pytest.raises(
        ValueError, match="The 'hidden' parameter of TorchMLPRegressor must be a positive int"
    ):
        TorchMLPRegressor(hidden=0).fit(np.zeros((4, 2)), [0.0, 1.0, 0.5, 2.0])
