"""/predict at 32 connections with 1 and 2 `bentoml serve` workers, and the cost of the write-ahead prediction log.

    .venv/bin/python reports/benchmarks/serving_workers.py --state /tmp/mlkit-bench --reps 3 --seconds 10
    .venv/bin/python reports/benchmarks/serving_workers.py --old-tree /tmp/old   # + the same at another checkout

Each configuration: a fresh server (MLKIT_WORKERS, MLKIT_MONITOR_DIR on or empty), a 3 s wrk warm-up, then
`--seconds` of wrk -t1 -c32 posting one breast_cancer record; median (min-max) over `--reps` rounds, the
configurations interleaved within a round so that the machine's other load falls on all of them alike.
`--old-tree` serves the same model from another checkout of mlkit (e.g. `git worktree add /tmp/old <commit>`, the
prediction log before it was written ahead) for a before/after of the log's cost. Needs wrk (apt-get install wrk).
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serving_common import (  # noqa: E402
    ROOT,
    bentoml_cmd,
    free_port,
    load_avg,
    lua_script,
    point,
    prepare_model,
    sample_record,
    server,
)


def run(info: dict, workers: int, monitor: bool, seconds: float, tree: Path = ROOT) -> dict:
    port = free_port()
    folder = Path(info["env"]["MLKIT_MONITOR_DIR"]).parent / f"monitor-bench-{port}"
    env = {**info["env"], "MLKIT_WORKERS": str(workers), "MLKIT_MONITOR_DIR": str(folder) if monitor else ""}
    if tree != ROOT:
        env["PYTHONPATH"] = str(tree)
    script = lua_script({"records": [sample_record(info["features"])]})
    with server(bentoml_cmd("mlkit.serving:ModelService", port), env, "/readyz", port, cwd=tree) as (url, _):
        return point(url + "/predict", script, 32, seconds, warmup=3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", default="/tmp/mlkit-bench")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--old-tree", type=Path, default=None)
    args = ap.parse_args()
    info = prepare_model(Path(args.state))
    configs = {
        "1 worker, log on": (1, True, ROOT),
        "2 workers, log on": (2, True, ROOT),
        "1 worker, log off": (1, False, ROOT),
        "2 workers, log off": (2, False, ROOT),
    }
    if args.old_tree:
        configs["1 worker, log on, old tree"] = (1, True, args.old_tree)
    print(f"load average before: {load_avg()}; {os.cpu_count()} cores", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for rep in range(args.reps):
        for name, (workers, monitor, tree) in configs.items():
            r = run(info, workers, monitor, args.seconds, tree)
            results[name].append(r)
            print(rep, name, json.dumps({k: round(v, 2) for k, v in r.items()}), flush=True)
    print(f"load average after: {load_avg()}")
    print(
        "\n| configuration | req/s median (min-max) | p50 ms | p99 ms | non-2xx+errors |\n|---|---|---|---|---|"
    )
    for name, rs in results.items():
        rps = [r["ok_rps"] for r in rs]
        p50, p99 = (statistics.median(r[k] for r in rs) for k in ("p50_ms", "p99_ms"))
        bad = sum(r["non2xx"] + r["errors"] for r in rs)
        print(
            f"| {name} | {statistics.median(rps):.0f} ({min(rps):.0f}-{max(rps):.0f}) | {p50:.2f} | {p99:.2f} | {bad} |"
        )


if __name__ == "__main__":
    main()
