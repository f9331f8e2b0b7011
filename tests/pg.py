"""A throwaway PostgreSQL cluster on loopback for the tests that need a real server.

`.ci/postgres` installs Debian's package (`make test` runs it); this starts a fresh cluster on a free port as the
`postgres` system user (PostgreSQL refuses to run as root), and removes it afterwards. Where PostgreSQL cannot be
installed the fixture skips with that reason, visibly in pytest's summary."""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(found[-1]) if found else None


_clusters: dict[str, tuple] = {}  # url -> (as_user, bindir, data, server options)


def pg_start(url: str) -> None:
    "Start (again) the cluster of `url`, started by `postgres_server`; returns once it takes connections."
    as_user, bindir, data, options = _clusters[url]
    log = os.path.join(os.path.dirname(data), "log")
    subprocess.run(
        as_user + [f"{bindir}/pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "start", "-o", options],
        check=True,
        capture_output=True,
        text=True,
    )


def pg_stop(url: str) -> None:
    "Stop the cluster of `url` the way a restart does: open connections are closed, nothing more is accepted."
    as_user, bindir, data, _ = _clusters[url]
    subprocess.run(
        as_user + [f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
        check=True,
        capture_output=True,
    )


@contextmanager
def postgres_server():
    "Start a PostgreSQL cluster on 127.0.0.1; yields a SQLAlchemy URL (psycopg 3) of its `postgres` database."
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL is not installed; `bash .ci/postgres` installs it from Debian's packages"
        )
    as_user = [] if os.getuid() != 0 else ["runuser", "-u", "postgres", "--"]
    base = tempfile.mkdtemp(prefix="mlkit-pg-", dir="/tmp")
    data, sock = os.path.join(base, "data"), os.path.join(base, "sock")
    os.makedirs(sock)
    if os.getuid() == 0:
        pw = pwd.getpwnam("postgres")
        for path in (base, sock):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    run = lambda *cmd: subprocess.run(as_user + list(cmd), check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(f"{bindir}/initdb", "-D", data, "-U", "mlkit", "--auth=trust", "--no-sync")
        url = f"postgresql+psycopg://mlkit@127.0.0.1:{port}/postgres"
        _clusters[url] = (
            as_user,
            bindir,
            data,
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off",
        )
        pg_start(url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield url
    finally:
        if os.path.isdir(data):
            subprocess.run(
                as_user + [f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True
            )
        shutil.rmtree(base, ignore_errors=True)
