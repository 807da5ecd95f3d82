"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb into a temp dir, start it on a
free 127.0.0.1 port with its unix socket inside that dir, trust auth, no fsync.

Used by `scripts/test.sh` (the second test pass), by fault tests that stop and restart the server,
and by `bench/workers.py`. From the shell:

    python scripts/pgcluster.py start DIR   # prints `export EVIDENCE_TEST_DB=...` lines
    python scripts/pgcluster.py stop DIR

initdb refuses to run as root, so as root every server command runs as the `postgres` user
(Debian's postgresql package creates it) and DIR is handed to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SERVER_OPTIONS = [
    "-c", "listen_addresses=127.0.0.1",
    "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
    "-c", "max_connections=300", "-c", "shared_buffers=64MB",
]


def bin_dir() -> Path:
    """→ the directory holding initdb/pg_ctl: $PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install postgresql, "
                            "or set PG_BIN)")


def available() -> bool:
    """→ whether a cluster can be started here (binaries present; a non-root user if root)."""
    try:
        bin_dir()
    except FileNotFoundError:
        return False
    return os.geteuid() != 0 or _postgres_user() is not None


def _postgres_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def free_port() -> int:
    """→ a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One PostgreSQL server in `base` (data/, socket/, log); start/stop/restart/kill."""

    def __init__(self, base: str | Path, port: int | None = None, *,
                 durable: bool = False) -> None:
        self.durable = durable  # synchronous_commit on: a crash loses no acknowledged commit
        self.base = Path(base)
        self.data = self.base / "data"
        self.sock = self.base / "socket"
        self.log = self.base / "server.log"
        self.port_file = self.base / "port"
        if port is None and self.port_file.exists():
            port = int(self.port_file.read_text())
        self.port = port or free_port()

    @property
    def url(self) -> str:
        """→ SQLAlchemy URL of the `postgres` database as the `postgres` superuser."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict = {}
        user = _postgres_user() if os.geteuid() == 0 else None
        if os.geteuid() == 0:
            if user is None:
                raise RuntimeError("running as root and no `postgres` user to run the server as")
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        return subprocess.run([str(bin_dir() / args[0]), *args[1:]], check=check, text=True,
                              capture_output=True, cwd=self.base, **kwargs)

    def init(self) -> None:
        """Create the data directory (once)."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            user = _postgres_user()
            assert user is not None
            for p in (self.base, self.sock):
                os.chown(p, user.pw_uid, user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-locale", "--no-sync")
        self.port_file.write_text(str(self.port))

    def start(self) -> str:
        """Start the server (initialising it first if needed) and wait until it accepts; → URL."""
        self.init()
        opts = " ".join([f"-p {self.port}", f"-k {self.sock}", *SERVER_OPTIONS])
        if self.durable:
            opts += " -c synchronous_commit=on"
        res = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts,
                        "-w", "-t", "60", "start", check=False)
        if res.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {res.stdout}{res.stderr}\n{tail}")
        return self.url

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (mode fast|immediate); no error if it is not running."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                      check=False)

    def running(self) -> bool:
        """→ whether the server answers pg_ctl status."""
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def destroy(self) -> None:
        """Stop the server and delete its directory."""
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def wait_ready(url: str, timeout_s: float = 30.0) -> None:
    """Block until `url` accepts a connection (used after a restart)."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop", "destroy"):
        print("usage: pgcluster.py start|stop|destroy DIR", file=sys.stderr)
        return 2
    cluster = Cluster(argv[1])
    if argv[0] == "start":
        url = cluster.start()
        print(f"export EVIDENCE_TEST_DB='{url}'")
        print(f"export EVIDENCE_TEST_PGDATA='{cluster.data}'")
    elif argv[0] == "stop":
        cluster.stop()
    else:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
