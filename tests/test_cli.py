"""The CLI is thin and fast: `mlkit --help` imports none of the heavy stack."""

import subprocess
import sys

from conftest import NOTEBOOK, ROOT

HEAVY = ["papermill", "sklearn", "wandb", "bentoml", "torch", "onnxruntime", "pandas", "pandera", "skl2onnx"]


def test_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from mlkit.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout and "demo" in done.stdout
    assert done.stdout.splitlines()[-1] == "HEAVY=", f"imported by --help: {done.stdout.splitlines()[-1]}"


def test_params_lists_the_notebook_parameters():
    done = subprocess.run(
        [sys.executable, "-m", "mlkit.cli", "params", str(NOTEBOOK)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert (
        lines[0]
        == "  model (str) = 'logreg'  # model family: logreg | gbm | hgb | mlp, lgbm | xgb where installed"
    )
    assert any(line.startswith("  C (float) = 1.0") for line in lines)


def test_missing_notebook_is_a_clear_error():
    done = subprocess.run(
        [sys.executable, "-m", "mlkit.cli", "run", "nbs/experiments/nope.ipynb"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 1
    assert "No notebook at nbs/experiments/nope.ipynb" in done.stderr and "Traceback" not in done.stderr
