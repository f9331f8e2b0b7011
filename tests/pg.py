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
        run(
            f"{bindir}/pg_ctl",
            "-D",
            data,
            "-l",
            os.path.join(base, "log"),
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"postgresql+psycopg://mlkit@127.0.0.1:{port}/postgres"
    finally:
        if os.path.isdir(data):
            subprocess.run(
                as_user + [f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True
            )
        shutil.rmtree(base, ignore_errors=True)
