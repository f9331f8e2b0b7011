"""Shared pieces of the serving benchmarks: a model made by the project's own flow in an isolated state, servers
started and stopped by process group, and wrk driven with a Lua POST script. Loopback only.

    .venv/bin/python reports/benchmarks/serving_common.py /tmp/mlkit-bench   # just prepare the model, print its tag
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import NOTEBOOK, isolated_env  # noqa: E402  (the fixtures' own isolation, reused)

HOST = "127.0.0.1"
WRK = shutil.which("wrk")


def prepare_model(state: Path) -> dict:
    """Run the experiment notebook (logreg and gbm, as tests/conftest.py does), export the best run, all under
    `state`. Reused when `state/model.json` exists. Returns tag, run_dir, features, env."""
    state = state.resolve()
    env = {**isolated_env(state), "BENTOML_HOME": str(state / "bentoml")}
    os.environ.update(env)
    os.environ.pop("WANDB_API_KEY", None)
    marker = state / "model.json"
    if not marker.exists():
        state.mkdir(parents=True, exist_ok=True)
        from mlkit.core import get_settings
        from mlkit.registry.export import export_run
        from mlkit.runs.runner import run_notebook
        from mlkit.runs.store import RunStore, best_run

        get_settings.cache_clear()
        settings = get_settings()
        store = RunStore(settings.run_db)
        runs = [
            run_notebook(NOTEBOOK, {"model": "logreg", "C": 0.5}, settings=settings, store=store),
            run_notebook(NOTEBOOK, {"model": "gbm", "n_estimators": 30}, settings=settings, store=store),
        ]
        exported = export_run(best_run(runs).id, settings=settings, store=store)
        from mlkit.registry.store import get_model

        meta = get_model(exported.tag, settings).info.metadata
        info = {
            "tag": str(exported.tag),
            "run_dir": str(Path(settings.runs_dir) / meta["run_id"]),
            "features": meta["features"],
            "classes": meta["classes"],
            "onnx": str(get_model(exported.tag, settings).path_of("model.onnx")),
        }
        marker.write_text(json.dumps(info, indent=1))
    info = json.loads(marker.read_text())
    info["env"] = {**env, "MLKIT_MODEL": info["tag"]}
    return info


def sample_record(features: list[dict]) -> dict:
    "One real row of the training data, as the service takes it."
    from mlkit.data.datasets import load_dataset

    frame = load_dataset("breast_cancer").frame.sample(1, random_state=3)
    return {f["name"]: float(frame[f["name"]].iloc[0]) for f in features}


def free_port() -> int:
    from mlkit.core import free_port as fp

    return fp(HOST)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; log {log}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready after {timeout:.0f} s; see {log}")
        time.sleep(0.3)


@contextmanager
def server(cmd: list[str], env: dict, ready_path: str, port: int, cwd: Path = ROOT):
    "Start `cmd` (a whole process group), wait until `ready_path` answers 200, yield (base url, Popen)."
    log = Path(tempfile.mkstemp(prefix="mlkit-bench-", suffix=".log")[1])
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://{HOST}:{port}"
    try:
        wait_ready(url + ready_path, proc, log)
        proc.log = log  # type: ignore[attr-defined]
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def bentoml_cmd(target: str, port: int) -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", target, "--host", HOST, "--port", str(port)]


LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{body}]]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("JSON {{\\"requests\\": %d, \\"duration_us\\": %d, \\"p50_us\\": %d, \\"p99_us\\": %d, "
    .. "\\"mean_us\\": %f, \\"non2xx\\": %d, \\"errors\\": %d}}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def lua_script(body: dict | str, headers: dict[str, str] | None = None) -> Path:
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    path = Path(tempfile.mkstemp(prefix="mlkit-wrk-", suffix=".lua")[1])
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    path.write_text(extra + LUA.format(body=text))
    return path


def wrk(url: str, script: Path, connections: int, seconds: float, threads: int = 1) -> dict:
    "One wrk run; returns requests/s, p50/p99 in ms, non-2xx and socket errors."
    if WRK is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    cmd = [
        WRK,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
    ]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    m = re.search(r"^JSON (.*)$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    s = json.loads(m.group(1))
    return {
        "rps": s["requests"] / (s["duration_us"] / 1e6),
        "ok_rps": (s["requests"] - s["non2xx"]) / (s["duration_us"] / 1e6),  # answered with 2xx
        "p50_ms": s["p50_us"] / 1e3,
        "p99_ms": s["p99_us"] / 1e3,
        "non2xx": s["non2xx"],
        "errors": s["errors"],
        "requests": s["requests"],
    }


def point(url: str, script: Path, connections: int, seconds: float, warmup: float, threads: int = 1) -> dict:
    "A warm-up run (discarded), then the measured run."
    if warmup:
        wrk(url, script, connections, warmup, threads)
    return wrk(url, script, connections, seconds, threads)


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    info = prepare_model(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mlkit-bench"))
    print(json.dumps({k: v for k, v in info.items() if k != "env"}, indent=1))
