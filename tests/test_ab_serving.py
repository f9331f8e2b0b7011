"""A/B experiments over one real `bentoml serve`, switched through the registry while it serves (so every test also
checks that a change is picked up without a restart): shadow answers exactly the champion's outputs while both logs
hold the same ids, a 20% split lands within its binomial interval and is sticky per caller, a canary whose
challenger's contract refuses the traffic is rolled back by the guard (audited), and `mlkit ab` start, stop and
promote are audited."""

import asyncio
import dataclasses
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import get_args

import httpx
import pytest
from conftest import ROOT
from test_serving_workers import FRAME, metric, records

from mlkit.monitoring.predlog import read_log
from mlkit.registry.abtest import MODES, current_experiment, start_experiment, stop_experiment
from mlkit.registry.aliases import audit_log
from mlkit.registry.store import get_model, save_model
from mlkit.serving.variants import unit

SEED = 11


@pytest.fixture(scope="module")
def ab(runs, exported, settings, store, tmp_path_factory):
    "(url, settings of the experiments, champion tag, challenger tag, refusing challenger tag, server environment)."
    from mlkit.demo import bentoml_server
    from mlkit.registry.export import export_run

    folder = tmp_path_factory.mktemp(
        "ab"
    )  # its own run database and model store: other tests' stay as they are
    shutil.copytree(settings.model_store, folder / "bentoml")
    env = {
        "MLKIT_RUN_DB": f"sqlite:///{folder}/runs.db",
        "MLKIT_MODEL_STORE": str(folder / "bentoml"),
        "MLKIT_MONITOR_DIR": str(folder / "monitor"),
        "MLKIT_AB_POLL_S": "0.3",
        "MLKIT_AB_SEED": str(SEED),
        "MLKIT_WANDB_MODE": "disabled",
    }
    s = dataclasses.replace(
        settings,
        run_db=env["MLKIT_RUN_DB"],
        model_store=folder / "bentoml",
        monitor_dir=folder / "monitor",
        ab_seed=SEED,
        wandb_mode="disabled",
    )
    other = next(r for r in runs.values() if r.id != get_model(exported.tag, s).info.metadata["run_id"])
    challenger = export_run(other.id, settings=s, store=store).tag
    stored = get_model(challenger, s)  # the same model, with a contract no record of the data meets
    meta = dict(stored.info.metadata)
    meta["features"] = [{**f, "min": 1e6} if f["name"] == "mean_radius" else f for f in meta["features"]]
    files = {
        p.name: p.read_bytes() for p in Path(stored.path).iterdir() if p.is_file() and p.suffix != ".yaml"
    }
    refuser = save_model(stored.tag.name, files, meta, s)
    with bentoml_server(exported.tag, s, env=env) as url:
        yield url, s, exported.tag, challenger, refuser, {**env, "BENTOML_HOME": env["MLKIT_MODEL_STORE"]}


def experiment_served(url: str, want: dict | None, timeout: float = 30) -> dict:
    "Wait until the service serves experiment `want` (None: none) at its revision; its /metadata 'experiment'."
    deadline = time.monotonic() + timeout
    while True:
        got = httpx.get(url + "/metadata", timeout=30).json()["experiment"]
        if (got is None and want is None) or (got and want and got["experiment"] == want["id"]):
            if want is None or got["share"] == want["share"]:
                return got
        assert time.monotonic() < deadline, f"the service did not pick up {want} (serves {got})"
        time.sleep(0.1)


async def _post_all(url: str, bodies: list[tuple[dict, dict]], concurrency: int = 16) -> list[httpx.Response]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(body, headers):
            async with limit:
                return await client.post("/predict", json=body, headers=headers)

        return await asyncio.gather(*(one(b, h) for b, h in bodies))


