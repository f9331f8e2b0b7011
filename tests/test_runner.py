"""Real papermill runs of the experiment notebook, their run records and their W&B offline runs."""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import NOTEBOOK, ROOT

from mlkit.core import RunFailed
from mlkit.data.datasets import load_dataset
from mlkit.data.fingerprints import fingerprint
from mlkit.runs.runner import file_hash, notebook_hash, run_notebook


def wandb_summary(run_path: str) -> dict:
    "Read an offline W&B run back with W&B's own tool."
    wandb = Path(sys.executable).parent / "wandb"
    out = subprocess.run(
        [str(wandb), "leet", "inspect", "--summary", "--json", run_path],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_a_run_is_recorded_with_its_lineage(runs, store):
    rec = store.get(runs["logreg"].id)
    assert rec.status == "finished" and rec.error is None
    assert rec.notebook == "nbs/experiments/train_tabular.ipynb"
    assert rec.notebook_hash == notebook_hash(NOTEBOOK)
    assert rec.parameters["model"] == "logreg" and rec.parameters["C"] == 0.5
    assert rec.parameters["cv_folds"] == 3  # defaults are recorded too
    assert rec.primary_metric == "roc_auc" and rec.direction == "maximize"
    assert 0.9 < rec.metrics["roc_auc"] <= 1.0
    assert rec.metrics["accuracy"] > rec.metrics["baseline_accuracy"]
    assert rec.data["breast_cancer"]["fingerprint"] == fingerprint(load_dataset("breast_cancer").frame)
    # another run on the same data (another model, other parameters) records the same fingerprint
    assert (
        store.get(runs["gbm"].id).data["breast_cancer"]["fingerprint"]
        == rec.data["breast_cancer"]["fingerprint"]
    )
    assert rec.created_at <= rec.finished_at
    assert rec.output_hash == file_hash(rec.output_path)  # the executed notebook as the run left it
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    assert rec.git["commit"] == head and isinstance(rec.git["dirty"], bool)  # the code that trained it
    assert rec.packages["scikit-learn"] == importlib.metadata.version("scikit-learn")
    contract = rec.data["breast_cancer"]["contract"]  # recorded with the run: the contract and that it passed
    assert (contract["name"], contract["passed"]) == ("breast_cancer", True)
    assert contract["rules"]["classes"] == [0, 1] and contract["rules"]["min_rows"] == 500


def test_the_executed_notebook_is_kept_with_its_parameters(runs, settings):
    rec = runs["gbm"]
    out = Path(rec.output_path)
    assert out.parent == settings.runs_dir / rec.id
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'model = "gbm"' in injected[0].source
    assert any(o.get("output_type") == "execute_result" for c in nb.cells for o in c.get("outputs", []))


def test_wandb_offline_run_holds_config_summary_and_notebook(runs):
    rec = runs["logreg"]
    assert Path(rec.wandb_path).name.startswith("offline-run-")
    summary = wandb_summary(rec.wandb_path)
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    assert summary["run_id"] == rec.id
    assert summary["config"]["model"] == "logreg" and summary["config"]["C"] == 0.5
    for name, value in rec.metrics.items():
        assert summary["summary"][name] == pytest.approx(value)
    assert summary["summary"]["data/breast_cancer"] == rec.data["breast_cancer"]["fingerprint"]
    assert (Path(rec.wandb_path) / "files" / "train_tabular.ipynb").is_file()


def test_a_failing_notebook_keeps_its_evidence_and_is_marked_failed(settings, store):
    with pytest.raises(RunFailed) as err:
        run_notebook(NOTEBOOK, {"model": "svm"}, settings=settings, store=store)
    assert "Unknown classification model family 'svm'" in str(err.value)
    rec = next(r for r in store.list(status="failed") if r.parameters["model"] == "svm")
    assert "ConfigError: Unknown classification model family 'svm'" in rec.error
    executed = nbformat.read(rec.output_path, as_version=4)
    failing = [c for c in executed.cells if "papermill-error-cell-tag" in c.metadata.get("tags", [])]
    assert failing, "papermill marks the failing cell"
    summary = wandb_summary(rec.wandb_path)
    assert summary["exit_code"] == 1 and summary["summary"]["status"] == "failed"


def test_the_kernel_gets_its_environment_and_the_caller_keeps_its_own(settings, store, tmp_path):
    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "mlkit", "language": "python", "display_name": "mlkit"}}
    )
    params = nbformat.v4.new_code_cell('extra: str = "x"')
    params.metadata["tags"] = ["parameters"]
    probe = "import os\nassert os.environ['MLKIT_RUN_DIR'].endswith(os.environ['MLKIT_RUN_ID'])\n"
    probe += "assert os.environ['MLKIT_PROBE'] == 'seen', os.environ.get('MLKIT_PROBE')\n"
    # the kernel talks over Unix sockets (no TCP port to lose to another process): where they are, for below
    probe += "from ipykernel.connect import get_connection_info\n"
    probe += "info = get_connection_info(unpack=True)\nassert info['transport'] == 'ipc', info\n"
    probe += "open(os.path.join(os.environ['MLKIT_RUN_DIR'], 'sockets.txt'), 'w').write(info['ip'])"
    nb.cells = [params, nbformat.v4.new_code_cell(probe)]
    nbformat.write(nb, tmp_path / "probe.ipynb")
    # W&B's own service handle is W&B's process-wide state (set on its first use, cleared at its teardown)
    ours = lambda: {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # noqa: E731
    before = ours()
    rec = run_notebook(tmp_path / "probe.ipynb", settings=settings, store=store, env={"MLKIT_PROBE": "seen"})
    assert rec.status == "finished", rec.error
    # papermill's kernel got its variables; this process's stay as they were
    assert ours() == before
    # its sockets lived in a private folder, gone with the run
    sockets = Path((Path(rec.run_dir) / "sockets.txt").read_text())
    assert sockets.parent.name.startswith("mlkit-k-") and not sockets.parent.exists()


def mlkit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlkit.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_cli_run_prints_the_run_id_and_runs_lists_it(state_dir, store, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("model: logreg\nC: 2.0\n")
    done = mlkit("run", str(NOTEBOOK), "-f", str(params), "-p", "cv_folds=2")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    rec = store.get(run_id)
    assert (rec.status, rec.parameters["C"], rec.parameters["cv_folds"]) == ("finished", 2.0, 2)
    listed = json.loads(mlkit("runs", "--json").stdout)
    assert run_id in [r["id"] for r in listed]


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "lr=0.1",
            "Unknown parameter 'lr'. The notebook declares:\n  model (str) = 'logreg'  # model family",
        ),
        ("C=strong", "The 'C' parameter must be float. Got 'strong' (str) instead."),
        ("cv_folds=2.5", "The 'cv_folds' parameter must be int. Got 2.5 (float) instead."),
        ("C", "An override must look like name=value. Got 'C' instead."),
    ],
)
def test_cli_rejects_bad_overrides_before_a_kernel_starts(state_dir, store, settings, override, message):
    before = (len(store.list()), sorted(os.listdir(settings.runs_dir)))
    done = mlkit("run", str(NOTEBOOK), "-p", override)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    assert (len(store.list()), sorted(os.listdir(settings.runs_dir))) == before, "no record, no run folder"


def test_cli_failing_run_exits_nonzero(state_dir):
    done = mlkit("run", str(NOTEBOOK), "-p", "model=nope")
    assert done.returncode == 1
    assert (
        "Unknown classification model family 'nope'" in done.stderr
        and "marked at the failing cell" in done.stderr
    )
