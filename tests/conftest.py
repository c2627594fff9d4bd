"""Shared fixtures.

`daemon` starts the REAL daemon (`python -m palyra_ops daemon`) as a subprocess on a free loopback
port, with a temp state root (PALYRA_STATE_ROOT), journal and routine directory, and yields a
`DaemonHandle`. The handle unpacks as `(base_url, token, paths)` and also offers helpers: `client()`
(an httpx.Client with the token), `write(name, yaml)` + `apply()` (the real apply path into the
journal, which the running daemon picks up within 1 s), `runs(routine)`, `wait_for(...)`, `stop()`,
`kill()` and `restart()`.

`daemon_factory(**options)` starts one with extra flags/config (backend, integrations, ...).

`FakeTimers` drives the gateway's `sleep_until` from a FakeClock for deterministic policy tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml
from pgcluster import pg_cluster, pg_url  # noqa: F401 - the session's throwaway PostgreSQL (tests/pgcluster.py)

from palyra_ops.clock import FakeClock

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DaemonHandle:
    base_url: str
    token: str
    paths: SimpleNamespace  # state_root, journal, dir, cwd, log, config
    proc: subprocess.Popen[bytes]
    args: list[str]
    env: dict[str, str]
    _clients: list[httpx.Client] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.base_url, self.token, self.paths))

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, **kw: Any) -> httpx.Client:
        c = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=kw.pop("timeout", 10), **kw)
        self._clients.append(c)
        return c

    def log(self) -> str:
        try:
            return Path(self.paths.log).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- desired state --------------------------------------------------------------------------

    def write(self, name: str, docs: str | list[dict[str, Any]] | dict[str, Any]) -> Path:
        p = Path(self.paths.dir) / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if not isinstance(docs, str):
            docs = yaml.safe_dump_all(docs if isinstance(docs, list) else [docs], sort_keys=False)
        p.write_text(docs, encoding="utf-8")
        return p

    def apply(self) -> Any:
        """The real `apply` of the routine directory into the daemon's journal (another connection)."""
        from palyra_ops.journal import open_journal
        from palyra_ops.reconcile import apply_directory

        with open_journal(self.paths.journal) as j:
            return apply_directory(j, Path(self.paths.dir), origin="test")

    # -- reading the journal ---------------------------------------------------------------------

    def runs(self, routine_id: str | None = None, **kw: Any) -> list[dict[str, Any]]:
        """Run rows, oldest first."""
        from palyra_ops.journal import open_journal

        with open_journal(self.paths.journal) as j:
            rows = j.list_runs(routine_id, limit=kw.pop("limit", 100_000), **kw)
        return list(reversed(rows))

    def job(self, routine_id: str) -> dict[str, Any] | None:
        from palyra_ops.journal import open_journal

        with open_journal(self.paths.journal) as j:
            return j.get_job(routine_id)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
                 what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n--- daemon log ---\n{self.log()[-4000:]}")
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode} while waiting for {what}\n{self.log()[-4000:]}")
            time.sleep(interval)

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        for c in self._clients:
            c.close()
        self._clients.clear()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> DaemonHandle:
        """Start a new daemon process on the same state root, journal and directory (same port)."""
        if self.proc.poll() is None:
            self.stop()
        self.proc = _spawn(self.args, self.env, self.paths)
        _wait_ready(self)
        return self


def _spawn(args: list[str], env: dict[str, str], paths: SimpleNamespace) -> subprocess.Popen[bytes]:
    logf = open(paths.log, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(args, env=env, cwd=paths.cwd, stdout=logf, stderr=subprocess.STDOUT,
                                umask=-1 if getattr(paths, "umask", None) is None else paths.umask)
    finally:
        logf.close()


def _wait_ready(h: DaemonHandle, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if h.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {h.proc.returncode}:\n{h.log()[-4000:]}")
        try:
            if httpx.get(h.base_url + "/healthz", timeout=0.5).status_code == 200 and "listening on" in h.log():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    h.proc.kill()
    raise RuntimeError(f"daemon did not become ready in {timeout}s:\n{h.log()[-4000:]}")


def start_daemon(tmp: Path, *, config: dict[str, Any] | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, umask: int | None = None,
                 journal: str | None = None) -> DaemonHandle:
    """`journal`: a `postgresql://` URL instead of the state root's SQLite file."""
    state_root = tmp / "state"
    rdir = tmp / "routines.d"
    rdir.mkdir(parents=True, exist_ok=True)
    journal = journal or state_root / "journal.sqlite3"
    port = free_port()
    paths = SimpleNamespace(state_root=state_root, journal=journal, dir=rdir, cwd=tmp, log=tmp / "daemon.log",
                            config=None, port=port, umask=umask)
    args = [sys.executable, "-m", "palyra_ops", "daemon", "--listen", f"127.0.0.1:{port}", "--journal", str(journal),
            "--dir", str(rdir)]
    if config:
        cfg = tmp / "palyra.yaml"
        cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
        paths.config = cfg
        args += ["--config", str(cfg)]
    args += extra_args or []
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PALYRA_")}
    full_env.update({"PALYRA_STATE_ROOT": str(state_root), "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"})
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    proc = _spawn(args, full_env, paths)
    h = DaemonHandle(base_url=f"http://127.0.0.1:{port}", token="", paths=paths, proc=proc, args=args, env=full_env)
    try:
        _wait_ready(h)
    except Exception:
        if proc.poll() is None:
            proc.kill()
        raise
    h.token = (state_root / "token").read_text().strip()
    return h


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonHandle]]:
    started: list[DaemonHandle] = []

    def make(**kw: Any) -> DaemonHandle:
        sub = tmp_path / f"d{len(started)}"
        sub.mkdir()
        h = start_daemon(sub, **kw)
        started.append(h)
        return h

    yield make
    for h in started:
        h.stop()


