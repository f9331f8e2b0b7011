"""W&B as its users know it, read back with W&B's own reader (`wandb leet inspect` on the offline .wandb files):
the live run in the kernel agrees with the run record, data and model artifacts make the lineage, tables, sync."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NOTEBOOK

from mlkit.core import ConfigError, RunFailed
from mlkit.runs.runner import run_notebook
from mlkit.runs.tracking import read_history
from mlkit.runs.wandb_log import segments, sync_runs

WANDB = str(Path(sys.executable).parent / "wandb")


def records(segment: Path) -> list[dict]:
    "Every record of one offline W&B run folder, as W&B's own reader gives them."
    out = subprocess.run(
        [WANDB, "leet", "inspect", "--json", str(segment)], capture_output=True, text=True, check=True
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def summary(segment: Path) -> dict:
    out = subprocess.run(
        [WANDB, "leet", "inspect", "--summary", "--json", str(segment)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def of_type(recs: list[dict], kind: str) -> list[dict]:
    return [r[kind] for r in recs if r["type"] == kind]


def test_the_live_run_agrees_with_the_run_record(runs, settings):
    rec = runs["logreg"]
    # the kernel's run, the runner's closing segment, then any an export or a promotion reopened (other tests')
    live, *rest = segments(settings, rec.id)
    closing_path = Path(rec.wandb_path)
    assert closing_path == rest[0]
    recs = records(live)
    header = of_type(recs, "run")[0]
    assert (
        header["run_id"] == rec.id
        and header["job_type"] == "notebook"
        and header["run_group"] == "train_tabular"
    )
    assert {k: v for k, v in header["config"]["update"].items() if k != "_wandb"} == rec.parameters
    seen = summary(live)
    assert (seen["state"], seen["exit_code"], seen["summary"]["status"]) == ("finished", 0, "finished")
    for name, value in rec.metrics.items():  # logged as they happened, in the kernel
        assert seen["summary"][name] == pytest.approx(value)
    history = [h["item"] for h in of_type(recs, "history") if "cv_roc_auc" in h["item"]]
    assert [(h["step"], h["cv_roc_auc"]) for h in history] == [
        (r["step"], r["cv_roc_auc"]) for r in read_history(rec.run_dir)
    ]
    assert of_type(recs, "stats"), "W&B's system metrics are sampled while the kernel runs"
    closing = summary(closing_path)
    assert (closing["exit_code"], closing["summary"]["status"]) == (0, rec.status)
    files = {f["path"] for r in of_type(recs + records(closing_path), "files") for f in r["files"]}
    assert {"train_tabular.ipynb", "history.jsonl"} <= files


def test_the_data_read_is_an_artifact_whose_digest_is_the_fingerprint(runs, settings):
    digests = []
    for rec in runs.values():
        arts = [
            a
            for s in segments(settings, rec.id)
            for a in of_type(records(s), "artifact")
            if a["type"] == "dataset"
        ]
        assert len(arts) == 1 and arts[0]["use_after_commit"], "the run used it: an input in W&B's lineage"
        entries = {e["path"]: e for e in arts[0]["manifest"]["contents"]}
        assert entries["data"]["digest"] == rec.data["breast_cancer"]["fingerprint"]
        assert entries["data"]["ref"] == "mlkit://builtin/breast_cancer"
        assert json.loads(arts[0]["metadata"])["contract"]["passed"] is True
        digests.append(arts[0]["digest"])
    assert len(set(digests)) == 1, "the same data under the same contract is the same artifact version"


def test_the_holdout_predictions_are_a_table(runs, settings):
    rec = runs["gbm"]
    live = segments(settings, rec.id)[0]
    table = next(live.glob("files/media/table/holdout_predictions_*.table.json"))
    data = json.loads(table.read_text())
    assert {"label", "prediction", "probability"} <= set(data["columns"])
    assert len(data["data"]) == 143  # the whole holdout: under the wandb_table_rows limit


def test_a_failing_run_is_failed_in_wandb_at_once(settings, store):
    with pytest.raises(RunFailed):
        run_notebook(NOTEBOOK, {"model": "svm", "cv_folds": 2}, settings=settings, store=store)
    rec = next(
        r
        for r in store.list(status="failed")
        if r.parameters == {**r.parameters, "model": "svm", "cv_folds": 2}
    )
    live, closing = segments(settings, rec.id)
    for seen in (
        summary(live),
        summary(closing),
    ):  # the kernel closed it at the failing cell, the runner agrees
        assert (seen["exit_code"], seen["summary"]["status"]) == (1, "failed") and "failed" in seen["tags"]


def test_export_logs_the_model_from_its_run_and_promote_moves_the_alias(exported, settings, store):
    from mlkit.registry.promotion import promote
    from mlkit.registry.store import get_model

    meta = get_model(exported.tag, settings).info.metadata
    models = lambda: [  # noqa: E731
        a
        for s in segments(settings, meta["run_id"])
        for a in of_type(records(s), "artifact")
        if a["type"] == "model"
    ]
    version = exported.tag.split(":")[1]  # other exports of the same run (other tests') are other versions
    logged, *mirrors = [a for a in models() if version in a["aliases"]]  # the export's, then any promotion's
    assert all(m["digest"] == logged["digest"] for m in mirrors), "a promotion logs the same version again"
    assert {e["path"] for e in logged["manifest"]["contents"]} >= {"model.onnx", "card.md", "reference.json"}
    assert json.loads(logged["metadata"])["run_id"] == meta["run_id"] and logged["run_id"] == meta["run_id"]
    assert exported.tag.split(":")[1] in logged["aliases"]
    promote(exported.tag, "wandb-mirror", settings=settings, force=True, reason="test")
    again = models()[-1]
    assert again["digest"] == logged["digest"] and "wandb-mirror" in again["aliases"], (
        "same version, alias moved"
    )


def test_sync_says_what_it_would_push_and_refuses_without_a_key(runs, settings, monkeypatch, tmp_path):
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no key anywhere: none in the environment either
    rec = runs["logreg"]
    plan = sync_runs(settings, rec.id, dry_run=True)
    assert plan.pushed == segments(settings, rec.id) and plan.lines()[0].startswith("would push offline-run-")
    with pytest.raises(ConfigError, match="No W&B API key"):
        sync_runs(settings, rec.id)
    marker = next(plan.pushed[0].glob("*.wandb")).with_suffix(".wandb.synced")
    marker.touch()  # as W&B marks a segment it pushed
    try:
        again = sync_runs(settings, rec.id, dry_run=True)
        assert again.skipped == {plan.pushed[0]: "already synced"} and plan.pushed[0] not in again.pushed
    finally:
        marker.unlink()


def test_a_sweeps_trials_are_a_table(settings, tmp_path):
    import optuna

    from mlkit.runs.sweep import SweepResult, log_sweep_table

    storage = str(tmp_path / "j.journal")
    from mlkit.runs.trials import open_storage

    study = optuna.create_study(study_name="wb-table", storage=open_storage(storage), direction="maximize")
    for x in (1.0, 2.0, 3.0):
        study.enqueue_trial({"x": x})
        study.optimize(lambda t: t.suggest_float("x", 0, 4), n_trials=1)
    result = SweepResult("wb-table", storage, {"complete": 3, "pruned": 0, "fail": 0}, 3.0, {"x": 3.0}, None)
    folder = Path(log_sweep_table(result, settings))
    header = of_type(records(folder), "run")[0]
    assert (header["run_group"], header["job_type"]) == ("wb-table", "sweep")
    data = json.loads(next(folder.glob("files/media/table/trials_*.table.json")).read_text())
    assert [row[data["columns"].index("param/x")] for row in data["data"]] == [1.0, 2.0, 3.0]


def test_cli_sync_needs_a_choice_and_lists_a_dry_run(runs):
    from typer.testing import CliRunner

    from mlkit.cli import app

    done = CliRunner().invoke(app, ["sync", "--run", runs["gbm"].id, "--dry-run"])
    assert done.exit_code == 0 and done.stdout.startswith("would push offline-run-")
    refused = CliRunner().invoke(app, ["sync"])
    assert isinstance(refused.exception, ConfigError) and "mlkit sync --all" in str(refused.exception)
