"""Sweeps for real: Optuna studies, trials as papermill runs on a Dask LocalCluster of 2 worker processes,
pruning, failures, kill-and-resume, a PostgreSQL storage shared by two drivers, caching and comparison."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import optuna
import pytest
from conftest import NOTEBOOK, ROOT, isolated_env

from mlkit.core import ConfigError, load_settings
from mlkit.runs.store import RunStore
from mlkit.runs.sweep import SweepError, sweep
from mlkit.runs.trials import open_storage

QUICK = """x: float = 0.0  # the knob; the score peaks at x = 2
quality: float = 1.0  # the intermediate value reported at each step
steps: int = 3  # how many intermediate values
fail: bool = False  # raise, to test failing trials
pause: float = 0.0  # seconds of sleep per step, to look like real work"""
BODY = """import time
from mlkit.runs.tracking import log_findings, log_intermediate, log_metrics
log_findings([{"check": "duplicate_rows", "severity": "warning", "message": f"x={x:.4f}", "details": {"x": x}}])
for step in range(steps):
    time.sleep(pause)
    log_intermediate(quality, step, name="quality")
if fail:
    raise RuntimeError("asked to fail")
log_metrics({"score": -(x - 2) ** 2 + quality}, primary="score")"""


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> Path:
    "A fast experiment notebook with the knobs the sweep tests need."
    path = tmp_path_factory.mktemp("nb") / "quick.ipynb"
    cells = [
        nbformat.v4.new_code_cell(QUICK, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(BODY),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def state(tmp_path):
    "Settings and environment of a fresh, isolated project state (W&B off unless a test turns it on)."
    env = isolated_env(tmp_path, MLKIT_WANDB_MODE="disabled", MLKIT_SWEEP_HEARTBEAT_S="1")
    return load_settings(ROOT, environ=env), {**os.environ, **env}


def mlkit(*args, env, timeout=300, **kw):
    return subprocess.run(
        [sys.executable, "-m", "mlkit.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
        **kw,
    )


def start_mlkit(*args, env) -> subprocess.Popen:
    "`mlkit ARGS` started in the background (a sweep driver to run beside another, or to kill)."
    return subprocess.Popen(
        [sys.executable, "-m", "mlkit.cli", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def space_file(tmp_path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_sweep_on_two_local_workers_links_trials_to_runs(quick, state):
    settings, _ = state
    result = sweep(
        quick,
        {"x": {"type": "float", "low": 0, "high": 4}},
        n_trials=6,
        workers=2,
        sampler="random",
        seed=3,
        settings=settings,
    )
    assert result.counts == {"complete": 6, "pruned": 0, "fail": 0}
    study = optuna.load_study(study_name=result.study, storage=open_storage(result.storage))
    runs = RunStore(settings.run_db).list(study=result.study)
    assert sorted(r.trial for r in runs) == list(range(6)), "one run per trial, none twice"
    for t in study.trials:
        run = next(r for r in runs if r.trial == t.number)
        assert t.user_attrs["run_id"] == run.id
        assert run.parameters["x"] == pytest.approx(t.params["x"])
        assert t.value == pytest.approx(run.metrics["score"])
        assert Path(run.output_path).is_file()
    assert result.best_value == max(t.value for t in study.trials)


def test_pruned_and_failing_trials_do_not_stop_the_sweep(quick, state):
    settings, _ = state
    space = {
        "quality": {"type": "categorical", "choices": [0.9, 0.1]},
        "fail": {"type": "categorical", "choices": [False, True]},
    }
    result = sweep(quick, space, n_trials=10, workers=1, sampler="random", seed=0, settings=settings)
    c = result.counts
    assert c["pruned"] >= 1 and c["fail"] >= 1 and c["complete"] >= 2 and sum(c.values()) == 10
    runs = RunStore(settings.run_db).list(study=result.study)
    pruned = [r for r in runs if r.status == "pruned"]
    assert pruned and all(r.parameters["quality"] == 0.1 for r in pruned)
    assert all("TrialPruned" in r.error and Path(r.output_path).is_file() for r in pruned)
    failed = [r for r in runs if r.status == "failed"]
    assert failed and all("asked to fail" in r.error for r in failed)
    study = optuna.load_study(study_name=result.study, storage=open_storage(result.storage))
    assert all("asked to fail" in t.user_attrs["error"] for t in study.trials if t.state.name == "FAIL")


def test_max_failures_stops_the_sweep(quick, state):
    settings, _ = state
    with pytest.raises(SweepError, match=r"stopped: [23] trials failed, more than max_failures=1") as err:
        sweep(
            quick,
            {"fail": {"type": "categorical", "choices": [True]}, "x": {"type": "float", "low": 0, "high": 1}},
            n_trials=6,
            workers=1,
            max_failures=1,
            settings=settings,
        )
    study = err.value.args[0].split("--study ")[1].split()[0]
    runs = RunStore(settings.run_db).list(study=study)
    assert len(runs) < 6 and all(r.status == "failed" for r in runs), "it stopped asking for trials early"


def test_wandb_groups_trials_by_study(quick, state, tmp_path):
    settings, _ = state
    import dataclasses

    from test_runner import wandb_summary

    from mlkit.runs.wandb_log import segments

    tracked = dataclasses.replace(settings, wandb_mode="offline")
    result = sweep(
        quick, {"x": {"type": "float", "low": 0, "high": 4}}, n_trials=2, workers=2, settings=tracked
    )
    runs = RunStore(settings.run_db).list(study=result.study)
    assert len(runs) == 2
    for run in runs:
        summary = wandb_summary(run.wandb_path)
        assert f"trial-{run.trial}" in summary["tags"]
        assert summary["config"]["x"] == pytest.approx(run.parameters["x"])
        records = [  # every segment of the run: the kernel's live one holds the history
            json.loads(line)
            for segment in segments(tracked, run.id)
            for line in subprocess.run(
                [str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(segment)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()
            if line.strip()
        ]
        header = next(r["run"] for r in records if r["type"] == "run")
        assert header["run_group"] == result.study and header["job_type"] == "trial"
        history = [r for r in records if r["type"] == "history"]
        assert len(history) == 3, "the three reported intermediate values are W&B history rows"


def test_two_drivers_share_a_postgres_study(quick, state, tmp_path, postgres_url):
    _, env = state
    space = space_file(
        tmp_path, "x: {type: float, low: 0, high: 4}\npause: {type: categorical, choices: [0.2]}\n"
    )
    args = [
        "sweep",
        quick,
        "--space",
        space,
        "--trials",
        8,
        "--workers",
        1,
        "--sampler",
        "random",
        "--storage",
        postgres_url,
        "--study",
        "shared",
    ]
    drivers = [start_mlkit(*args, env=env) for _ in range(2)]
    outs = [d.communicate(timeout=300) for d in drivers]
    assert all(d.returncode == 0 for d in drivers), [o[1][-1500:] for o in outs]
    study = optuna.load_study(study_name="shared", storage=open_storage(postgres_url))
    assert len(study.trials) == 8 and all(t.state.name == "COMPLETE" for t in study.trials)
    settings = load_settings(ROOT, environ=env)
    runs = RunStore(settings.run_db).list(study="shared")
    assert sorted(r.trial for r in runs) == list(range(8)), "each trial ran exactly once"
    lines = [line for out, err in outs for line in err.splitlines() if line.startswith("trial ")]
    assert len(lines) == 8 and len({line.split(":")[0] for line in lines}) == 8, (
        "both drivers shared the work"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr: {type: float, low: 0.1, high: 1}", "'lr' is not a parameter of the notebook"),
        ("x: {type: float, low: 3, high: 1}", "'x' needs low < high"),
        ("x: [1, 2]", "needs a mapping with type: int, float or categorical"),
        ("x: {type: float, low: 0, high: 1, log: true}", "low must be positive"),
        ("{not yaml", "Cannot read the search space"),
    ],
)
def test_bad_space_files_are_refused_before_anything_runs(quick, state, tmp_path, text, message):
    settings, env = state
    done = mlkit("sweep", quick, "--space", space_file(tmp_path, text), "--trials", 2, env=env)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert not Path(settings.sweep_storage).exists() or not optuna.get_all_study_summaries(
        open_storage(settings.sweep_storage)
    ), "no study was created"


def test_cache_hit_and_force(state):
    settings, env = state
    first = mlkit("run", NOTEBOOK, "-p", "C=0.3", env=env)
    assert first.returncode == 0, first.stderr
    second = mlkit("run", NOTEBOOK, "-p", "C=0.3", env=env)
    assert second.stdout == first.stdout and "cached: run" in second.stderr
    forced = mlkit("run", NOTEBOOK, "-p", "C=0.3", "--force", env=env)
    assert forced.returncode == 0 and forced.stdout != first.stdout
    records = RunStore(settings.run_db).list()
    assert len(records) == 2 and len({r.cache_key for r in records}) == 1
    listed = mlkit("runs", env={**env, "COLUMNS": "200"})
    assert records[0].cache_key[7:15] in listed.stdout, "mlkit runs shows the cache key"


def test_changed_data_invalidates_the_cache(tmp_path):
    import datetime as dt

    import pandas as pd

    from mlkit.data.contracts import tabular_schema
    from mlkit.data.datasets import register_dataset
    from mlkit.data.fingerprints import fingerprint
    from mlkit.runs.runner import cached_run
    from mlkit.runs.store import RunRecord

    csv = tmp_path / "toy.csv"
    pd.DataFrame({"a": [1.0, 2.0], "y": [0, 1]}).to_csv(csv, index=False)
    schema = tabular_schema({"a": "float"}, target="y", classes=[0, 1], name="toy_cache")
    register_dataset("toy_cache")(lambda: (pd.read_csv(csv), schema))
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    fp = fingerprint(pd.read_csv(csv))
    store.create(
        RunRecord(
            id="r1",
            notebook="nb",
            notebook_hash="h",
            parameters={},
            status="finished",
            created_at=dt.datetime.now(dt.UTC),
            run_dir="d",
            output_path="o",
            cache_key="k",
            data={"toy_cache": {"fingerprint": fp, "rows": 2}},
        )
    )
    assert cached_run(store, "k").id == "r1"
    pd.DataFrame({"a": [1.0, 2.5], "y": [0, 1]}).to_csv(csv, index=False)
    assert cached_run(store, "k") is None, "one changed cell: no reuse"


def test_compare_and_study_report(quick, state):
    settings, env = state
    result = sweep(
        quick, {"x": {"type": "float", "low": 0, "high": 4}}, n_trials=3, workers=2, settings=settings
    )
    runs = RunStore(settings.run_db).list(study=result.study)
    done = mlkit("compare", runs[0].id, runs[1].id, env={**env, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert runs[0].id in done.stdout and runs[1].id in done.stdout
    assert f"{runs[0].metrics['score']:.4f}" in done.stdout
    page = Path(mlkit("report", "--study", result.study, env=env).stdout.strip())
    html = page.read_text()
    assert page.parent == ROOT / "reports" / "studies"
    for run in runs:
        link = html.split(f">{run.id}</a>")[0].rsplit("href='", 1)[1].split("'")[0]
        assert (page.parent / link).resolve() == Path(run.output_path).resolve()
        want = {"check": "duplicate_rows", "severity": "warning", "message": f"x={run.parameters['x']:.4f}"}
        assert run.findings == [{**want, "details": {"x": run.parameters["x"]}}], (
            "the record keeps the findings"
        )
        assert f"warning: {want['message']}</td>" in html, "the report lists each trial's findings"
    assert "Optimisation history" in html and "plotly" in html
    page.unlink()
    missing = mlkit("report", "--study", "nope", env=env)
    assert missing.returncode == 1 and "No study 'nope'" in missing.stderr


def test_bad_sweep_arguments(quick, state):
    settings, _ = state
    with pytest.raises(ConfigError, match="Unknown sampler 'bayes'"):
        sweep(
            quick,
            {"x": {"type": "float", "low": 0, "high": 1}},
            n_trials=1,
            sampler="bayes",
            settings=settings,
        )
    with pytest.raises(ConfigError, match="The 'workers' parameter of sweep must be a positive int"):
        sweep(quick, {"x": {"type": "float", "low": 0, "high": 1}}, n_trials=1, workers=0, settings=settings)
    with pytest.raises(ConfigError, match="grid sampler needs a step for the float range 'x'"):
        sweep(
            quick,
            {"x": {"type": "float", "low": 0, "high": 1}},
            n_trials=1,
            sampler="grid",
            settings=settings,
        )


def test_trials_run_on_an_existing_dask_scheduler(quick, state):
    "A real `dask-scheduler` and `dask-worker` on loopback, as on a cluster: only the address changes."
    from mlkit.core import free_port

    settings, env = state
    port = free_port()
    bindir = Path(sys.executable).parent
    scheduler = subprocess.Popen(
        [bindir / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [
            bindir / "dask",
            "worker",
            f"tcp://127.0.0.1:{port}",
            "--nworkers",
            "2",
            "--nthreads",
            "1",
            "--no-dashboard",
            "--host",
            "127.0.0.1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        result = sweep(
            quick,
            {"x": {"type": "float", "low": 0, "high": 4}},
            n_trials=3,
            sampler="random",
            scheduler=f"tcp://127.0.0.1:{port}",
            settings=settings,
        )
        assert result.counts["complete"] == 3
        runs = RunStore(settings.run_db).list(study=result.study)
        assert sorted(r.trial for r in runs) == [0, 1, 2]
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
            proc.wait(timeout=30)
