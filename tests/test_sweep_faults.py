"""Faults a sweep survives, each for real: its driver killed with SIGKILL and the same command run again, a trial's
kernel killed with SIGKILL, the PostgreSQL server of its study stopped and started again mid-sweep.

What "no trial lost, none run twice" means here (`check_study`):
- every trial Optuna recorded ended (COMPLETE, PRUNED or FAIL: none left RUNNING or WAITING);
- the trials that count (all but those interrupted and run again) are exactly `--trials`, all COMPLETE;
- an interrupted trial is FAIL with an error naming what interrupted it, and exactly one later trial reruns
  its parameters;
- every counted trial's run record is finished with the trial's parameters and value; no run record is left
  'running'; no trial number has two finished runs, and every finished run is the result of a counted trial (no
  execution wasted twice); a failed run belongs to an interrupted trial and says why;
- the journal reloads and the run database passes SQLite's integrity check."""

import re
import signal
import sqlite3
import time
from pathlib import Path

import optuna
import psutil
import pytest
from test_sweep import mlkit, quick, space_file, start_mlkit, state  # noqa: F401 (fixtures)

from mlkit.runs.store import RunStore
from mlkit.runs.tracking import RUN_DIR_ENV, read_history
from mlkit.runs.trials import open_storage, retried


def retry_history(t) -> list[int]:
    return t.system_attrs.get("retry_history", [])


def check_study(name: str, storage: str, settings, n_trials: int, reason: str) -> set[int]:
    "Assert that no trial of study `name` was lost or run twice (see the module's docstring); return the retried."
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    trials = study.trials
    states = {t.number: t.state.name for t in trials}
    assert set(states.values()) <= {"COMPLETE", "PRUNED", "FAIL"}, f"a trial did not end: {states}"
    again = retried(trials)
    counted = [t for t in trials if t.number not in again]
    assert len(counted) == n_trials and all(t.state.name == "COMPLETE" for t in counted), states
    for n in again:
        assert states[n] == "FAIL" and reason in trials[n].user_attrs["error"], trials[n].user_attrs
        reruns = [t for t in trials if retry_history(t)[-1:] == [n]]
        assert len(reruns) == 1, f"trial {n} runs again exactly once, not {len(reruns)} times"
        assert trials[n].params.items() <= reruns[0].params.items(), "it reruns what the trial had sampled"
    runs = RunStore(settings.run_db).list(study=name)
    assert not [r.id for r in runs if r.status == "running"], "no run record is left running"
    finished = [r for r in runs if r.status == "finished"]
    assert len({r.trial for r in finished}) == len(finished), "no trial number has two finished runs"
    by_id = {r.id: r for r in runs}
    assert {r.id for r in finished} == {t.user_attrs["run_id"] for t in counted}, "no work done twice"
    for t in counted:
        run = by_id[t.user_attrs["run_id"]]
        assert run.parameters["x"] == pytest.approx(t.params["x"])
        assert run.metrics["score"] == pytest.approx(t.value)
    for r in runs:
        if r.status == "failed":
            assert r.trial in again and Path(r.output_path).is_file(), (r.trial, r.error)
    db = settings.run_db.split("sqlite:///", 1)[1]
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    return again


def wait_for(condition, what: str, timeout: float = 120, proc=None):
    "Poll `condition` until it returns something true; fail (killing `proc`) when it does not in time."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    if proc is not None:
        proc.kill()
    pytest.fail(f"timed out waiting until {what}")


def trials_in(storage: str, states: tuple[str, ...]) -> list:
    st = open_storage(storage)
    return [
        t
        for s in optuna.get_all_study_summaries(st)
        for t in optuna.load_study(study_name=s.study_name, storage=st).trials
        if t.state.name in states
    ]


