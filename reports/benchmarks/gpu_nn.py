"GPU check of mlkit.models.nn: the torch MLPs fit on CUDA as on CPU, seeded, leaving torch's global RNG as it was."

import sys, time, numpy as np, torch

sys.path.insert(0, ".")  # run from the repository root: python reports/benchmarks/gpu_nn.py cuda
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.metrics import mean_squared_error, roc_auc_score
from mlkit.models.nn import TorchMLPClassifier, TorchMLPRegressor

dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
print("torch", torch.__version__, "cuda available", torch.cuda.is_available(), "device", dev)
Xc, yc = load_breast_cancer(return_X_y=True)
Xr, yr = load_diabetes(return_X_y=True)
for name, est, X, y in (("classifier", TorchMLPClassifier, Xc, yc), ("regressor", TorchMLPRegressor, Xr, yr)):
    out = {}
    for d in ("cpu", dev):
        before = (
            torch.random.get_rng_state().clone(),
            torch.cuda.get_rng_state().clone() if d == "cuda" else None,
        )
        t = time.perf_counter()
        m = est(epochs=40, hidden=64, layers=2, device=d, random_state=0).fit(X, y)
        took = time.perf_counter() - t
        after = (torch.random.get_rng_state(), torch.cuda.get_rng_state() if d == "cuda" else None)
        same_rng = torch.equal(before[0], after[0]) and (
            before[1] is None or torch.equal(before[1], after[1])
        )
        pred = m.predict_proba(X)[:, 1] if name == "classifier" else m.predict(X)
        again = est(epochs=40, hidden=64, layers=2, device=d, random_state=0).fit(X, y)
        pred2 = again.predict_proba(X)[:, 1] if name == "classifier" else again.predict(X)
        score = roc_auc_score(y, pred) if name == "classifier" else mean_squared_error(y, pred) ** 0.5
        out[d] = pred
        print(
            f"{name} on {d}: fit {took:.2f} s, {'auc' if name == 'classifier' else 'rmse'} {score:.4f}, "
            f"global RNG unchanged {same_rng}, refit identical max|d| {np.abs(pred - pred2).max():.2e}"
        )
    print(f"{name}: cpu vs {dev} max|d| {np.abs(out['cpu'] - out[dev]).max():.3e}")
