"""A throwaway PostgreSQL cluster for the tests: real server, temp dir, gone at the end of the session.

Why not a server the machine already runs: tests must not depend on (or damage) anything outside
their own temp dir, and CI starts from a clean clone (tools/system-deps.sh installs Debian's server
binaries, `/usr/lib/postgresql/<v>/bin`). `initdb` refuses to run as root, and CI runs as root, so
when we are root the cluster is created and run as the `postgres` system user (`runuser`) in a temp
dir it owns; otherwise as ourselves.

The server listens on a free loopback port (and a unix socket in its dir) with `trust` auth and
durability off (`fsync=off`): it is thrown away, and the tests are about behaviour, not disks.
`pg_database` hands each test a fresh database (CREATE DATABASE … TEMPLATE template0 is ~10 ms).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SUPERUSER = "postgres"


def find_bindir() -> Path | None:
    """Debian's newest server binaries, or the directory of an `initdb` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _temp_base(as_root: bool) -> str | None:
    """Where the cluster's temp dir goes: the usual temp dir, unless we are root and the `postgres`
    user could not reach into it (a TMPDIR under /root); /tmp then."""
    base = Path(tempfile.gettempdir()).resolve()
    if not as_root:
        return None
    for p in (base, *base.parents):
        if not os.stat(p).st_mode & 0o001:  # others may not traverse it
            return "/tmp"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One server: `start()` runs initdb and pg_ctl start, `stop()` stops it and removes its dir."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="palyra-pg-", dir=_temp_base(self.as_root)))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.host = "127.0.0.1"
        self.running = False

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if proc.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}")
        return proc

    def start(self) -> None:
        self.sock.mkdir()
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync",
                  "--locale=C")
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as f:
            f.write(
                f"listen_addresses = '{self.host}'\nport = {self.port}\n"
                # a socket path over the kernel's 107 bytes cannot be made: TCP only, then
                f"unix_socket_directories = '{self.sock if len(str(self.sock)) < 80 else ''}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 300\nshared_buffers = 32MB\n"
            )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self.running = True

    def stop(self) -> None:
        """Stop the server (fast shutdown: no waiting for clients) and remove its dir."""
        if self.running:
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same port and data (fault tests: PostgreSQL restarted)."""
        self.stop_server()
        self.start_server()

    def stop_server(self) -> None:
        """Stop the server but keep its data (fault tests: PostgreSQL down); `start_server` again."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        self.running = False

    def start_server(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self.running = True

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        """Run one statement on the maintenance database in autocommit (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)  # type: ignore[arg-type] - the tests' own literal statements

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{os.getpid()}_{time.monotonic_ns()}"
        self.admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's PostgreSQL server, started on first use (tests that do not ask never pay)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries are not installed (tools/system-deps.sh installs them)")
    cluster = PgCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh database of its own for one test, dropped afterwards (its URL)."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)


__all__ = ["PgCluster", "find_bindir", "pg_cluster", "pg_url"]
