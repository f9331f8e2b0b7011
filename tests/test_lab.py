"""`mlkit lab`: a real JupyterLab on loopback with the project's kernel, its token enforced, refused on a taken
port, and stopped by Ctrl-C (SIGINT) with exit code 0 and nothing left listening."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, isolated_env

from mlkit.core import free_port

MLKIT = str(Path(sys.executable).parent / "mlkit")


def start_lab(tmp_path: Path, port: int, extra_env: dict[str, str] | None = None):
    "`mlkit lab --port PORT` with isolated mlkit state; returns the process and the URL it printed."
    env = {
        **isolated_env(tmp_path),
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        **(extra_env or {}),
    }
    env["HOME"] = str(
        tmp_path / "home"
    )  # JupyterLab's user files (workspaces, settings) land there, not in ~
    proc = subprocess.Popen(
        [MLKIT, "lab", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "lab.log").open("w"),
        text=True,
    )
    start = time.monotonic()
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "token=" in line:
            return proc, line.strip(), time.monotonic() - start
    raise AssertionError(f"mlkit lab printed no URL: {lines}\n{(tmp_path / 'lab.log').read_text()[-3000:]}")


def get(url: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, {}


def test_lab_serves_the_project_with_the_mlkit_kernel_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    proc, url, ready_s = start_lab(tmp_path, port)
    try:
        assert url.startswith(f"http://127.0.0.1:{port}/lab?token=")
        base, token = url.split("lab?token=")
        assert len(token) >= 32
        print(f"mlkit lab answered after {ready_s:.1f} s")
        status, specs = get(f"{base}api/kernelspecs", token)
        assert status == 200
        assert specs["default"] == "mlkit"
        assert specs["kernelspecs"]["mlkit"]["spec"]["display_name"] == "Python (mlkit)"
        assert specs["kernelspecs"]["mlkit"]["spec"]["argv"][0] == sys.executable
        assert get(f"{base}api/kernelspecs")[0] == 403, "no token, no access"
        assert get(f"{base}api/kernelspecs", "wrong-token")[0] == 403
        status, listing = get(f"{base}api/contents/nbs/experiments", token)
        assert status == 200, "rooted at the project: nbs/experiments is reachable"
        assert "train_tabular.ipynb" in {item["name"] for item in listing["content"]}
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        code = proc.wait(timeout=60)
    assert code == 0, (tmp_path / "lab.log").read_text()[-3000:]
    assert "JupyterLab stopped (exit code 0)." in rest
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # nothing is left listening on the port
        s.listen()


def test_lab_refuses_a_taken_port_with_the_fix(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run(
            [MLKIT, "lab", "--port", str(port)], cwd=ROOT, env={**isolated_env(tmp_path), "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert res.returncode == 1
    assert f"error: Port {port} on 127.0.0.1 is in use: pick another with --port" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "nbs").rglob("*.ipynb"))
)
def test_every_notebook_selects_the_mlkit_kernel(path):
    "nbdev-clean keeps the kernelspec (and sets display_name to the name); papermill and JupyterLab read the name."
    spec = json.loads((ROOT / path).read_text())["metadata"].get("kernelspec", {})
    assert spec.get("name") == "mlkit", (
        f"{path} selects kernel {spec.get('name')!r}; the project's kernel is 'mlkit'"
    )
