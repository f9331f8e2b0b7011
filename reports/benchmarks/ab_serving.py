"""A/B serving: one model, shadow mode and split mode side by side (req/s, p50, p99 at c=32, worker CPU per request).

    .venv/bin/python reports/benchmarks/ab_serving.py --state /tmp/mlkit-bench --reps 2 --seconds 10

Reuses serving_common.py (the model made by the project's own flow in an isolated state, servers by process group,
wrk with a Lua POST script). The challenger is a second stored version of the same model (the same ONNX and
contract), so shadow mode's extra cost is that of one more model of the same size. Each point: a fresh
`bentoml serve` (1 worker), the experiment started in the registry before it starts (the service picks it up within
ab_poll_s), 3 s of wrk warm-up, then the measured run; CPU per request is the worker's user+system CPU time during
the measured run over the requests wrk counted (psutil). Prints a Markdown table.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_common import (  # noqa: E402
    bentoml_cmd,
    free_port,
    load_avg,
    lua_script,
    prepare_model,
    sample_record,
    server,
    wrk,
)


def challenger_of(info: dict) -> str:
    "A second stored version of the champion (same files, same metadata): the benchmark's challenger."
    from mlkit.core import get_settings
    from mlkit.registry.store import get_model, save_model

    get_settings.cache_clear()
    settings = get_settings()
    marker = Path(info["run_dir"]).parent.parent / "challenger.txt"
    if marker.exists():
        return marker.read_text().strip()
    stored = get_model(info["tag"], settings)
    files = {
        p.name: p.read_bytes() for p in Path(stored.path).iterdir() if p.is_file() and p.suffix != ".yaml"
    }
    tag = save_model(stored.tag.name, files, dict(stored.info.metadata), settings)
    marker.write_text(tag)
    return tag


def set_mode(mode: str, info: dict, challenger: str) -> None:
    "Stop any experiment; start `mode` (one: none)."
    from mlkit.core import get_settings
    from mlkit.registry.abtest import current_experiment, start_experiment, stop_experiment

    settings = get_settings()
    exp = current_experiment(settings)
    if exp is not None and exp["status"] in ("running", "rolled_back"):
        stop_experiment("benchmark", settings=settings)
    if mode == "shadow":
        start_experiment(challenger, "shadow", champion=info["tag"], settings=settings)
    elif mode == "split":
        start_experiment(challenger, "split", share=0.5, champion=info["tag"], settings=settings)


def worker(proc) -> psutil.Process:
    kids = psutil.Process(proc.pid).children(recursive=True)
    return next(k for k in kids if "_bentoml_impl.worker" in " ".join(k.cmdline()))


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def run_point(mode: str, info: dict, challenger: str, script: Path, seconds: float) -> dict:
    import httpx

    set_mode(mode, info, challenger)
    port = free_port()
    env = {**info["env"], "MLKIT_MONITOR_DIR": f"/tmp/mlkit-bench-ab-monitor/{mode}", "MLKIT_AB_POLL_S": "1"}
    with server(bentoml_cmd("mlkit.serving:ModelService", port), env, "/readyz", port) as (url, proc):
        deadline = time.monotonic() + 30
        while (httpx.get(url + "/metadata").json()["experiment"] is None) != (mode == "one model"):
            assert time.monotonic() < deadline, f"{mode}: the service did not pick the experiment up"
            time.sleep(0.2)
        wrk(url + "/predict", script, 32, 3)  # warm-up
        w = worker(proc)
        before = cpu(w)
        out = wrk(url + "/predict", script, 32, seconds)
        out["cpu_ms_per_request"] = (cpu(w) - before) / out["requests"] * 1e3
        alone = wrk(url + "/predict", script, 1, seconds / 2)  # one caller: what shadow adds to its latency
        out |= {"c1_p50_ms": alone["p50_ms"], "c1_p99_ms": alone["p99_ms"]}
        out["non2xx"] += alone["non2xx"]
        out["errors"] += alone["errors"]
        counts = httpx.get(url + "/metadata").json()["experiment"]
        out["counts"] = counts["counts"] if counts else {}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", default="/tmp/mlkit-bench")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    info = prepare_model(Path(args.state))
    os.environ.update(info["env"])
    challenger = challenger_of(info)
    script = lua_script({"records": [sample_record(info["features"])]})
    modes = ["one model", "shadow", "split"]
    results = {m: [] for m in modes}
    print(f"load average before: {load_avg()}", file=sys.stderr)
    for rep in range(args.reps):
        for mode in modes:  # interleaved, so that a noisy neighbour hurts every mode alike
            r = run_point(mode, info, challenger, script, args.seconds)
            results[mode].append(r)
            print(f"round {rep + 1} {mode}: {json.dumps(r)}", file=sys.stderr)
    set_mode("one model", info, challenger)
    print(f"load average after: {load_avg()}", file=sys.stderr)
    print(
        "| mode | c32 req/s median (min-max) | c32 p50 ms | c32 p99 ms | worker CPU ms/request | c1 p50 ms "
        "| c1 p99 ms | non-2xx+errors |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for mode, rs in results.items():
        rps = [r["rps"] for r in rs]

        def med(key: str, rs=rs) -> float:
            return statistics.median(r[key] for r in rs)

        bad = sum(r["non2xx"] + r["errors"] for r in rs)
        print(
            f"| {mode} | {statistics.median(rps):.0f} ({min(rps):.0f}-{max(rps):.0f}) | {med('p50_ms'):.2f} | "
            f"{med('p99_ms'):.2f} | {med('cpu_ms_per_request'):.3f} | {med('c1_p50_ms'):.3f} "
            f"| {med('c1_p99_ms'):.3f} | {bad} |"
        )
    print()
    for mode, rs in results.items():
        print(f"- {mode}: variant counts of the last round {rs[-1]['counts']}")


if __name__ == "__main__":
    main()
