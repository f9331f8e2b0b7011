"""A bounded load test of mlkit's BentoML service: starts it, drives it, checks it, stops it. Loopback only.

    .venv/bin/python reports/benchmarks/load_test.py                        # 60 s at 32 concurrent clients
    .venv/bin/python reports/benchmarks/load_test.py --duration 20 --concurrency 8

The model is made by the project's own flow into an isolated state (`--state`, see serving_common.prepare_model).
The server is `bentoml serve mlkit.serving:ModelService` (or `--target`) with `MLKIT_MONITOR_DIR` pointed at a fresh
folder. The driver is a small asyncio HTTP/1.1 keep-alive client (one connection per client, one request in
flight each, one record per request), so every request and every status is counted exactly, including the ones in
flight when the time is up (they are awaited, not cut). After `--warmup` s the RSS of the serving process tree
(psutil) is sampled, then every window, then at the end. The server is stopped with SIGTERM and, once it has
exited, every Parquet file under MLKIT_MONITOR_DIR is read with pyarrow and its rows counted.

The warm-up (35 s) outlasts the service's `traffic.timeout` (10 s in mlkit.serving.service, 30 s before) on purpose:
BentoML's TimeoutMiddleware schedules one timer per request (`loop.call_later(timeout, ...)`, never cancelled)
that holds the request's future for `timeout` seconds, so RSS rises with rate x timeout for the first `timeout`
seconds of load and is flat after. Growth measured from then on is growth that would not stop.

Targets (exit 1 and say which when one is missed): zero 5xx and zero failed connections; RSS of the tree and of
the worker(s) at the end within `--mem-tolerance` (20%) of after warm-up; p99 of the last window no worse than
`--p99-tolerance` (1.2) x the first window's; monitoring rows == successful predictions (skipped with a note while
the service writes no monitoring folder).
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from serving_common import HOST, bentoml_cmd, free_port, load_avg, prepare_model, sample_record, server  # noqa: E402


def check_monitor_logs(folder: str | Path, expected_rows: int) -> tuple[bool | None, str]:
    """Read every Parquet file under `folder` with pyarrow and count rows. (None, note) when the folder is absent
    (monitoring not written), (False, why) when a file is unreadable or rows != `expected_rows`."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    if not folder.exists():
        return (
            None,
            f"monitoring folder {folder} is absent: the service wrote no monitoring logs; check skipped",
        )
    files = sorted(p for p in folder.rglob("*.parquet") if p.is_file())
    others = sorted(p.name for p in folder.rglob("*") if p.is_file() and p.suffix != ".parquet")
    rows, bad = 0, []
    for f in files:
        try:
            rows += pq.read_table(f).num_rows
        except Exception as err:  # a truncated or half-written file
            bad.append(f"{f.name}: {err}")
    extra = f"; other files: {others[:5]}" if others else ""
    if bad:
        return False, f"{len(bad)} of {len(files)} Parquet files unreadable: {bad[:3]}{extra}"
    ok = rows == expected_rows
    return ok, f"{len(files)} Parquet files, {rows} rows; successful predictions {expected_rows}{extra}"


class Stats:
    def __init__(self, window: float) -> None:
        self.window = window
        self.lat: dict[int, list[float]] = {}
        self.status: dict[int, int] = {}
        self.failures = 0
        self.start = time.monotonic()

    def add(self, t0: float, seconds: float, status: int) -> None:
        self.lat.setdefault(int((t0 - self.start) // self.window), []).append(seconds)
        self.status[status] = self.status.get(status, 0) + 1


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    "One HTTP/1.1 response: (status, keep-alive). Content-Length or chunked bodies."
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() != "close"


async def _client(port: int, request: bytes, stop: float, stats: Stats) -> None:
    reader = writer = None
    while time.monotonic() < stop:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            t0 = time.monotonic()
            writer.write(request)
            status, keep = await _read_response(reader)
            stats.add(t0, time.monotonic() - t0, status)
            if not keep:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError):
            stats.failures += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


def drive(port: int, path: str, body: bytes, seconds: float, concurrency: int, window: float) -> Stats:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    stats = Stats(window)

    async def main() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(_client(port, request, stop, stats) for _ in range(concurrency)))

    asyncio.run(main())
    return stats


