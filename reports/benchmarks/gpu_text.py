"""Fine-tuning speed of mlkit's transformer text classifier (mlkit.models.text.TextClassifier) on CPU and, where present,
CUDA, on generated reviews.

    python reports/benchmarks/gpu_text.py [rows] [out.md]

Imports only mlkit.models.text (torch, transformers, tokenizers, scikit-learn, pandas). Prints a markdown table.
"""

import sys
import time

import torch

sys.path.insert(0, ".")
from mlkit.models.text import TextClassifier, reviews  # noqa: E402


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    train, test = reviews(rows, seed=1), reviews(2000, seed=2)
    config = dict(
        hidden=128, layers=4, heads=4, max_length=32, vocab_size=1000, epochs=2, batch_size=64, lr=1e-3
    )
    lines = ["| device | texts x epochs | seconds | texts/s | holdout accuracy |", "|---|---|---|---|---|"]
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        TextClassifier(**{**config, "epochs": 1}, device=device).fit(
            train[["text"]][:256], train["target"][:256]
        )
        clf = TextClassifier(**config, device=device)
        t0 = time.perf_counter()
        clf.fit(train[["text"]], train["target"])
        if device == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        name = (
            torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        )
        acc = clf.score(test[["text"]], test["target"])
        lines.append(
            f"| {name} | {rows} x {config['epochs']} | {secs:.1f} | {rows * config['epochs'] / secs:,.0f} | "
            f"{acc:.3f} |"
        )
    text = f"Model: TextClassifier({config})\n\n" + "\n".join(lines)
    print(text)
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
