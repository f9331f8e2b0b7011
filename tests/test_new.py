"""A project of one's own, as a new user makes it with nothing but the CLI: `mlkit new`, a CSV of their own added to
the catalog with `mlkit data add`, a run, a small sweep, export, promotion and a real `bentoml serve` whose answers are
compared with scikit-learn's own. No file of mlkit's is edited; the test writes only the user's CSV."""

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import joblib
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_wine

from mlkit.core import load_settings
from mlkit.demo import bentoml_server, post_json


def user_env() -> dict[str, str]:
    "A user's environment: no MLKIT_* variable (the project is found from the working directory), W&B offline."
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLKIT_", "BENTOML_"))}
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "BENTOML_DO_NOT_TRACK": "true"}


def mlkit(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "mlkit.cli", *args], cwd=cwd, env=user_env(), capture_output=True, text=True
    )
    return done


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    "A new project holding the user's wine CSV, cataloged."
    home = tmp_path_factory.mktemp("user")
    root = Path(ok(mlkit(home, "new", "cellar")).strip())
    assert root == home / "cellar"
    wine = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    wine.insert(0, "bottle", range(1000, 1000 + len(wine)))  # an id column the user drops
    wine.to_csv(root / "data" / "wine.csv", index=False)
    out = ok(
        mlkit(
            root / "nbs",
            "data",
            "add",
            "wine",
            "../data/wine.csv",
            "--target",
            "cultivar",
            "--drop",
            "bottle",
        )
    )
    assert "wine: classification of 'cultivar' (classes [0, 1, 2]) from data/wine.csv" in out
    return root


