"""Shared fixtures: an isolated project state (run database, runs, W&B, model store under a temp folder),
real runs of the experiment notebook, a real export, and a real `bentoml serve` on loopback."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "nbs" / "experiments" / "train_tabular.ipynb"


def isolated_env(folder: Path, **extra: str) -> dict[str, str]:
    "MLKIT_* and W&B variables that put every piece of mlkit state under `folder`, W&B offline, off the network."
    return {
        "MLKIT_ROOT": str(ROOT),
        "MLKIT_RUN_DB": f"sqlite:///{folder}/runs.db",
        "MLKIT_RUNS_DIR": str(folder / "runs"),
        "MLKIT_MODEL_STORE": str(folder / "bentoml"),
        "MLKIT_MONITOR_DIR": str(folder / "monitor"),
        "MLKIT_SWEEP_STORAGE": str(folder / "optuna.journal"),
        "MLKIT_WANDB_DIR": str(folder),
        "MLKIT_WANDB_MODE": "offline",
        "MLKIT_MODEL": "",
        "WANDB_MODE": "offline",  # belt and braces: W&B never tries the network in tests,
        "WANDB_BASE_URL": "http://127.0.0.1:9",  # and if it did, it would knock on a closed loopback port
        "WANDB_SILENT": "true",
        "BENTOML_DO_NOT_TRACK": "true",
        **extra,
    }


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory) -> Path:
    "Point every piece of mlkit state at a temp folder, W&B offline, for the whole session."
    state = tmp_path_factory.mktemp("mlkit-state")
    env = isolated_env(state)
    saved = {k: os.environ.get(k) for k in [*env, "WANDB_API_KEY", "BENTOML_HOME"]}
    os.environ.update(env)
    os.environ.pop("WANDB_API_KEY", None)
    os.environ["BENTOML_HOME"] = env["MLKIT_MODEL_STORE"]
    from mlkit.core import get_settings

    get_settings.cache_clear()
    yield state
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def settings(state_dir):
    from mlkit.core import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def store(settings):
    from mlkit.runs.store import RunStore

    return RunStore(settings.run_db)


@pytest.fixture(scope="session")
def runs(settings, store):
    "Two real papermill runs of the experiment notebook: a logistic regression and a boosted ensemble."
    from mlkit.runs.runner import run_notebook

    return {
        "logreg": run_notebook(NOTEBOOK, {"model": "logreg", "C": 0.5}, settings=settings, store=store),
        "gbm": run_notebook(NOTEBOOK, {"model": "gbm", "n_estimators": 30}, settings=settings, store=store),
    }


@pytest.fixture(scope="session")
def exported(runs, settings, store):
    from mlkit.registry.export import export_run
    from mlkit.runs.store import best_run

    return export_run(best_run(list(runs.values())).id, settings=settings, store=store)


@pytest.fixture(scope="session")
def server(exported, settings):
    "A real `bentoml serve mlkit.serving:ModelService` on a free loopback port; yields its base URL."
    from mlkit.demo import bentoml_server

    with bentoml_server(
        exported.tag,
        settings,
        env={"MLKIT_MAX_RECORDS": "50", "MLKIT_MAX_BODY_BYTES": "60000", "MLKIT_BODY_TIMEOUT_S": "2"},
    ) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url():
    "A real PostgreSQL server on loopback (see tests/pg.py); skips, with the reason, where none can be installed."
    from pg import pg_bin, postgres_server

    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed and .ci/postgres could not install it here")
    with postgres_server() as url:
        yield url
