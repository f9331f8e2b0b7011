"""Where BentoML's per-request time goes, and what cuts it: every class in serving_variants.py under wrk, same model,
one run; optionally a py-spy profile of the worker under load.

    .venv/bin/python reports/benchmarks/serving_profile.py --reps 2                       # the variant table
    .venv/bin/python reports/benchmarks/serving_profile.py --variants Default Middleware \\
        --pyspy /tmp/mlkit-pyspy --reps 0                                                   # py-spy profiles only

Loopback only; one worker per server; wrk -t1. Points: POST /const at 32 connections (BentoML's floor for that
config), POST /predict with one record at 32 and at 1 connection. Each point: `--warmup` s discarded, `--seconds` s
measured, repeated `--reps` times (servers restarted between reps, variants interleaved).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serving_common import (  # noqa: E402
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
VARIANTS = [
    "Default",
    "DefaultAsync",
    "NoMetrics",
    "NoAccessLog",
    "NoTracing",
    "Lean",
    "LeanAsync",
    "Mounted",
    "Middleware",
    "MiddlewareMon",
]


def worker_pid(proc) -> int:
    "The BentoML worker process under `bentoml serve` (the child that runs the service)."
    import psutil

    kids = psutil.Process(proc.pid).children(recursive=True)
    for k in kids:
        if "_bentoml_impl.worker" in " ".join(k.cmdline()):
            return k.pid
    return kids[-1].pid if kids else proc.pid


def run_variant(name: str, info: dict, rec: dict, args) -> dict:
    port = free_port()
    cmd = [*bentoml_cmd(f"serving_variants:{name}", port), "--working-dir", str(HERE)]
    env = {**info["env"], "MLKIT_MONITOR_DIR": f"/tmp/mlkit-bench-monitor/{name}"}
    prefix = "/fast" if name == "Mounted" else ""
    predict = lua_script({"records": [rec]})
    const = lua_script({"records": [rec]})
    out = {}
    with server(cmd, env, "/readyz", port) as (url, proc):
        if args.pyspy:
            pid = worker_pid(proc)
            Path(args.pyspy).mkdir(parents=True, exist_ok=True)
            for path, script in [("/const", const), ("/predict", predict)]:
                stem = f"{args.pyspy}/{name}{path.replace('/', '_')}"
                spy = subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(int(args.seconds)),
                        "--rate",
                        "200",
                    ]
                    + ["--format", "raw", "--output", f"{stem}.txt", "--nonblocking"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(0.5)
                r = point(url + prefix + path, script, 32, args.seconds, args.warmup)
                spy.wait()
                out[f"spy{path}"] = r
        else:
            out["const32"] = point(url + prefix + "/const", const, 32, args.seconds, args.warmup)
            out["predict32"] = point(url + prefix + "/predict", predict, 32, args.seconds, args.warmup)
            out["predict1"] = point(url + prefix + "/predict", predict, 1, args.seconds, args.warmup)
    return out


def summarize(raw: Path, top: int = 25) -> str:
    """A py-spy raw (collapsed) profile as text: share of CPU samples under each function (inclusive), most first,
    and the functions the CPU was in (self)."""
    incl: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [f for f in stack.split(";")[1:] if f]  # drop the thread name
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
    site = "site-packages/"
    short = lambda f: f.split(site)[-1]  # noqa: E731
    lines = [f"{raw.name}: {total} samples (200 Hz, active CPU only)", "inclusive:"]
    for f, c in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * c / total:5.1f}%  {short(f)}")
    lines.append("self:")
    for f, c in sorted(own.items(), key=lambda kv: -kv[1])[:12]:
        lines.append(f"  {100 * c / total:5.1f}%  {short(f)}")
    return "\n".join(lines)


def fmt(vals: list[float], digits: int = 0) -> str:
    if not vals:
        return "-"
    med = statistics.median(vals)
    return f"{med:.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", default="/tmp/mlkit-bench")
    ap.add_argument("--variants", nargs="*", default=VARIANTS)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument(
        "--pyspy", default=None, help="folder for py-spy raw profiles (one 32-connection run each)"
    )
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--summarize", nargs="*", default=None, help="print summaries of these py-spy raw files")
    args = ap.parse_args()
    if args.summarize:
        for f in args.summarize:
            print(summarize(Path(f)), "\n")
        return
    info = prepare_model(Path(args.state))
    rec = sample_record(info["features"])
    print(f"model {info['tag']}; load average before: {load_avg()}", file=sys.stderr)
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    if args.pyspy:
        for v in args.variants:
            r = run_variant(v, info, rec, args)
            print(v, json.dumps(r), file=sys.stderr)
        return
    for rep in range(args.reps):
        for v in args.variants:
            r = run_variant(v, info, rec, args)
            results[v].append(r)
            print(f"rep {rep} {v} {json.dumps(r)} load {load_avg()}", file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(
        "| variant | /const c32 req/s | /predict c32 req/s | /predict c32 p99 ms | /predict c1 req/s "
        "| /predict c1 p50 ms | predict cost over floor (c32) | non-2xx / errors |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for v, rs in results.items():
        c = [r["const32"]["rps"] for r in rs]
        p = [r["predict32"]["rps"] for r in rs]
        over = [1 / r["predict32"]["rps"] / (1 / r["const32"]["rps"]) - 1 for r in rs]
        bad = sum(r[k]["non2xx"] + r[k]["errors"] for r in rs for k in r)
        print(
            f"| {v} | {fmt(c)} | {fmt(p)} | {fmt([r['predict32']['p99_ms'] for r in rs], 1)} "
            f"| {fmt([r['predict1']['rps'] for r in rs])} | {fmt([r['predict1']['p50_ms'] for r in rs], 2)} "
            f"| {fmt([100 * o for o in over])} % | {bad} |"
        )
    print(f"\nload average after: {load_avg()}")


if __name__ == "__main__":
    main()