def test_outside_a_project_nothing_is_created_and_the_error_says_what_to_do(tmp_path):
    done = mlkit(tmp_path, "runs")
    assert done.returncode == 1
    assert "No mlkit project here" in done.stderr and "mlkit new DIR" in done.stderr
    assert list(tmp_path.iterdir()) == []
    env = {**user_env(), "MLKIT_ROOT": str(tmp_path / "typo")}
    done = subprocess.run(
        [sys.executable, "-m", "mlkit.cli", "runs"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1 and "typo is not a folder" in done.stderr
    assert not (tmp_path / "typo").exists()


def test_the_catalog_entry_is_listed_shown_and_checked(project):
    assert "wine\tclassification\ttarget=cultivar\tdata/wine.csv" in ok(mlkit(project, "data", "list"))
    shown = ok(mlkit(project, "data", "show", "wine"))
    assert shown.startswith("wine: 178 rows, 13 features, fingerprint sha256:")
    assert "bottle" not in shown and "alcohol:" in shown
    report = Path(ok(mlkit(project, "quality", "wine")).strip())
    assert report.is_file() and report.is_relative_to(project)
    # the same name twice is refused, and so is a built-in's name
    again = mlkit(project, "data", "add", "wine", "data/wine.csv", "--target", "cultivar")
    assert again.returncode == 1 and "'wine' is already in" in again.stderr
    builtin = mlkit(project, "data", "add", "penguins", "data/wine.csv", "--target", "cultivar")
    assert builtin.returncode == 1 and "'penguins' is a built-in data set" in builtin.stderr


def test_run_sweep_export_promote_and_serve_the_users_data(project):
    nb = "nbs/experiments/train_tabular.ipynb"
    run_id = ok(mlkit(project, "run", nb, "-p", "dataset=wine", "-p", "model=logreg")).strip()
    # the same command again is the cached run; after the contract is reviewed (a rule widened), it runs again
    again = mlkit(project, "run", nb, "-p", "dataset=wine", "-p", "model=logreg")
    assert ok(again).strip() == run_id and "cached: run" in again.stderr
    contract = project / "contracts" / "wine.yaml"
    spec = yaml.safe_load(contract.read_text())
    spec["features"]["alcohol"]["max"] = 20.0
    contract.write_text(yaml.safe_dump(spec, sort_keys=False))
    reviewed = mlkit(project, "run", nb, "-p", "dataset=wine", "-p", "model=logreg")
    assert ok(reviewed).strip() != run_id and "cached" not in reviewed.stderr
    ok(
        mlkit(
            project,
            "sweep",
            nb,
            "-p",
            "dataset=wine",
            "--space",
            "nbs/experiments/train_tabular.space.yaml",
            "--trials",
            "3",
            "--workers",
            "1",
            "--seed",
            "0",
        )  # fmt: skip
    )
    runs = json.loads(ok(mlkit(project, "runs", "--json")))
    # a sweep trial may be pruned by Optuna's median pruner; the single run and at least one trial finish
    assert len(runs) == 5 and {r["status"] for r in runs} <= {"finished", "pruned"}
    finished = [r for r in runs if r["status"] == "finished"]
    assert len(finished) >= 3 and run_id in {r["id"] for r in finished}
    assert all(r["parameters"]["dataset"] == "wine" for r in runs)
    best = finished[0]  # best first
    tag = ok(mlkit(project, "export", best["id"])).strip()
    assert tag.startswith("wine-train_tabular:")  # named after the data set and the experiment
    assert (
        project / ".mlkit" / "bentoml" / "models" / "wine-train_tabular"
    ).is_dir()  # the project's own store
    ok(mlkit(project, "promote", tag, "--alias", "production"))
    lineage = ok(mlkit(project, "lineage", "production"))
    assert "from data/wine.csv" in lineage and "datasets.yaml" in lineage

    pipeline = joblib.load(project / "reports" / "runs" / best["id"] / "model.joblib")
    rows = pd.read_csv(project / "data" / "wine.csv").drop(columns=["bottle", "cultivar"]).iloc[::20]
    settings = load_settings(project, environ={})
    # the server's environment is the user's alone (other tests in this process set MLKIT_* for their own state)
    with mock.patch.dict(os.environ, user_env(), clear=True), bentoml_server("production", settings) as url:
        status, body = post_json(url + "/predict", {"records": rows.to_dict("records")})
        refused, detail = post_json(
            url + "/predict", {"records": [{**rows.iloc[0].to_dict(), "alcohol": -5.0}]}
        )
    assert status == 200, body
    assert body["model"] == tag and body["classes"] == [0, 1, 2]
    assert body["labels"] == pipeline.predict(rows).tolist()
    gap = np.abs(np.array(body["probabilities"]) - pipeline.predict_proba(rows)).max()
    assert gap <= settings.parity_atol, gap
    # the drafted contract is enforced at the endpoint: a negative alcohol is refused, naming the column
    assert refused == 422 and detail["detail"][0]["loc"] == ["records", 0, "alcohol"]


def test_a_regression_of_ones_own_runs_sweeps_exports_and_serves(project):
    "palmerpenguins' body mass, a target mlkit never regressed on: cataloged, swept (RMSE minimised), served."
    from palmerpenguins import load_penguins

    penguins = load_penguins().dropna(subset=["body_mass_g"])
    penguins.to_csv(project / "data" / "penguins.csv", index=False)
    out = ok(mlkit(project, "data", "add", "mass", "data/penguins.csv", "--target", "body_mass_g"))
    assert "mass: regression of 'body_mass_g' (numeric target) from data/penguins.csv" in out
    nb, space = "nbs/experiments/train_regression.ipynb", "nbs/experiments/train_regression.space.yaml"
    refused = mlkit(project, "run", "nbs/experiments/train_tabular.ipynb", "-p", "dataset=mass")
    assert refused.returncode == 1 and "'mass' is a regression data set" in refused.stderr
    ok(mlkit(project, "run", nb, "-p", "dataset=mass", "-p", "model=ridge"))
    swept = mlkit(
        project, "sweep", nb, "-p", "dataset=mass", "--space", space, "--trials", "3", "--seed", "1"
    )
    study = ok(swept).strip()
    runs = [
        r
        for r in json.loads(ok(mlkit(project, "runs", "--json")))
        if r["notebook"] == nb  # the refused train_tabular run is kept too, failed
    ]
    assert len(runs) == 4 and {r["status"] for r in runs} <= {"finished", "pruned"}
    finished = [r for r in runs if r["status"] == "finished"]
    assert {(r["primary_metric"], r["direction"]) for r in finished} == {("rmse", "minimize")}
    best = min(finished, key=lambda r: r["metrics"]["rmse"])
    assert best["metrics"]["rmse"] < best["metrics"]["baseline_rmse"]  # better than predicting the mean
    trials = [r for r in finished if r["study"] == study]
    assert trials and "best" in swept.stderr + swept.stdout

    tag = ok(mlkit(project, "export", best["id"])).strip()
    assert tag.startswith("mass-train_regression:")
    ok(mlkit(project, "promote", tag, "--alias", "mass-production"))
    assert "from data/penguins.csv" in ok(mlkit(project, "lineage", "mass-production"))

    pipeline = joblib.load(project / "reports" / "runs" / best["id"] / "model.joblib")
    rows = penguins.dropna().drop(columns=["body_mass_g"]).iloc[::25]
    records = json.loads(rows.to_json(orient="records"))  # plain JSON values, as a client sends them
    settings = load_settings(project, environ={})
    with (
        mock.patch.dict(os.environ, user_env(), clear=True),
        bentoml_server("mass-production", settings) as url,
    ):
        status, body = post_json(url + "/predict", {"records": records})
        refused, detail = post_json(url + "/predict", {"records": [{**records[0], "species": "Emperor"}]})
    assert status == 200, body
    assert body["model"] == tag and "labels" not in body
    fitted = pipeline.predict(rows)
    allowed = settings.parity_atol + settings.parity_rtol * np.abs(fitted)
    assert (np.abs(np.array(body["predictions"]) - fitted) <= allowed).all()
    assert refused == 422 and detail["detail"][0]["loc"] == ["records", 0, "species"]
