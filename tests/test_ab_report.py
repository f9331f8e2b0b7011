"""`mlkit ab report` on real prediction logs: two versions saved in the real model store, their rows written by
`mlkit.monitoring.predlog.PredictionLog` (synthetic, deterministic predictions), synthetic late labels."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlkit.core import ConfigError, ContractError, expect_fail

N = 3000
FEATURES = ["age", "income"]


@pytest.fixture
def project(settings, tmp_path):
    "The session's model store, a prediction log folder of this test's own, and an mde of 5%."
    return dataclasses.replace(settings, monitor_dir=tmp_path / "monitor", ab_mde=0.05)


def version(name: str, settings, task: str = "classification") -> str:
    "A model version in the store with the metadata the report reads (task, classes, primary metric)."
    from mlkit.registry.metadata import ModelMetadata
    from mlkit.registry.store import save_model

    meta = ModelMetadata(
        task=task,
        classes=[0, 1] if task == "classification" else [],
        primary_metric="accuracy" if task == "classification" else "rmse",
        features=[{"name": f, "dtype": "float64"} for f in FEATURES],
    )
    return save_model(name, {}, meta.to_dict(), settings)


def world(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    "Request ids, their features and their true class."
    rng = np.random.default_rng(seed)
    X = np.c_[rng.integers(18, 80, N), rng.lognormal(10, 0.5, N)].astype(np.float64)
    return np.array([f"req-{i}" for i in range(N)]), X, rng.integers(0, 2, N)


def serve(tag: str, settings, ids, X, predictions, probabilities, role: str | None = None) -> None:
    "Log predictions as the service does (as `role` while an experiment runs): 100 records a request, compacted at the end."
    from mlkit.monitoring.predlog import PredictionLog, log_folder

    log = PredictionLog(log_folder(tag, settings), FEATURES)
    log.role(role)
    for at in range(0, len(ids), 100):
        part = slice(at, at + 100)
        lost = log.log(ids[part].tolist(), X[part], predictions[part], probabilities[part], model=tag)
        assert lost == 0
    log.close()


def classifier(
    truth: np.ndarray, rows: np.ndarray, accuracy: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    "Labels right on `accuracy` of `rows` (exactly: chance does not decide the test), probabilities that agree."
    rng = np.random.default_rng(seed)
    right = rng.permutation(len(rows)) < round(accuracy * len(rows))
    pred = np.where(right, truth[rows], 1 - truth[rows])
    p1 = 0.5 + (pred - 0.5) * rng.uniform(0.1, 0.9, len(rows))
    return pred.astype(np.int64), np.c_[1 - p1, p1]


def split_experiment(
    settings, tmp_path, accuracies: tuple[float, float], rows: int = N
) -> tuple[str, str, Path]:
    "Champion and challenger each answering half of `rows` requests, and the late labels of all of them."
    ids, X, truth = world()
    order = np.random.default_rng(1).permutation(rows)
    tags = []
    for k, (part, accuracy) in enumerate(
        zip((order[: rows // 2], order[rows // 2 :]), accuracies, strict=True)
    ):
        tags.append(version("abtest-churn", settings))
        serve(tags[-1], settings, ids[part], X[part], *classifier(truth, part, accuracy, seed=10 + k))
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"id": ids, "label": truth}).to_csv(labels, index=False)
    return tags[0], tags[1], labels


def test_a_truly_better_challenger_is_promoted(project, tmp_path):
    from mlkit.monitoring.abtest import ab_report

    champion, challenger, labels = split_experiment(project, tmp_path, (0.75, 0.85))
    result, path = ab_report(champion, challenger, "split", labels, out_dir=tmp_path / "ab", settings=project)
    assert result["recommendation"] == "promote", result["reason"]
    assert result["test"] == "two-proportion z-test" and result["metric"] == "accuracy"
    assert (result["champion"]["tag"], result["challenger"]["tag"]) == (champion, challenger)
    assert result["champion"]["n"] + result["challenger"]["n"] == N
    low, high = result["difference"]["ci"]
    assert 0 < low < 0.10 < high and result["difference"]["p_value"] < 1e-6
    assert (
        not result["latency"]["logged"] and result["agreement"]["shared"] == 0
    )  # split: no request seen twice
    page = path.read_text()
    assert path.parent == tmp_path / "ab" and "promote" in page and page.count("plotly-graph-div") == 2


def test_equal_variants_show_no_difference_and_few_rows_need_more_data(project, tmp_path):
    "The same generating process for both: within ±mde on 1500 rows each; on 50 rows each, more rows are asked for."
    from mlkit.monitoring.abtest import ab_report

    champion, challenger, labels = split_experiment(project, tmp_path, (0.8, 0.8))
    result, _ = ab_report(champion, challenger, "split", labels, out_dir=tmp_path, settings=project)
    assert result["recommendation"] == "no difference", result["reason"]
    mde = 0.05 * result["champion"]["value"]  # the ab_mde setting, relative to the champion
    assert -mde < result["difference"]["ci"][0] and result["difference"]["ci"][1] < mde

    small = dataclasses.replace(project, monitor_dir=tmp_path / "small")
    champion, challenger, labels = split_experiment(small, tmp_path, (0.8, 0.8), rows=100)
    result, _ = ab_report(champion, challenger, "split", labels, out_dir=tmp_path, settings=small)
    assert result["recommendation"] == "need more data", result["reason"]
    needed = result["needed_per_variant"]
    assert 1000 < needed < 5000 and result["more_per_variant"] == {
        "champion": needed - 50,
        "challenger": needed - 50,
    }
    assert f"about {needed - 50} more labelled rows per variant" in result["reason"]


def test_a_regressor_in_shadow_mode_is_compared_pair_by_pair(project, tmp_path):
    "Both predict every request: the paired bootstrap of the errors is far narrower than an unpaired one."
    from mlkit.monitoring.abtest import ab_report

    ids, X, _ = world()
    rng = np.random.default_rng(2)
    value = 100 + 0.5 * X[:, 0] + rng.normal(0, 20, N)
    shared = rng.normal(0, 10, N)  # what both models miss alike
    tags = [version("abtest-price", project, "regression") for _ in range(2)]
    for tag, own in zip(tags, (4.0, 2.0), strict=True):
        pred = value + shared + rng.normal(0, own, N)
        serve(tag, project, ids, X, pred, pred[:, None])
    labels = tmp_path / "truth.parquet"
    pd.DataFrame({"id": ids, "label": value}).to_parquet(labels)
    paired, path = ab_report(*tags, "shadow", labels, out_dir=tmp_path, settings=project)
    assert (paired["test"], paired["direction"], paired["recommendation"]) == (
        "paired bootstrap",
        "minimize",
        "promote",
    )
    assert paired["champion"]["n"] == paired["challenger"]["n"] == N and paired["difference"]["ci"][1] < 0
    unpaired, _ = ab_report(*tags, "split", labels, out_dir=tmp_path, settings=project)
    width = {k: np.diff(r["difference"]["ci"])[0] for k, r in (("paired", paired), ("unpaired", unpaired))}
    assert width["paired"] < width["unpaired"] / 2, width
    assert paired["agreement"]["shared"] == N and paired["agreement"]["slices"][0]["feature"] in FEATURES
    assert "bootstrap draws" in path.read_text()


def test_what_cannot_be_compared_says_what_to_do(project, tmp_path):
    from mlkit.monitoring.abtest import ab_report

    champion, challenger, labels = split_experiment(project, tmp_path, (0.8, 0.8), rows=200)
    with expect_fail(ContractError, "The champion has no logged predictions"):
        ab_report(
            champion, challenger, "split", labels, since="2999-01-01", out_dir=tmp_path, settings=project
        )
    with expect_fail(ContractError, "no labelled id was predicted by both variants"):
        ab_report(champion, challenger, "shadow", labels, out_dir=tmp_path, settings=project)
    with expect_fail(ConfigError, "do not answer the same question"):
        ab_report(champion, version("abtest-price", project, "regression"), "split", labels, settings=project)
    with expect_fail(ConfigError, "the same version"):
        ab_report(champion, champion, "split", labels, settings=project)


def test_the_cli_prints_the_recommendation_and_the_report(project, tmp_path):
    champion, challenger, labels = split_experiment(project, tmp_path, (0.75, 0.85))
    env = {**os.environ, "MLKIT_MONITOR_DIR": str(project.monitor_dir), "MLKIT_AB_MDE": "0.05"}

    def mlkit(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mlkit.cli", "ab", "report", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = mlkit(
        "--labels",
        str(labels),
        "--champion",
        champion,
        "--challenger",
        challenger,
        "--mode",
        "split",
        "--out-dir",
        str(tmp_path / "ab"),
    )
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith("promote: accuracy") and len(line.splitlines()) == 1, line
    path = Path(line.rsplit("report: ", 1)[1])
    assert path.is_file() and path.parent == tmp_path / "ab" and "challenger - champion" in path.read_text()

    (tmp_path / "other.csv").write_text("id,label\nnobody,1\n")
    done = mlkit(
        "--labels",
        str(tmp_path / "other.csv"),
        "--champion",
        champion,
        "--challenger",
        challenger,
        "--mode",
        "split",
    )
    assert done.returncode == 1 and done.stderr.startswith(
        "error: The champion's predictions: None of the 1"
    ), done.stderr


def canary(project, tmp_path, accuracies: tuple[float, float], rows: int = N) -> tuple:
    "A running canary in a registry of this test's own; each variant's answers to half of `rows` requests logged."
    from mlkit.registry.abtest import start_experiment

    s = dataclasses.replace(project, run_db=f"sqlite:///{tmp_path}/runs.db")
    champion, challenger = version("canary-churn", s), version("canary-churn", s)
    exp = start_experiment(challenger, "canary", champion=champion, reason="try it", settings=s)
    ids, X, truth = world()
    order = np.random.default_rng(1).permutation(rows)
    halves = (order[: rows // 2], order[rows // 2 :])
    for k, (tag, part, accuracy, role) in enumerate(
        zip((champion, challenger), halves, accuracies, ("champion", "challenger"), strict=True)
    ):
        serve(tag, s, ids[part], X[part], *classifier(truth, part, accuracy, seed=20 + k), role=role)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"id": ids[:rows], "label": truth[:rows]}).to_csv(labels, index=False)
    return s, exp, champion, labels


def test_mlkit_feedback_rolls_a_surely_worse_canary_back_audited(project, tmp_path):
    "Late labels show the challenger 15 points worse on 1500 rows each: `mlkit feedback` sets its share to 0."
    from mlkit.registry.abtest import current_experiment
    from mlkit.registry.aliases import audit_log

    s, exp, champion, labels = canary(project, tmp_path, (0.85, 0.70))
    env = {**os.environ, "MLKIT_MONITOR_DIR": str(s.monitor_dir), "MLKIT_RUN_DB": s.run_db}
    done = subprocess.run(
        [sys.executable, "-m", "mlkit.cli", "feedback", str(labels), "--model", champion],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    line = done.stdout.splitlines()[-1]
    assert line.startswith(
        f"canary {exp['id']}: live-metric guard rolled back to share 0: live accuracy 0.7 "
    ), line
    now = current_experiment(s)
    assert (now["status"], now["share"], now["revision"]) == ("rolled_back", 0.0, exp["revision"] + 1)
    last = audit_log(settings=s)[-1]
    assert (last.action, last.alias, last.from_tag) == ("ab-rollback", f"ab:{exp['id']}", champion)
    assert last.checks[0]["name"] == "live_metric" and not last.checks[0]["passed"]
    assert "1500 and 1500 labelled rows" in last.reason and "guard: worse by more than 0.017" in last.reason


def test_the_live_guard_keeps_an_equal_canary_and_waits_for_enough_labels(project, tmp_path):
    from mlkit.monitoring.abtest import live_guard
    from mlkit.registry.abtest import current_experiment, stop_experiment

    s, exp, _, labels = canary(project, tmp_path, (0.8, 0.8))
    kept = live_guard(labels, s)
    assert (kept["judged"], kept["passed"], kept["rolled_back"]) == (True, True, False), kept["checks"]
    assert current_experiment(s)["revision"] == exp["revision"]  # nothing written

    (tmp_path / "few").mkdir()  # a registry of its own
    s, exp, _, labels = canary(project, tmp_path / "few", (0.9, 0.1), rows=300)
    waiting = live_guard(
        labels, s
    )  # far worse, but on 150 labelled rows each, below ab_guard_min_labels (200)
    assert (waiting["judged"], waiting["passed"], waiting["rolled_back"]) == (False, True, False)
    assert "not judged below 200 labelled rows per variant" in waiting["checks"][0]["detail"]
    stop_experiment(settings=s)
    assert live_guard(labels, s) is None  # no canary runs