def test_killed_driver_resumes_without_losing_a_trial_or_running_one_twice(quick, state, tmp_path):  # noqa: F811
    settings, env = state
    space = space_file(
        tmp_path, "x: {type: float, low: 0, high: 4}\npause: {type: categorical, choices: [0.5]}\n"
    )
    args = ["sweep", quick, "--space", space, "--trials", 4, "--workers", 2, "--sampler", "random"]
    driver = start_mlkit(*args, env=env)
    storage = settings.sweep_storage

    def one_done_and_some_running():
        done, running = trials_in(storage, ("COMPLETE",)), trials_in(storage, ("RUNNING",))
        return running if done and running else None

    running = wait_for(one_done_and_some_running, "a trial completed", proc=driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    killed = {t.number for t in running}

    again = mlkit(*args, env=env)  # the same command: the derived study name resumes it
    assert again.returncode == 0, again.stderr[-2000:]
    name = again.stdout.strip()
    retried_ = check_study(name, storage, settings, 4, "heartbeat lost")
    assert killed <= retried_, "every trial the kill interrupted ran again"
    for r in RunStore(settings.run_db).list(study=name):
        if r.trial in killed and r.status == "failed":
            assert "driver died" in r.error, r.error
    assert not kernels_of(settings), "no kernel of the killed driver goes on running its notebook"


def kernels_of(settings) -> list:
    "(process, environment) of the trial kernels running for this test's project."
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "ipykernel_launcher" not in " ".join(proc.info["cmdline"] or []):
                continue
            env = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if env.get("MLKIT_RUN_DB") == settings.run_db and env.get("MLKIT_TRIAL_ID"):
            found.append((proc, env))
    return found


def kernel_of(settings):
    "A trial's kernel of this test's project once it has reported a step (mid-notebook), or None."
    return next(((p, env) for p, env in kernels_of(settings) if read_history(Path(env[RUN_DIR_ENV]))), None)


def test_killed_kernel_fails_its_trial_and_runs_it_again(quick, state, tmp_path):  # noqa: F811
    settings, env = state
    space = space_file(
        tmp_path, "x: {type: float, low: 0, high: 4}\npause: {type: categorical, choices: [0.6]}\n"
    )
    args = ["sweep", quick, "--space", space, "--trials", 2, "--workers", 1, "--sampler", "random"]
    driver = start_mlkit(*args, env=env)
    # killed after its first step of three (0.6 s each): mid-notebook, with time to spare
    kernel, kernel_env = wait_for(lambda: kernel_of(settings), "a trial's kernel ran a step", proc=driver)
    kernel.send_signal(signal.SIGKILL)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-2000:]
    name = out.strip()
    again = check_study(name, settings.sweep_storage, settings, 2, "its kernel died")
    killed = RunStore(settings.run_db).get(kernel_env["MLKIT_RUN_ID"])
    assert killed.trial in again and killed.status == "failed"
    assert re.search("DeadKernelError|kernel died", killed.error, re.IGNORECASE), killed.error
    assert Path(killed.output_path).is_file(), "the executed notebook, as far as it went, is kept"
    assert f"trial {killed.trial}: retried" in err, "the progress log says the trial runs again"


def test_postgres_restarted_mid_sweep_loses_nothing(quick, state, tmp_path, postgres_url):  # noqa: F811
    from pg import pg_start, pg_stop

    settings, env = state
    space = space_file(
        tmp_path, "x: {type: float, low: 0, high: 4}\npause: {type: categorical, choices: [0.4]}\n"
    )
    args = ["sweep", quick, "--space", space, "--trials", 2, "--workers", 1, "--sampler", "random"]
    args += ["--storage", postgres_url, "--study", "restarted"]
    driver = start_mlkit(*args, env=env)
    wait_for(lambda: kernel_of(settings), "a trial ran a step", proc=driver)
    pg_stop(postgres_url)
    try:
        time.sleep(5)  # longer than three heartbeats (1 s each): the driver's own trials look silent after
    finally:
        pg_start(postgres_url)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-2000:]
    assert "stopped answering" in err, "the driver saw the server go and waited for it"
    assert check_study("restarted", postgres_url, settings, 2, "interrupted") == set(), "nothing ran again"
