"""Training speed of mlkit's PyTorch MLP (mlkit.models.nn.TorchMLPClassifier) on CPU and, where present, CUDA.

    python reports/benchmarks/gpu_mlp.py [rows] [out.md]

Synthetic, deterministic data (30 features, a linear signal plus noise), so it runs anywhere torch, numpy and
scikit-learn are installed (it imports only mlkit.models.nn). Prints a markdown table.
"""

import sys
import time

import numpy as np
import torch

sys.path.insert(0, ".")
from mlkit.models.nn import TorchMLPClassifier  # noqa: E402


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 30)).astype(np.float32)
    y = (X @ rng.normal(size=30) + rng.normal(size=rows) > 0).astype(int)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    lines = ["| device | rows x epochs | seconds | rows/s | train accuracy |", "|---|---|---|---|---|"]
    for device in devices:
        TorchMLPClassifier(hidden=256, layers=2, epochs=1, batch_size=1024, device=device).fit(
            X[:5000], y[:5000]
        )
        clf = TorchMLPClassifier(hidden=256, layers=2, epochs=3, batch_size=1024, device=device)
        t0 = time.perf_counter()
        clf.fit(X, y)
        if device == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        name = (
            torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        )
        lines.append(
            f"| {name} | {rows} x 3 | {secs:.2f} | {rows * 3 / secs:,.0f} | {clf.score(X[:20000], y[:20000]):.3f} |"
        )
    text = "\n".join(lines)
    print(text)
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