@pytest.fixture
def daemon(daemon_factory: Callable[..., DaemonHandle]) -> DaemonHandle:
    """A real daemon on a free loopback port; unpacks as (base_url, token, paths)."""
    return daemon_factory()


# -- deterministic time for gateway/scheduler tests ---------------------------------------------------


class FakeTimers:
    """`sleep_until` for the gateway driven by a FakeClock: sleepers wake when `advance` passes them."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def sleep_until(self, ms: int) -> None:
        if self.clock.now_ms() >= ms:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append((ms, fut))
        try:
            await fut
        finally:
            self.waiters = [(m, f) for m, f in self.waiters if f is not fut]

    def release(self) -> None:
        now = self.clock.now_ms()
        for ms, fut in list(self.waiters):
            if ms <= now and not fut.done():
                fut.set_result(None)

    async def advance(self, ms: int) -> None:
        """Move time in steps so sleepers wake in order, letting the loop run between steps."""
        target = self.clock.now_ms() + ms
        while True:
            await settle()
            pending = sorted(m for m, f in self.waiters if not f.done() and m <= target)
            if not pending:
                break
            self.clock.set(max(pending[0], self.clock.now_ms()))
            self.release()
        self.clock.set(target)
        self.release()
        await settle()


async def settle(rounds: int = 30) -> None:
    """Let every ready task run until the loop goes quiet (no real time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


# -- an in-process runtime on a FakeClock ---------------------------------------------------------------


class Runtime:
    """Journal + gateway + scheduler on a FakeClock, wired as the daemon wires them minus HTTP.

    Routines go in through the real upsert path (`palyra_ops.reconcile.upsert_resource`), so the job
    rows are exactly what apply/the API write. `run_until` plays the scheduler loop: it jumps the
    clock to each next due time or timer deadline and ticks, with no real sleeping.
    """

    def __init__(self, tmp: Path, start: Any) -> None:
        from palyra_ops.gateway import Gateway
        from palyra_ops.journal import open_journal
        from palyra_ops.scheduler import Scheduler

        self.tmp = tmp
        self.clock = FakeClock(start)
        self.timers = FakeTimers(self.clock)
        self.journal = open_journal(tmp / "journal.sqlite3", clock=self.clock)
        self.gateway = Gateway(self.journal, self.clock, sleep_until=self.timers.sleep_until, daemon_id="test-daemon")
        self.gateway.deliverer.retry_base_s = 0.01
        self.scheduler = Scheduler(self.journal, self.clock, gateway=self.gateway, daemon_id="test-daemon")

    def put(self, kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> None:
        from palyra_ops.model import Resource
        from palyra_ops.reconcile import upsert_resource

        meta = {"labels": labels} if labels else None
        upsert_resource(self.journal, Resource.from_spec(kind, name, spec, meta), origin="test")

    def routine(self, name: str, *, labels: dict[str, str] | None = None, **spec: Any) -> None:
        spec.setdefault("prompt", f"run {name}")
        spec.setdefault("trigger", {"kind": "manual"})
        self.put("Routine", name, spec, labels)

    def runs(self, name: str | None = None) -> list[dict[str, Any]]:
        return self.journal.runs_in_order(name)

    def statuses(self, name: str | None = None) -> list[str]:
        return [r["status"] for r in self.runs(name)]

    async def tick(self) -> int:
        n = await self.scheduler.tick()
        await self.scheduler.drain()
        await settle()
        return n

    async def advance(self, ms: int) -> None:
        await self.timers.advance(ms)

    async def run_until(self, until_ms: int) -> None:
        while True:
            await self.tick()
            now = self.clock.now_ms()
            candidates = [m for m, f in self.timers.waiters if not f.done()]
            nd = self.journal.next_due_ms()
            if nd is not None:
                candidates.append(nd)
            nxt = min((c for c in candidates), default=None)
            if nxt is None or nxt > until_ms:
                break
            self.clock.set(max(nxt, now))
            self.timers.release()
            await settle()
        self.clock.set(max(until_ms, self.clock.now_ms()))
        self.timers.release()
        await self.tick()

    async def close(self) -> None:
        await self.gateway.shutdown()
        self.journal.close()


@pytest.fixture
def runtime_factory(tmp_path: Path) -> Iterator[Callable[[Any], Runtime]]:
    made: list[Runtime] = []

    def make(start: Any) -> Runtime:
        sub = tmp_path / f"rt{len(made)}"
        sub.mkdir()
        rt = Runtime(sub, start)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.journal.close()


class Receiver:
    """A small local webhook receiver (the edge of the world) recording what it was sent; `status` is
    what it answers and may be changed between requests."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[bytes] = []  # the exact bytes, for checking signatures
        self.headers: list[dict[str, str]] = []
        self.status = status
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n)
                outer.raw.append(raw)
                outer.bodies.append(json.loads(raw))
                outer.headers.append(dict(self.headers))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.close()
