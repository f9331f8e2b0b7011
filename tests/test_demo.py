"""`mlkit demo`, the main job, end to end in a fresh state folder, as `make demo` runs it."""

import os
import subprocess
import sys

from conftest import ROOT


def demo(tmp_path, **extra) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MLKIT_ROOT": str(ROOT),
        "MLKIT_RUN_DB": f"sqlite:///{tmp_path}/runs.db",
        "MLKIT_RUNS_DIR": str(tmp_path / "runs"),
        "MLKIT_MODEL_STORE": str(tmp_path / "bentoml"),
        "MLKIT_WANDB_DIR": str(tmp_path),
        "MLKIT_WANDB_MODE": "offline",
        "WANDB_MODE": "offline",
        "MLKIT_MODEL": "",
        "COLUMNS": "200",
        **extra,
    }
    env.pop("WANDB_API_KEY", None)
    env.pop("BENTOML_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "mlkit.cli", "demo"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )


def test_demo_runs_end_to_end(tmp_path):
    done = demo(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "breast_cancer: 569 rows, 30 features, contract passed" in out
    assert out.count("roc_auc=") >= 3
    assert "label agreement 100.0%" in out
    for i in (1, 2, 3):
        assert f"request {i}: true label" in out
    assert (
        "a record with mean_radius='large' gets 400" in out and '"loc": ["records", 0, "mean_radius"]' in out
    )
    assert "Demo runs: train_tabular" in out
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert len(runs) == 3 and all((tmp_path / "runs" / r / "train_tabular.ipynb").is_file() for r in runs)
    assert (tmp_path / "bentoml" / "models" / "train_tabular").is_dir()


def test_demo_fails_loudly_when_a_step_fails(tmp_path):
    done = demo(tmp_path, MLKIT_PARITY_ATOL="0")
    assert done.returncode == 1
    assert "error: ONNX differs from the reference" in done.stderr and "The export is refused." in done.stderr
    assert not (tmp_path / "bentoml" / "models" / "train_tabular").exists()
