"""Benchmark: the point-in-time join of mlkit's feature store (DuckDB ASOF JOIN) against pandas `merge_asof`.

    python reports/benchmarks/asof_join.py                      # 5M feature rows x 500k label rows
    python reports/benchmarks/asof_join.py --features 200000 --labels 20000 --repeat 1   # a quick smoke run

The data is generated deterministically (numpy, seed 0) into a work folder: a feature view of `--features` rows
(an entity key, an event timestamp, three features, a 30-day TTL) written through `mlkit.data.features.FeatureStore`,
and `--labels` label rows. Each method then runs in its own fresh Python process, so its peak resident memory
(`ru_maxrss`) is its own: both processes import the same modules and read the labels the same way before the clock
starts; the timed part is the whole retrieval, from the Parquet files on disk to a pandas frame of the labels with
their features, in the labels' order. Each process times the call twice: first in a fresh process (cold: DuckDB
starts its threads, every library touches its memory for the first time), then again in the same process (warm,
as in a notebook or a server that retrieves more than once). The results of the methods are compared (same values, same missing cells).

Peak memory is the process's VmHWM (/proc/self/status): unlike `ru_maxrss`, which Linux carries over from the
parent through fork and exec, it is this process's own. The data is generated in a child process too, so the parent
stays small.
"""

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TTL_DAYS = 30
FEATURES = ["f1", "f2", "f3"]