def rss(pid: int) -> tuple[float, float]:
    "MB of the whole serving tree, and of its worker process(es)."
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    total = workers = 0
    for p in procs:
        try:
            mem = p.memory_info().rss
            total += mem
            if "_bentoml_impl.worker" in " ".join(p.cmdline()):
                workers += mem
        except psutil.NoSuchProcess:
            pass
    return total / 2**20, workers / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60, help="seconds of measured load")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument(
        "--warmup",
        type=float,
        default=35,
        help="seconds of load before the first RSS sample (> traffic.timeout)",
    )
    ap.add_argument("--window", type=float, default=10, help="seconds per p99 window")
    ap.add_argument(
        "--p99-tolerance", type=float, default=1.2, help="last window p99 <= this x first window p99"
    )
    ap.add_argument("--mem-tolerance", type=float, default=0.2, help="end RSS <= (1 + this) x after warm-up")
    ap.add_argument("--target", default="mlkit.serving:ModelService", help="what `bentoml serve` serves")
    ap.add_argument("--working-dir", default=None, help="`bentoml serve --working-dir` (for other targets)")
    ap.add_argument("--path", default="/predict")
    ap.add_argument("--state", default="/tmp/mlkit-bench")
    args = ap.parse_args()

    info = prepare_model(Path(args.state))
    body = json.dumps({"records": [sample_record(info["features"])]}).encode()
    monitor_dir = (
        Path(tempfile.mkdtemp(prefix="mlkit-load-")) / "monitor"
    )  # absent until the service makes it
    port = free_port()
    cmd = bentoml_cmd(args.target, port) + (["--working-dir", args.working_dir] if args.working_dir else [])
    env = {**info["env"], "MLKIT_MONITOR_DIR": str(monitor_dir)}
    print(
        f"load test: {args.target} {args.path}, {args.concurrency} clients, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s; load average {load_avg()}; monitoring to {monitor_dir}"
    )
    failures: list[str] = []
    with server(cmd, env, "/readyz", port) as (url, proc):
        warm = drive(port, args.path, body, args.warmup, args.concurrency, args.window)
        mem_warm = rss(proc.pid)
        print(
            f"after warm-up: {sum(warm.status.values())} requests {warm.status}; RSS tree {mem_warm[0]:.0f} MB, "
            f"worker {mem_warm[1]:.0f} MB"
        )
        stats = Stats(args.window)
        samples: list[tuple[float, float]] = []
        windows = max(1, round(args.duration / args.window))
        # the load runs in chunks of one window so RSS can be sampled between them; the chunks share one Stats
        for w in range(windows):
            chunk = drive(port, args.path, body, args.window, args.concurrency, args.window)
            for _, lat in chunk.lat.items():
                stats.lat.setdefault(w, []).extend(lat)
            for s, n in chunk.status.items():
                stats.status[s] = stats.status.get(s, 0) + n
            stats.failures += chunk.failures
            samples.append(rss(proc.pid))
        mem_end = samples[-1]
        log_text = Path(proc.log).read_text(errors="replace")  # type: ignore[attr-defined]
    # the server has been stopped (SIGTERM) and has exited: its monitoring files are final now
    print("| window | requests | req/s | p50 ms | p99 ms | RSS tree / worker MB |")
    print("|---|---|---|---|---|---|")
    p99s = []
    for w in sorted(stats.lat):
        lat = np.array(stats.lat[w]) * 1e3
        p99s.append(float(np.percentile(lat, 99)))
        mem = samples[w] if w < len(samples) else (float("nan"), float("nan"))
        print(
            f"| {w * args.window:g}–{(w + 1) * args.window:g} s | {len(lat)} | {len(lat) / args.window:.0f} "
            f"| {np.percentile(lat, 50):.2f} | {p99s[-1]:.2f} | {mem[0]:.0f} / {mem[1]:.0f} |"
        )
    total = sum(stats.status.values())
    n5xx = sum(n for s, n in stats.status.items() if s >= 500)
    ok = warm.status.get(200, 0) + stats.status.get(200, 0)  # one record each: monitoring rows expected
    print(
        f"\nstatuses {stats.status} over {total} requests; failed connections {stats.failures + warm.failures}"
    )
    print(
        f"RSS after warm-up tree {mem_warm[0]:.0f} MB / worker {mem_warm[1]:.0f} MB; at end "
        f"{mem_end[0]:.0f} / {mem_end[1]:.0f} MB"
    )
    errors_in_log = sum(1 for ln in log_text.splitlines() if "[ERROR]" in ln or "Traceback" in ln)
    print(f"server log: {len(log_text.splitlines())} lines, {errors_in_log} ERROR/Traceback lines")
    if n5xx or stats.failures or warm.failures or any(s >= 500 for s in warm.status):
        failures.append(
            f"{n5xx} 5xx responses and {stats.failures + warm.failures} failed connections (want 0)"
        )
    for name, a, b in (("tree", mem_warm[0], mem_end[0]), ("worker", mem_warm[1], mem_end[1])):
        if a and b > (1 + args.mem_tolerance) * a:
            failures.append(
                f"RSS of the {name} grew {b / a - 1:+.0%} ({a:.0f} -> {b:.0f} MB), over {args.mem_tolerance:.0%}"
            )
    if len(p99s) >= 2 and p99s[-1] > args.p99_tolerance * p99s[0]:
        failures.append(
            f"p99 of the last window {p99s[-1]:.2f} ms > {args.p99_tolerance:g} x the first {p99s[0]:.2f} ms"
        )
    good, note = check_monitor_logs(monitor_dir, ok)
    print(f"monitoring logs: {note}")
    if good is False:
        failures.append(f"monitoring logs not intact: {note}")
    if failures:
        print("\nMISSED:\n- " + "\n- ".join(failures))
        sys.exit(1)
    print("\nAll load-test targets met." + ("" if good else " (monitoring check skipped)"))


if __name__ == "__main__":
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    main()
