"""A real `bentoml serve` with two workers: metrics, drift and the prediction log over both, a worker killed with
kill -9 under load, the log's folder lost while serving, and a corrupt model file refused at start."""

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest

from mlkit.data.datasets import load_dataset
from mlkit.monitoring.predlog import _read_wal, read_log
from mlkit.registry.store import get_model

FRAME = load_dataset("breast_cancer").frame
FEATURES = [c for c in FRAME.columns if c != "target"]


def records(rows: pd.DataFrame) -> list[dict]:
    return [{k: float(v) for k, v in r.items()} for r in rows[FEATURES].to_dict(orient="records")]


def workers(url: str) -> list[psutil.Process]:
    "The worker processes of the `bentoml serve` listening at `url`."
    port = url.rsplit(":", 1)[1]
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "serve" in cmd and "--port" in cmd and cmd[cmd.index("--port") + 1] == port:
            return [c for c in p.children() if _is_worker(c)]
    raise AssertionError(f"no bentoml serve on port {port}")


def _is_worker(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl.worker.service" in p.cmdline()
    except psutil.Error:  # gone meanwhile
        return False


def metric(url: str, name: str) -> float:
    "One sample of /metrics (0 when absent), asked on a new connection (so of any worker)."
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    return 0.0


def predict(url: str, rows: pd.DataFrame) -> httpx.Response:
    return httpx.post(url + "/predict", json={"records": records(rows)}, timeout=30)  # a new connection each


@pytest.fixture(scope="module")
def two(exported, settings, tmp_path_factory):
    from mlkit.demo import bentoml_server

    monitor = tmp_path_factory.mktemp("monitor")
    env = {
        "MLKIT_WORKERS": "2",
        "MLKIT_MONITOR_DIR": str(monitor),
        "MLKIT_DRIFT_WINDOW": "200",
        "MLKIT_DRIFT_MIN_ROWS": "100",
    }
    with bentoml_server(exported.tag, settings, env=env) as url:
        yield url, monitor / exported.tag.replace(":", "/")


def rows_in_window(url: str, rows: int, seconds: float = 10) -> None:
    "Wait until /drift's window holds `rows` rows: each worker copies its queued rows in every half second."
    deadline = time.monotonic() + seconds
    while (got := httpx.get(url + "/drift", timeout=30).json()["rows"]) != rows:
        assert time.monotonic() < deadline, f"the window holds {got} rows, not {rows}, after {seconds} s"
        time.sleep(0.2)


def test_two_workers_count_log_and_watch_drift_together(two, exported):
    url, folder = two
    assert len(workers(url)) == 2
    model = f'mlkit_predictions_total{{model="{exported.tag}"}}'
    answered = 'mlkit_requests_total{endpoint="/predict",status="200"}'
    before = metric(url, model), metric(url, answered)
    stable, ids = FRAME.sample(200, random_state=21), []
    for i in range(0, 200, 10):
        r = predict(url, stable.iloc[i : i + 10])
        assert r.status_code == 200, r.text
        ids += r.json()["ids"]
    assert len({i[:12] for i in ids}) == 2, (
        "one worker answered everything"
    )  # ids start with a per-worker prefix
    rows_in_window(url, 200)
    for _ in range(4):  # whichever worker answers, the same sums and the same window
        assert (metric(url, model) - before[0], metric(url, answered) - before[1]) == (200, 20)
        calm = httpx.get(url + "/drift", timeout=30).json()
        assert (calm["decision"], calm["rows"]) == ("no drift", 200), calm
    shifted = FRAME.sample(200, random_state=22).assign(
        worst_smoothness=lambda d: d["worst_smoothness"] * 1.25
    )
    for i in range(0, 200, 10):
        ids += predict(url, shifted.iloc[i : i + 10]).json()["ids"]
    deadline = (
        time.monotonic() + 10
    )  # each worker copies its queued rows into the shared window every half second
    while httpx.get(url + "/drift", timeout=30).json()["drifted"] != ["worst_smoothness"]:
        assert time.monotonic() < deadline, "the shifted rows did not reach the window within 10 s"
        time.sleep(0.2)
    for _ in range(4):
        alarm = httpx.get(url + "/drift", timeout=30).json()
        assert (alarm["decision"], alarm["drifted"], alarm["rows"]) == ("drift", ["worst_smoothness"], 200), (
            alarm
        )
    logged = read_log(folder)
    assert sorted(logged["__id__"]) == sorted(ids)  # every row once, from both workers' files
    sent = pd.concat([stable, shifted]).set_axis(ids)
    got = logged.set_index("__id__").loc[ids]
    assert got["worst_smoothness"].to_numpy() == pytest.approx(sent["worst_smoothness"].to_numpy(), rel=1e-6)


def test_a_worker_killed_under_load_loses_no_answered_request(two):
    url, folder = two
    victim = workers(url)[0]
    answered, failed, stop = [], [], threading.Event()
    rows = records(FRAME.head(2))

    def client():
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/predict", json={"records": rows})
                except httpx.TransportError:  # in flight at the killed worker: never answered
                    failed.append(1)
                    continue
                assert r.status_code == 200, r.text
                answered.extend(r.json()["ids"])

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    victim.send_signal(signal.SIGKILL)
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert answered
    deadline = time.monotonic() + 60
    while (
        sorted(w.pid != victim.pid for w in workers(url))
        != [True, True]  # restarted: two workers, the victim gone
        or any(f"-{victim.pid}-" in p.name for p in folder.glob("*.wal"))  # its file compacted by another
    ):
        assert time.monotonic() < deadline, (
            "BentoML did not restart the worker, or its file was not compacted"
        )
        time.sleep(0.5)
    for path in folder.iterdir():  # nothing left corrupt: every Parquet file and write-ahead file reads
        if path.suffix == ".parquet":
            pd.read_parquet(path)
        elif path.suffix == ".wal":
            assert _read_wal(path)[0] is not None, path
    logged = read_log(folder)["__id__"]
    assert set(answered) <= set(logged), (
        f"{len(set(answered) - set(logged))} answered rows are not in the log"
    )
    assert not logged.duplicated().any()
    print(f"{len(answered)} rows answered, {len(failed)} requests cut by the kill")


def test_a_lost_log_folder_costs_rows_counted_never_answers(two):
    url, folder = two
    dropped_before = metric(url, "mlkit_prediction_log_dropped_total")
    shutil.move(folder, folder.with_name("moved"))
    folder.write_text("the log's folder is gone")  # even root cannot write under a file
    deadline = time.monotonic() + 40  # each worker starts a new file at its next rotation (every 10 s)
    while metric(url, "mlkit_prediction_log_dropped_total") == dropped_before:
        assert time.monotonic() < deadline, "no loss was counted"
        r = predict(url, FRAME.head(3))
        assert r.status_code == 200, r.text
        time.sleep(0.2)
    assert metric(url, "mlkit_prediction_log_errors_total") > 0


@pytest.mark.parametrize("name", ["model.onnx", "reference.json"])
def test_a_corrupt_model_file_stops_the_service_naming_it(exported, settings, tmp_path, name):
    from mlkit.demo import ServerError, bentoml_server

    store = tmp_path / "bentoml"
    shutil.copytree(settings.model_store, store)
    path = store / Path(get_model(exported.tag, settings).path_of(name)).relative_to(settings.model_store)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut short, as a failed copy leaves it
    with pytest.raises(ServerError) as err:
        copied = type(settings)(**{**settings.__dict__, "model_store": store})
        with bentoml_server(exported.tag, copied, env={"MLKIT_MODEL_STORE": str(store)}):
            pass
    assert f"its file {path} does not load" in str(err.value)
    assert os.path.exists(path)