def generate(workdir: Path, n_features: int, n_labels: int, n_entities: int, seed: int = 0) -> None:
    "Feature rows (one per entity and week, jittered, shuffled) and label rows, written under `workdir`."
    import numpy as np
    import pandas as pd

    from mlkit.data.features import FeatureStore, FeatureView

    shutil.rmtree(
        workdir / "store", ignore_errors=True
    )  # a rerun starts from the same data, not twice as much
    rng = np.random.default_rng(seed)
    weeks = -(-n_features // n_entities)
    entity = np.repeat(np.arange(n_entities), weeks)[:n_features]
    week = np.tile(np.arange(weeks), n_entities)[:n_features]
    start = np.datetime64("2024-01-01T00:00:00", "s")
    seconds = week * 7 * 86400 + rng.integers(0, 7 * 86400, n_features)
    order = rng.permutation(n_features)  # shuffled: neither method gets sorted input
    features = pd.DataFrame(
        {
            "customer_id": entity[order],
            "ts": (start + seconds[order].astype("timedelta64[s]")).astype("datetime64[us]"),
            "f1": rng.normal(size=n_features),
            "f2": rng.normal(size=n_features),
            "f3": rng.integers(0, 1000, n_features),
        }
    )
    store = FeatureStore(workdir / "store")
    store.write(FeatureView("activity", "customer_id", "ts", FEATURES, ttl=f"{TTL_DAYS}D"), features)
    span = (weeks + 2) * 7 * 86400
    labels = pd.DataFrame(
        {
            "customer_id": rng.integers(0, n_entities + n_entities // 100, n_labels),  # 1% unknown customers
            "timestamp": (start + rng.integers(0, span, n_labels).astype("timedelta64[s]")).astype(
                "datetime64[us]"
            ),
            "churned": rng.integers(0, 2, n_labels),
        }
    )
    labels.to_parquet(workdir / "labels.parquet", index=False)


_STORES = {}


def run_duckdb(workdir: Path, memory_limit: str | None, threads: int | None = None):
    import pandas as pd

    from mlkit.data.features import FeatureStore

    labels = pd.read_parquet(workdir / "labels.parquet")
    start = time.perf_counter()
    key = (memory_limit, threads)
    if key not in _STORES:  # opened in the timed part; the warm call reuses it, as a long-lived process would
        _STORES[key] = FeatureStore(
            workdir / "store", memory_limit=memory_limit, temp_directory=workdir / "spill", threads=threads
        )
    store = _STORES[key]
    frame = store.get_training_frame(labels, ["activity"])
    return frame, time.perf_counter() - start


def run_pandas(workdir: Path, memory_limit: str | None):
    import pandas as pd

    labels = pd.read_parquet(workdir / "labels.parquet")
    start = time.perf_counter()
    parts = sorted((workdir / "store" / "activity").glob("part-*.parquet"))
    features = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    features = features.rename(columns={"ts": "__event"}).sort_values("__event")
    left = labels.assign(__row=range(len(labels))).sort_values("timestamp")
    joined = pd.merge_asof(left, features, left_on="timestamp", right_on="__event", by="customer_id")
    stale = joined["__event"] < joined["timestamp"] - pd.Timedelta(days=TTL_DAYS)
    joined.loc[stale, FEATURES] = None
    frame = joined.sort_values("__row").drop(columns=["__row", "__event"]).reset_index(drop=True)
    return frame, time.perf_counter() - start


METHODS = {
    "pandas": run_pandas,
    "duckdb": run_duckdb,
    "duckdb-1-thread": lambda workdir, memory_limit: run_duckdb(workdir, memory_limit, threads=1),
}


def peak_rss_mb() -> float:
    "This process's peak resident memory in MB: VmHWM where Linux has it, else ru_maxrss."
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(method: str, workdir: Path, memory_limit: str | None) -> None:
    "Run one method in this process and print its numbers as JSON."
    import pandas as pd

    import mlkit.data.features  # noqa: F401  (both methods start from the same imports and the labels in memory)

    pd.read_parquet(workdir / "labels.parquet")
    rss_before = peak_rss_mb()
    frame, seconds = METHODS[method](workdir, memory_limit)
    del frame
    frame, again = METHODS[method](workdir, memory_limit)  # the same call again, in a process already warm
    values = frame[FEATURES].astype("float64")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "warm_seconds": again,
                "peak_rss_mb": peak_rss_mb(),
                "rss_before_mb": rss_before,
                "rows": len(frame),
                "missing": int(values.isna().sum().sum()),
                "checksum": float(values.fillna(0).abs().sum().sum()),
                "order": frame["customer_id"].head(1000).tolist(),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=int, default=5_000_000, help="feature rows")
    p.add_argument("--labels", type=int, default=500_000, help="label rows")
    p.add_argument("--entities", type=int, default=100_000, help="distinct entities")
    p.add_argument(
        "--repeat", type=int, default=5, help="fresh processes per method; the median time is reported"
    )
    p.add_argument("--memory-limit", default="256MB", help="DuckDB memory limit of the extra, spilling run")
    p.add_argument(
        "--workdir", type=Path, default=None, help="where to generate the data (default: a temp folder)"
    )
    p.add_argument("--child", nargs=2, metavar=("METHOD", "MEMORY_LIMIT"), help=argparse.SUPPRESS)
    p.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mlkit-asof-"))
    if args.child:
        child(args.child[0], workdir, None if args.child[1] == "-" else args.child[1])
        return
    if args.generate_only:
        t = time.perf_counter()
        generate(workdir, args.features, args.labels, args.entities)
        print(
            f"generated {args.features:,} feature rows and {args.labels:,} label rows under {workdir} "
            f"in {time.perf_counter() - t:.1f}s (the store sorts each part by entity and time as it writes it)"
        )
        return
    cmd = [
        sys.executable,
        __file__,
        "--generate-only",
        "--workdir",
        str(workdir),
        "--features",
        str(args.features),
        "--labels",
        str(args.labels),
        "--entities",
        str(args.entities),
    ]
    print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())
    runs = [
        ("pandas merge_asof", "pandas", "-"),
        ("mlkit FeatureStore (DuckDB ASOF JOIN)", "duckdb", "-"),
        ("mlkit FeatureStore, threads=1 (pandas uses one core)", "duckdb-1-thread", "-"),
    ]
    if args.memory_limit:
        runs.append((f"mlkit FeatureStore, memory_limit={args.memory_limit}", "duckdb", args.memory_limit))
    results = {}
    for label, method, limit in runs:
        outs = []
        for _ in range(args.repeat):
            cmd = [sys.executable, __file__, "--workdir", str(workdir), "--child", method, limit]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{label} failed:\n{done.stderr}")
            outs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        results[label] = outs
    reference = results[runs[0][0]][0]
    print(
        f"\n{args.features:,} feature rows x {args.labels:,} label rows, {args.entities:,} entities, "
        f"TTL {TTL_DAYS} days; median of {args.repeat} fresh processes\n"
    )
    print(
        "| method | wall time, cold (s) | wall time, warm (s) | peak RSS (MB) | RSS before the timed part (MB) "
        "| same result as pandas |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for label, outs in results.items():
        same = all(
            o["rows"] == reference["rows"]
            and o["missing"] == reference["missing"]
            and o["order"] == reference["order"]
            and abs(o["checksum"] - reference["checksum"]) <= 1e-6 * abs(reference["checksum"])
            for o in outs
        )
        print(
            f"| {label} | {statistics.median(o['seconds'] for o in outs):.2f} "
            f"| {statistics.median(o['warm_seconds'] for o in outs):.2f} "
            f"| {max(o['peak_rss_mb'] for o in outs):.0f} | {statistics.median(o['rss_before_mb'] for o in outs):.0f} "
            f"| {'yes' if same else 'NO'} |"
        )
    for when, key in [("cold", "seconds"), ("warm", "warm_seconds")]:
        base = statistics.median(o[key] for o in results[runs[0][0]])
        fast = statistics.median(o[key] for o in results[runs[1][0]])
        print(f"\nspeed-up of the DuckDB retrieval over pandas, {when}: {base / fast:.1f}x", end="")
    print()


if __name__ == "__main__":
    main()