def post_all(url: str, bodies: list[tuple[dict, dict]]) -> list[httpx.Response]:
    responses = asyncio.run(_post_all(url, bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies), {r.text for r in responses}
    return responses


def test_shadow_answers_exactly_the_champions_outputs_and_both_logs_hold_the_same_ids(ab):
    url, s, champion, challenger, _, _ = ab
    bodies = [({"records": records(FRAME.iloc[i : i + 3])}, {}) for i in range(0, 90, 3)]
    alone = post_all(url, bodies)
    exp = start_experiment(challenger, "shadow", champion=champion, settings=s)
    experiment_served(url, exp)
    shadowed = post_all(url, bodies)
    for before, now in zip(alone, shadowed, strict=True):
        got, want = now.json(), before.json()
        assert (got["labels"], got["probabilities"]) == (want["labels"], want["probabilities"])
        assert (got["variant"], now.headers["x-model-version"]) == ("champion", champion)
    ids = [i for r in shadowed for i in r.json()["ids"]]
    folder = s.monitor_dir / challenger.replace(":", "/")
    deadline = time.monotonic() + 30
    while not folder.exists() or not set(ids) <= set(read_log(folder)["__id__"]):
        assert time.monotonic() < deadline, "the challenger's shadow rows did not reach its log"
        time.sleep(0.2)
    theirs = read_log(folder).set_index("__id__").loc[ids]
    ours = read_log(s.monitor_dir / champion.replace(":", "/")).set_index("__id__").loc[ids]
    assert set(theirs["__variant__"]) == {"challenger"} and theirs["__shadow__"].all()
    assert set(ours["__variant__"]) == {"champion"} and not ours["__shadow__"].any()
    assert (theirs["__model__"] == challenger).all() and (ours["__model__"] == champion).all()
    assert theirs["mean_radius"].tolist() == pytest.approx(ours["mean_radius"].tolist())
    # each variant's model time is logged (what `mlkit ab report` compares), and is a model's time, not zero
    for frame in (theirs, ours):
        assert ((frame["__latency_ms__"] > 0) & (frame["__latency_ms__"] < 1000)).all()
    shadow = 'mlkit_variant_requests_total{role="shadow",variant="challenger"}'
    assert metric(url, shadow) == len(bodies)
    stop_experiment(settings=s)
    experiment_served(url, None)


def test_a_split_of_20_percent_is_within_its_binomial_interval_and_sticky_per_caller(ab):
    url, s, champion, challenger, _, _ = ab
    exp = start_experiment(challenger, "split", share=0.2, champion=champion, settings=s)
    assert exp["seed"] == SEED and exp["sticky_key"] == "X-Caller"
    served = experiment_served(url, exp)
    assert (served["mode"], served["share"], served["variants"]["challenger"]["model"]) == (
        "split",
        0.2,
        challenger,
    )
    n, rows = 3000, records(FRAME)
    bodies = [({"records": [rows[i % len(rows)]]}, {"X-Caller": f"caller-{i}"}) for i in range(n)]
    answers = post_all(url, bodies)
    variants = [r.json()["variant"] for r in answers]
    share = variants.count("challenger") / n
    half = 2.576 * math.sqrt(0.2 * 0.8 / n)  # 99% normal interval of a binomial share
    assert abs(share - 0.2) <= half, share
    # sticky: each caller's variant is the one the seed assigns it, and again on a second request
    assert variants == ["challenger" if unit(f"caller-{i}", SEED) < 0.2 else "champion" for i in range(n)]
    again = post_all(url, bodies[:200])
    assert [r.json()["variant"] for r in again] == variants[:200]
    tags = {r.json()["variant"]: (r.headers["x-model-version"], r.json()["model"]) for r in answers}
    assert tags == {"champion": (champion, champion), "challenger": (challenger, challenger)}
    stop_experiment(settings=s)
    experiment_served(url, None)


def test_a_canary_whose_challenger_refuses_the_traffic_is_rolled_back_by_the_guard(ab):
    url, s, champion, _, refuser, _ = ab
    exp = start_experiment(
        refuser, "canary", champion=champion, settings=dataclasses.replace(s, ab_canary_steps=(0.5, 1.0))
    )
    experiment_served(url, exp)
    bodies = [({"records": records(FRAME.iloc[[i]])}, {}) for i in range(120)]
    answers = post_all(
        url, bodies
    )  # never a failed request: the champion answers what the challenger refuses
    assert {r.json()["variant"] for r in answers} == {"champion"}
    deadline = time.monotonic() + 30
    while current_experiment(s)["status"] != "rolled_back":
        assert time.monotonic() < deadline, "the guard's rollback did not reach the registry"
        time.sleep(0.1)
    served = experiment_served(url, current_experiment(s))
    assert served["share"] == 0.0
    entry = [e for e in audit_log(settings=s) if e.alias == f"ab:{exp['id']}"][-1]
    assert (entry.action, entry.who, entry.to_tag) == ("ab-rollback", "mlkit-service", refuser)
    assert "refused by its contract" in entry.reason and entry.metrics["share"] == 0.0
    assert [c["name"] for c in entry.checks if not c["passed"]] == ["error_rate"]
    assert metric(url, 'mlkit_variant_errors_total{reason="refused",variant="challenger"}') >= 20
    after = post_all(url, bodies[:20])
    assert {r.json()["variant"] for r in after} == {"champion"}
    stop_experiment(settings=s)


def test_ab_start_stop_and_promote_are_audited(ab):
    url, s, champion, challenger, _, env = ab
    from mlkit.registry.promotion import promote

    promote(champion, "production", force=True, settings=s)
    promote(challenger, "challenger", force=True, settings=s)
    mlkit = [sys.executable, "-m", "mlkit.cli"]
    run_env = {**os.environ, **env, "MLKIT_MODEL": "production"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*mlkit, "ab", *args], env=run_env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )

    started = cli(
        "start", "--challenger", "challenger", "--mode", "split", "--share", "0.5", "--reason", "try it"
    )
    assert started.returncode == 0, started.stderr
    assert f"split of {challenger} against {champion}, share 0.5, seed {SEED}" in started.stdout
    twice = cli("start", "--challenger", "challenger", "--mode", "shadow")
    assert (
        twice.returncode == 1
        and twice.stderr.count("\n") == 1
        and "stop it first (`mlkit ab stop`)" in twice.stderr
    )
    experiment_served(
        url, current_experiment(s)
    )  # the service serves the champion by tag, the registry by alias
    assert cli("stop", "--reason", "enough").returncode == 0
    assert cli("start", "--mode", "shadow").returncode == 0  # the ab_challenger setting: 'challenger'
    promoted = cli("promote", "--force", "--reason", "wins")
    assert promoted.returncode == 0, promoted.stderr
    assert f"'production' {champion} -> {challenger}" in promoted.stdout
    none = cli("stop")
    assert none.returncode == 1 and "No experiment is running: start one with `mlkit ab start" in none.stderr
    log = [(e.action, e.alias, e.reason) for e in audit_log(settings=s)][-5:]
    first = current_experiment(s)["id"] - 1
    assert log == [
        ("ab-start", f"ab:{first}", "try it"),
        ("ab-stop", f"ab:{first}", "enough"),
        ("ab-start", f"ab:{first + 1}", None),
        ("promote", "production", "wins"),
        ("ab-promote", f"ab:{first + 1}", f"promoted {challenger} to 'production': wins"),
    ]
    assert current_experiment(s)["status"] == "promoted"
    experiment_served(url, None)


def test_the_cli_offers_the_librarys_modes():
    from mlkit.cli_ab import Mode

    assert get_args(Mode) == MODES
