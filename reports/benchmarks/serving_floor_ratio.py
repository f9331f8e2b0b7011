"""/predict of `bentoml serve mlkit.serving:ModelService` against the HTTP floor, for a float model, the churn model
(numbers and raw `plan`/`region` strings) and the text model, in one run.

    .venv/bin/python reports/benchmarks/serving_floor_ratio.py --state /tmp/mlkit-floor [--reps 2] [--pyspy DIR]

The floor is bare_asgi.py under uvicorn (uvloop, httptools, one worker, no access log), sent the same body as each
model; the models are made by the project's own flow (papermill runs of train_tabular.ipynb on breast_cancer and
churn, train_text.ipynb at its defaults, each exported) into `--state` (reused when present). Each point: wrk -t1,
loopback, one server worker, `--warmup` s discarded then `--seconds` s measured; per repetition the floor and the
service are started fresh, the floor measured right before the service with the same body. Monitoring (drift
window, prediction log, metrics) is on; the "monitoring off" column turns the prediction log off (MLKIT_MONITOR_DIR
empty), the drift window and metrics stay on. With `--pyspy DIR`, a py-spy profile (raw, 200 Hz) of the worker at c32 for each model, summarised
by serving_profile.py's `summarize` into DIR/<model>.txt.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serving_common import (  # noqa: E402
    HOST,
    ROOT,
    bentoml_cmd,
    free_port,
    load_avg,
    lua_script,
    point,
    server,
)

HERE = Path(__file__).parent
KEY = "bench-key-0123456789"  # the service checks it on every request, as in production; the floor is sent it too
AUTH = {"Authorization": f"Bearer {KEY}"}
MODELS = {
    "float": (
        "nbs/experiments/train_tabular.ipynb",
        {"dataset": "breast_cancer", "model": "logreg", "C": 0.5},
    ),
    "churn": (
        "nbs/experiments/train_tabular.ipynb",
        {"dataset": "churn", "time_column": "timestamp", "model": "gbm", "n_estimators": 30},
    ),
    "text": ("nbs/experiments/train_text.ipynb", {}),
}


def prepare(state: Path) -> dict:
    "Each model of MODELS run and exported under `state` (reused when state/models.json exists): name -> info."
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import isolated_env

    state = state.resolve()
    env = {**isolated_env(state), "BENTOML_HOME": str(state / "bentoml")}
    os.environ.update(env)
    marker = state / "models.json"
    if not marker.exists():
        state.mkdir(parents=True, exist_ok=True)
        from mlkit.core import get_settings
        from mlkit.data.datasets import load_dataset
        from mlkit.registry.export import export_run
        from mlkit.registry.store import get_model
        from mlkit.runs.runner import run_notebook
        from mlkit.runs.store import RunStore

        get_settings.cache_clear()
        settings = get_settings()
        store = RunStore(settings.run_db)
        out = {}
        for name, (notebook, params) in MODELS.items():
            run = run_notebook(ROOT / notebook, params, settings=settings, store=store)
            tag = str(export_run(run.id, settings=settings, store=store).tag)
            features = get_model(tag, settings).info.metadata["features"]
            if name == "text":
                record = {features[0]["name"]: "great product, works as described and arrived early"}
            else:
                data = load_dataset(params["dataset"])
                row = data.X.sample(1, random_state=3).iloc[0]
                record = {
                    f["name"]: (None if row[f["name"]] != row[f["name"]] else row[f["name"]])
                    for f in features
                }
                record = json.loads(json.dumps(record, default=lambda v: v.item()))
            out[name] = {"tag": tag, "record": record}
        marker.write_text(json.dumps(out, indent=1))
    return {"env": env, "models": json.loads(marker.read_text())}


def worker_pid(proc) -> int:
    import psutil

    for k in psutil.Process(proc.pid).children(recursive=True):
        if "_bentoml_impl.worker" in " ".join(k.cmdline()):
            return k.pid
    raise RuntimeError("no BentoML worker process found")


def measured(url: str, script: Path, connections: int, args, pid: int) -> dict:
    "A warm-up wrk run, then the measured one with the server process's CPU time per answered request (µs)."
    import psutil

    proc = psutil.Process(pid)
    point(url, script, connections, args.warmup, 0)
    before = proc.cpu_times()
    r = point(url, script, connections, args.seconds, 0)
    after = proc.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {**r, "cpu_us": 1e6 * cpu / max(1, r["requests"] - r["non2xx"])}


def floor(body: str, args) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bare_asgi:app", "--host", HOST, "--port", str(port)]
    cmd += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    with server(cmd, {}, "/", port, cwd=HERE) as (url, proc):
        return measured(url + "/", lua_script(body, AUTH), 32, args, proc.pid)


def ablation(mode: str, env: dict, body: str, args) -> dict:
    "gateway_ablation.py in `mode` under plain uvicorn: CPU per request of the gateway with parts of it replaced."
    port = free_port()
    env = {
        **env,
        "ABLATION": mode,
        "MLKIT_API_KEY": KEY,
        "MLKIT_MONITOR_DIR": f"/tmp/mlkit-floor-monitor/abl-{time.time_ns()}",
    }
    cmd = [sys.executable, "-m", "uvicorn", "gateway_ablation:app", "--host", HOST, "--port", str(port)]
    cmd += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    with server(cmd, env, "/livez", port, cwd=HERE) as (url, proc):
        return measured(url + "/predict", lua_script(body, AUTH), 32, args, proc.pid)


def service(name: str, env: dict, body: str, args, monitoring: bool = True, spy: Path | None = None) -> dict:
    port = free_port()
    # monitoring off: no prediction log (MLKIT_MONITOR_DIR empty); the drift window and the metrics stay on
    monitor = f"/tmp/mlkit-floor-monitor/{name}-{time.time_ns()}" if monitoring else ""
    env = {**env, "MLKIT_MONITOR_DIR": monitor, "MLKIT_API_KEY": KEY}
    script, out = lua_script(body, AUTH), {}
    cmd = bentoml_cmd("mlkit.serving:ModelService", port)
    with server(cmd, env, "/livez", port, cwd=Path(args.root)) as (url, proc):
        if spy is not None:
            raw = spy / f"{name}.raw"
            cmd = [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(worker_pid(proc)),
                "--duration",
                str(int(args.seconds)),
            ]
            # blocking sampling (the worker is paused per sample: slower, but whole stacks; --nonblocking tore
            # the asyncio stacks apart)
            cmd += ["--rate", "100", "--format", "raw", "--output", str(raw)]
            point(url + "/predict", script, 32, args.warmup, 0)
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            out["c32"] = point(url + "/predict", script, 32, args.seconds, 0)
            p.wait()
            return out
        out["c32"] = measured(url + "/predict", script, 32, args, worker_pid(proc))
        if monitoring:
            out["c1"] = point(url + "/predict", script, 1, args.seconds, args.warmup)
    return out


IDLE = (
    "Condition.wait",
    "Event.wait",
    "time.sleep",
    "select",
    "epoll",
)  # a waiting thread py-spy sampled anyway
THREADS = [
    ("PredictionLog._run", "prediction log writer thread (write-ahead files -> Parquet)"),
    ("start.<locals>.loop", "drift thread (window copies every 0.5 s, tests every 5 s)"),
    ("Watcher", "A/B watcher thread (polls the registry)"),
    ("Thread._bootstrap", "other threads"),
]
PARTS = [  # first match, in this order, names where an event-loop sample goes
    ("Session.run", "onnxruntime Session.run"),
    ("encode_batch", "tokenizer"),
    ("OnnxClassifier._table", "per-column input table"),
    ("from_rows", "input matrix from decoded rows"),
    ("_fast_matrix", "decode + validate (msgspec)"),
    ("ServingCore.parse", "decode + validate (pydantic)"),
    ("DriftMonitor.observe_matrix", "drift window (queue)"),
    ("PredictionLog.log", "prediction log write-ahead (os.write)"),
    ("Metrics.answered", "request counters (Prometheus, multiprocess)"),
    ("Counter.inc", "request counters (Prometheus, multiprocess)"),
    ("OnnxClassifier.answer", "answer building"),
    ("Gateway._respond", "response send (uvicorn, socket writes)"),
    ("send_versioned", "response send (uvicorn, socket writes)"),
    ("Gateway._body", "body read and checks"),
    ("HttpToolsProtocol", "uvicorn: HTTP parsing, connection"),
]


def breakdown(raw: Path) -> str:
    "Where a py-spy raw profile's active samples go: each thread, and within the event loop each part of a request."
    threads, parts, total = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or any(w in stack.rsplit(";", 1)[-1] for w in IDLE):
            continue
        total += int(n)
        thread = next((label for key, label in THREADS if key in stack), "event loop: the requests")
        threads[thread] += int(n)
        if thread.startswith("event loop"):
            parts[
                next(
                    (label for key, label in PARTS if key in stack),
                    "the rest: uvicorn, asyncio, gateway glue",
                )
            ] += int(n)
    lines = [f"{raw.name}: {total} active samples (waiting threads left out)"]
    for thread, n in threads.most_common():
        lines.append(f"  {100 * n / total:5.1f}%  {thread}")
        if thread.startswith("event loop"):
            lines += [f"          {100 * m / total:5.1f}%  {part}" for part, m in parts.most_common()]
    return "\n".join(lines) + "\n"


def med(vals: list[float], digits: int = 0) -> str:
    m = statistics.median(vals)
    return (
        f"{m:.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"
        if len(vals) > 1
        else f"{m:.{digits}f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", default="/tmp/mlkit-floor")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--no-off", action="store_true", help="skip the monitoring-off points")
    ap.add_argument(
        "--root",
        default=str(ROOT),
        help="serve mlkit from this checkout (an earlier commit's worktree: the history)",
    )
    ap.add_argument(
        "--ablation",
        action="store_true",
        help="instead: CPU per request of the floor, the gateway under plain uvicorn with the answer, or the "
        "model too, replaced by a constant (gateway_ablation.py), and the service",
    )
    ap.add_argument(
        "--pyspy", default=None, help="profile each model's worker at c32 into this folder instead"
    )
    args = ap.parse_args()
    prepared = prepare(Path(args.state))
    env, models = prepared["env"], prepared["models"]
    print(f"load average before: {load_avg()}", file=sys.stderr)
    if args.pyspy:
        from serving_profile import summarize

        spy = Path(args.pyspy)
        spy.mkdir(parents=True, exist_ok=True)
        for name in args.models:
            m = models[name]
            body = json.dumps({"records": [m["record"]]}, separators=(",", ":"))
            r = service(name, {**env, "MLKIT_MODEL": m["tag"]}, body, args, spy=spy)
            (spy / f"{name}.txt").write_text(
                breakdown(spy / f"{name}.raw") + "\n" + summarize(spy / f"{name}.raw", top=40)
            )
            print(
                f"{name}: c32 {r['c32']['rps']:.0f} req/s under py-spy; {spy / (name + '.txt')}",
                file=sys.stderr,
            )
        return
    if args.ablation:
        print(
            "| model | floor | gateway: check + decode | + model | + answer, drift, log, counters (all) "
            "| bentoml serve (all) | CPU µs per request (req/s at c32) |"
        )
        print("|---|---|---|---|---|---|---|")
        for name in args.models:
            m = models[name]
            body = json.dumps({"records": [m["record"]]}, separators=(",", ":"))
            menv = {**env, "MLKIT_MODEL": m["tag"]}
            cells = [floor(body, args)] + [ablation(x, menv, body, args) for x in ("decode", "model", "full")]
            cells.append(service(name, menv, body, args)["c32"])
            print(
                f"| {name} | " + " | ".join(f"{c['cpu_us']:.0f} ({c['ok_rps']:.0f})" for c in cells) + " | |"
            )
        return
    rows = []
    for name in args.models:
        m = models[name]
        body = json.dumps({"records": [m["record"]]}, separators=(",", ":"))
        res = {"floor": [], "on": [], "off": []}
        for _ in range(args.reps):
            res["floor"].append(floor(body, args))
            res["on"].append(service(name, {**env, "MLKIT_MODEL": m["tag"]}, body, args))
            if not args.no_off:
                res["off"].append(
                    service(name, {**env, "MLKIT_MODEL": m["tag"]}, body, args, monitoring=False)
                )
        fl = [r["rps"] for r in res["floor"]]
        on = [r["c32"]["ok_rps"] for r in res["on"]]
        ratio = [o / f for o, f in zip(on, fl, strict=True)]
        off = [r["c32"]["ok_rps"] for r in res["off"]]
        bad = sum(r["c32"]["non2xx"] + r["c32"]["errors"] for r in res["on"] + res["off"])
        rows.append(
            f"| {name} ({len(body)} B body) | {med(fl)} | {med(on)} | {med([100 * x for x in ratio])} % "
            f"| {med([r['c32']['p99_ms'] for r in res['on']], 2)} "
            f"| {med([r['c1']['p50_ms'] for r in res['on']], 3)} | {med([r['c1']['p99_ms'] for r in res['on']], 3)} "
            f"| {med(off) if off else '-'} | {med([100 * (1 - o / f) for o, f in zip(on, off, strict=True)]) + ' %' if off else '-'} "
            f"| {med([r['cpu_us'] for r in res['floor']])} | {med([r['c32']['cpu_us'] for r in res['on']])} "
            f"| {med([r['c32']['cpu_us'] for r in res['off']]) if off else '-'} | {bad} |"
        )
        print(rows[-1], file=sys.stderr)
    print(f"load average after: {load_avg()}", file=sys.stderr)
    print(
        "| model | floor c32 req/s | /predict c32 req/s | of the floor | c32 p99 ms | c1 p50 ms | c1 p99 ms "
        "| monitoring off c32 req/s | monitoring's cost | CPU µs/request: floor | /predict | /predict, monitoring off "
        "| non-2xx+errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
