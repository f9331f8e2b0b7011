"""mlkit's BentoML service against a classic FastAPI + uvicorn + joblib service, BentoML's own floor and the
in-process ONNX ceiling: same model, same record, one run, one worker each, loopback only.

    .venv/bin/python reports/benchmarks/serving_bench.py --reps 2 > reports/benchmarks/serving.md

The model is made by the project's own flow (the experiment notebook run by papermill for logreg and gbm, the best
one exported) into an isolated state folder (`--state`, reused when present; tests/conftest.py's isolated_env).
Servers, each started fresh per repetition:
  (a) baseline_fastapi.py under uvicorn, 1 worker, no access log: POST /predict, one record
  (b) `bentoml serve mlkit.serving:ModelService`: POST /predict, one record (monitoring to a temp MLKIT_MONITOR_DIR),
      and (b'') POST /predict with each `--batch-rows` size of request (rows/s, c32)
  (c) the same server's POST /predict_batch with each `--batch-rows` size (rows/s), and one record at concurrency 1
      (what adaptive batching adds for a lone caller)
  (e) serving_floor.py: a constant answer with mlkit's service config, from a @bentoml.api and from an ASGI
      middleware
and (d) in process: onnxruntime through mlkit's OnnxClassifier, and the service's hot path (ServingCore.matrix,
predict_matrix, JSON; monitoring off) without a server. wrk -t1 with a Lua POST script; every point: `--warmup` s discarded, then
`--seconds` s measured; `--reps` repetitions, reported as median (min–max). Exits 1 when a target is missed.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serving_common import (  # noqa: E402
    HOST,
    bentoml_cmd,
    free_port,
    load_avg,
    lua_script,
    point,
    prepare_model,
    sample_record,
    server,
)

HERE = Path(__file__).parent


def post(url: str, body: dict) -> tuple[int, bytes]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def in_process(info: dict, rec: dict, rows: list[int], seconds: float = 2.0) -> dict:
    "(d) the ceiling: calls/s of onnxruntime (via OnnxClassifier) and of the service's hot path, in this process."
    import msgspec

    from mlkit.core import load_settings
    from mlkit.serving.core import ServingCore

    settings = load_settings(Path(tempfile.mkdtemp(prefix="mlkit-bench-")), environ={"MLKIT_MONITOR_DIR": ""})
    # no drift profile, no log: the model's path
    core = ServingCore(info["onnx"], info, info["tag"], settings)
    one = json.dumps({"records": [rec]}).encode()

    def rate(fn) -> float:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(50):
                fn()
            n += 50
        return n / (time.perf_counter() - t0)

    def hot(raw: bytes):  # what the gateway does for POST /predict: body to matrix, predict, JSON
        return msgspec.json.encode(core.predict_matrix(core.matrix(raw)))

    out = {"onnx_1": rate(lambda: core.classifier.predict_records([rec])), "hot_1": rate(lambda: hot(one))}
    for n in rows:
        many = json.dumps({"records": [rec] * n}).encode()
        out[f"hot_rows_{n}"] = rate(lambda m=many: hot(m)) * n
    return out


def run_baseline(info: dict, rec: dict, args) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "baseline_fastapi:app", "--app-dir", str(HERE)]
    cmd += [
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    env = {**info["env"], "BASELINE_MODEL_INFO": str(Path(args.state) / "model.json")}
    script = lua_script({"records": [rec]})
    with server(cmd, env, "/healthz", port) as (url, _):
        status, body = post(url + "/predict", {"records": [rec]})
        assert status == 200, body
        return {
            "predict32": point(url + "/predict", script, 32, args.seconds, args.warmup),
            "predict1": point(url + "/predict", script, 1, args.seconds, args.warmup),
        }


def run_mlkit(info: dict, rec: dict, args, monitor_dir: str, extra_env: dict | None = None) -> dict:
    port = free_port()
    env = {**info["env"], "MLKIT_MONITOR_DIR": monitor_dir, **(extra_env or {})}
    out: dict = {}
    with server(bentoml_cmd("mlkit.serving:ModelService", port), env, "/readyz", port) as (url, _):
        status, body = post(url + "/predict", {"records": [rec]})
        assert status == 200, body
        one = lua_script({"records": [rec]})
        out["predict32"] = point(url + "/predict", one, 32, args.seconds, args.warmup)
        if extra_env:  # a second configuration (e.g. monitoring off): the c32 point is enough
            return out
        out["predict1"] = point(url + "/predict", one, 1, args.seconds, args.warmup)
        for n in sizes(args):
            many = lua_script({"records": [rec] * n})
            out[f"multi32_{n}"] = point(url + "/predict", many, 32, args.seconds, args.warmup)
            status, body = post(url + "/predict_batch", {"records": [rec] * n})
            assert status == 200, body
            for c in [c for m, c in args.batch_rows if m == n]:
                out[f"batch{c}_{n}"] = point(url + "/predict_batch", many, c, args.seconds, args.warmup)
        out["batch1"] = point(url + "/predict_batch", one, 1, args.seconds, args.warmup)
        out["batched"] = batch_metrics(url)
    return out


def sizes(args) -> list[int]:
    "The distinct request sizes of --batch-rows, in order."
    return list(dict.fromkeys(n for n, _ in args.batch_rows))


def batch_metrics(url: str) -> dict:
    "What the service's /metrics says of its batch endpoint: model calls and the rows they predicted."
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("mlkit_batch_rows_count", "mlkit_batch_rows_sum"):
            found[name.rsplit("_", 1)[1]] = float(value)
    return found


def run_floor(info: dict, rec: dict, args) -> dict:
    out = {}
    script = lua_script({"records": [rec]})
    for name in ("FloorApi", "FloorMiddleware"):
        port = free_port()
        cmd = [*bentoml_cmd(f"serving_floor:{name}", port), "--working-dir", str(HERE)]
        env = {**info["env"], "MLKIT_MONITOR_DIR": tempfile.mkdtemp(prefix="mlkit-floor-mon-")}
        with server(cmd, env, "/readyz", port) as (url, _):
            out[name] = point(url + "/const", script, 32, args.seconds, args.warmup)
    return out


def med(rs: list[dict], *keys: str) -> list[float]:
    vals = []
    for r in rs:
        for k in keys[:-1]:
            r = r.get(k) if r else None
        if r and r.get(keys[-1]) is not None:
            vals.append(r[keys[-1]])
    return vals


def cell(vals: list[float], digits: int = 0) -> str:
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.median(vals):.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


def max_latency_ms() -> float | None:
    "The configured max_latency_ms of mlkit's /predict_batch, when it exists."
    try:
        from mlkit.serving.service import ModelService

        api = ModelService.apis.get("predict_batch")
        return float(api.max_latency_ms) if api is not None and api.batchable else None
    except Exception as err:  # the service module needs the model store; report, do not fail
        print(f"note: could not read max_latency_ms from mlkit.serving.service: {err}", file=sys.stderr)
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--state", default="/tmp/mlkit-bench", help="isolated mlkit state (model made once, reused)"
    )
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument(
        "--batch-rows",
        type=lambda s: [(int(n), int(c or 32)) for n, _, c in (x.partition(":") for x in s.split(","))],
        default=[(100, 32), (1000, 32), (1000, 8)],
        help="records per request of the multi-record points, comma-separated, each with ':clients' "
        "(default 32) for its /predict_batch point; /predict is measured at c32 for each size",
    )
    ap.add_argument(
        "--monitor-off",
        default="MLKIT_MONITOR_DIR=",
        metavar="ENV=VALUE",
        help="environment that switches mlkit's monitoring off (settings.ini: an empty monitor_dir logs nothing); "
        "adds a /predict c32 point without monitoring; '' to skip",
    )
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args()
    info = prepare_model(Path(args.state))
    rec = sample_record(info["features"])
    load_before = load_avg()
    res: dict[str, list] = {"baseline": [], "mlkit": [], "floor": [], "mlkit_nomon": []}
    for rep in range(args.reps):
        res["baseline"].append(run_baseline(info, rec, args))
        res["mlkit"].append(run_mlkit(info, rec, args, tempfile.mkdtemp(prefix="mlkit-bench-mon-")))
        if args.monitor_off:
            k, _, v = args.monitor_off.partition("=")
            res["mlkit_nomon"].append(run_mlkit(info, rec, args, "", {k: v}))
        res["floor"].append(run_floor(info, rec, args))
        print(
            f"rep {rep}: {json.dumps({k: v[-1] for k, v in res.items() if v})}", file=sys.stderr, flush=True
        )
    os.environ.update(info["env"])
    ceiling = in_process(info, rec, sizes(args))
    if args.json:
        Path(args.json).write_text(json.dumps({**res, "in_process": ceiling}, indent=1))
    report(res, ceiling, args, load_before, info)


def report(res: dict, ceiling: dict, args, load_before: str, info: dict) -> None:
    b, m, f = res["baseline"], res["mlkit"], res["floor"]
    given = ",".join(f"{n}:{c}" for n, c in args.batch_rows)
    print("# Serving: mlkit's BentoML service against FastAPI + joblib\n")
    print(
        f"Command: `.venv/bin/python reports/benchmarks/serving_bench.py --reps {args.reps} --seconds "
        f"{args.seconds:g} --warmup {args.warmup:g} --batch-rows {given}"
        + (f" --monitor-off {args.monitor_off}" if args.monitor_off else "")
        + f"` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores shared with other work, load average "
        f"before {load_before}, after {load_avg()}). Model `{info['tag']}`; one record of breast_cancer "
        f"(30 float features). wrk -t1, loopback, one server worker; {args.warmup:g} s warm-up then "
        f"{args.seconds:g} s per point; median (min–max) over {args.reps} runs, servers restarted per run.\n"
    )
    print(
        "| service | c32 req/s | c32 p50 ms | c32 p99 ms | c1 req/s | c1 p50 ms | c1 p99 ms | non-2xx+errors |"
    )
    print("|---|---|---|---|---|---|---|---|")

    def row(name: str, rs: list[dict], k32: str, k1: str | None, scale: float = 1.0, unit: str = "") -> None:
        c1 = (
            [cell(med(rs, k1, x), d) for x, d in (("rps", 0), ("p50_ms", 2), ("p99_ms", 2))]
            if k1
            else ["-"] * 3
        )
        bad = sum(r[k]["non2xx"] + r[k]["errors"] for r in rs for k in (k32, k1) if k and r.get(k))
        rate = cell([v * scale for v in med(rs, k32, "ok_rps" if unit else "rps")])  # rows: answered ones
        print(
            f"| {name} | {rate}{unit} | {cell(med(rs, k32, 'p50_ms'), 2)} | {cell(med(rs, k32, 'p99_ms'), 2)} "
            f"| {' | '.join(c1)} | {bad} |"
        )

    row("(a) FastAPI + uvicorn + joblib, /predict 1 record", b, "predict32", "predict1")
    row("(b) mlkit `bentoml serve`, /predict 1 record", m, "predict32", "predict1")
    if res["mlkit_nomon"]:
        row("(b') mlkit, monitoring off", res["mlkit_nomon"], "predict32", None)
    for n in sizes(args):
        row(f"(b'') mlkit /predict, {n} records/request (rows/s)", m, f"multi32_{n}", None, n, " rows/s")
    for i, (n, c) in enumerate(args.batch_rows):
        last = i == len(args.batch_rows) - 1  # the lone caller's point (1 record, c1) goes on the last row
        name = f"(c) mlkit /predict_batch, {n} rows/request, {c} clients (rows/s in the c32 columns)"
        row(
            name + (" (c1: 1 record)" if last else ""),
            m,
            f"batch{c}_{n}",
            "batch1" if last else None,
            n,
            " rows/s",
        )
    row("(e) BentoML floor: constant @bentoml.api, mlkit's config", f, "FloorApi", None)
    row("(e') BentoML floor: constant from an ASGI middleware, mlkit's config", f, "FloorMiddleware", None)
    print(
        f"\n(d) in process, one thread, no server: onnxruntime via OnnxClassifier {ceiling['onnx_1']:.0f} calls/s "
        f"(1 record); the service's hot path (ServingCore.matrix + predict_matrix + JSON, monitoring off) {ceiling['hot_1']:.0f} "
        f"calls/s (1 record), "
        + ", ".join(f"{ceiling[f'hot_rows_{n}']:.0f} rows/s ({n} records per call)" for n in sizes(args))
        + ".\n"
    )
    calls = [r["batched"] for r in m if r.get("batched", {}).get("count")]
    if calls:
        print(
            "Adaptive batching, from the service's /metrics at the end of each run: "
            + "; ".join(
                f"{c['sum'] / c['count']:.0f} rows per model call ({c['count']:.0f} calls)" for c in calls
            )
            + " over all /predict_batch points of the run.\n"
        )
    checks = []
    bm = statistics.median(med(b, "predict32", "rps"))
    mm = statistics.median(med(m, "predict32", "rps"))
    checks.append((f"mlkit /predict c32 {mm:.0f} req/s >= FastAPI baseline {bm:.0f}", mm >= bm))
    b1 = statistics.median(med(b, "predict1", "p50_ms"))
    m1 = statistics.median(med(m, "predict1", "p50_ms"))
    checks.append((f"mlkit /predict c1 p50 {m1:.2f} ms <= baseline {b1:.2f} ms", m1 <= b1))
    for floor in ("FloorApi", "FloorMiddleware"):
        fl = statistics.median(med(f, floor, "rps"))
        over = fl / mm - 1  # per-request time over the floor's: (1/mm - 1/fl) / (1/fl)
        checks.append(
            (
                f"model+validation+monitoring over the {floor} floor ({fl:.0f} req/s): {over:+.0%} <= 10%",
                over <= 0.10,
            )
        )
    bad = sum(
        r[k]["non2xx"] + r[k]["errors"] for r in m for k in r if isinstance(r[k], dict) and "non2xx" in r[k]
    )
    checks.append((f"mlkit answered every request with 2xx ({bad} non-2xx or socket errors)", bad == 0))
    for n, c in [
        (n, c) for n, c in args.batch_rows if c == 32
    ]:  # the target's load; other points are context
        rows = statistics.median(med(m, f"batch{c}_{n}", "ok_rps")) * n
        checks.append(
            (
                f"/predict_batch, {n} rows/request at c{c}: {rows:.0f} rows/s answered >= 20x /predict {mm:.0f} rows/s",
                rows >= 20 * mm,
            )
        )
    lat = max_latency_ms()
    added = statistics.median(med(m, "batch1", "p50_ms")) - m1
    if lat is not None:
        checks.append(
            (
                f"adaptive batching adds {added:.2f} ms (p50) for a lone caller <= max_latency_ms {lat:g}",
                added <= lat,
            )
        )
    if res["mlkit_nomon"]:
        off = statistics.median(med(res["mlkit_nomon"], "predict32", "rps"))
        cost = off / mm - 1
        checks.append(
            (
                f"monitoring costs {cost:+.0%} of throughput (off {off:.0f} vs on {mm:.0f} req/s) < 10%",
                cost < 0.10,
            )
        )
    else:
        print("Note: no --monitor-off given; the monitoring cost was not measured.\n")
    print("Targets:\n")
    for text, ok in checks:
        print(f"- {'PASS' if ok else 'MISS'}: {text}")
    if not all(ok for _, ok in checks):
        print("\nSome targets were missed.", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
