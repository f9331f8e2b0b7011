"""`mlkit demo`, the main job, end to end in a fresh state folder, as `make demo` runs it; then the lineage of
the model it exported, read back in a fresh process."""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, isolated_env

from mlkit.runs.store import RunStore


def demo_env(tmp_path, **extra) -> dict:
    env = {**os.environ, **isolated_env(tmp_path, COLUMNS="200", **extra)}
    env.pop("WANDB_API_KEY", None)
    env.pop("BENTOML_HOME", None)
    return env


def demo(env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlkit.cli", "demo"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    "One `mlkit demo` in a state folder of its own: (state folder, environment, completed process)."
    state = tmp_path_factory.mktemp("demo")
    env = demo_env(state)
    return state, env, demo(env)


def test_demo_runs_end_to_end(demo_run):
    tmp_path, _, done = demo_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "label rows joined point-in-time to 8 features from a DuckDB feature store, contract passed" in out
    assert out.count("roc_auc=") >= 3
    assert "label agreement 100.0%" in out
    card = Path(out.split("model card: ", 1)[1].split(" (and .html)")[0].replace("\n", ""))
    assert card.is_file() and card.read_text().startswith("# Model card: churn-train_tabular:")
    for i in (1, 2, 3):
        assert f"request {i}: true label" in out
    assert (
        "a record with age=150 gets 422" in out
        and '"loc": ["records", 0, "age"]' in out
        and "in_range(18, 100)" in out  # the contract's rule, as validation words it
    )
    assert "Demo runs: train_tabular" in out
    assert "'production' (new) -> churn-train_tabular:" in out and "behind alias 'production'" in out
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert len(runs) == 3 and all((tmp_path / "runs" / r / "train_tabular.ipynb").is_file() for r in runs)
    assert (tmp_path / "bentoml" / "models" / "churn-train_tabular").is_dir()


def test_lineage_is_complete_for_the_model_the_demo_made(demo_run):
    "The lineage of the demo's model, read in a fresh process, matches its run record, git and packages."
    tmp_path, env, done = demo_run
    assert done.returncode == 0
    show = "import json; from mlkit.registry.lineage import lineage; from mlkit.registry.store import list_models; "
    show += "print(json.dumps(lineage(str(list_models()[0].tag)).to_json()))"
    out = subprocess.run(
        [sys.executable, "-c", show], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    chain = json.loads(out.stdout.splitlines()[-1])
    assert (chain["complete"], chain["missing"]) == (True, [])
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    run = store.get(chain["run"]["id"])
    store.engine.dispose()
    assert run.status == chain["run"]["status"] == "finished"
    nb = chain["notebook"]
    assert (nb["path"], nb["hash"], nb["executed"]) == (run.notebook, run.notebook_hash, run.output_path)
    assert nb["executed_exists"] and nb["matches"] is True
    assert nb["executed_hash"] == run.output_hash and nb["executed_matches"] is True
    assert chain["parameters"] == run.parameters
    assert chain["data"]["churn"]["fingerprint"] == run.data["churn"]["fingerprint"]
    assert chain["parameters"]["time_column"] == "timestamp"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    assert chain["git"]["commit"] == head and isinstance(chain["git"]["dirty"], bool)
    assert chain["packages"]["scikit-learn"] == importlib.metadata.version("scikit-learn")


def test_demo_fails_loudly_when_a_step_fails(tmp_path):
    done = demo(demo_env(tmp_path, MLKIT_PARITY_ATOL="0"))
    assert done.returncode == 1
    assert "error: ONNX differs from the reference" in done.stderr and "The export is refused." in done.stderr
    assert not (tmp_path / "bentoml" / "models" / "churn-train_tabular").exists()
