"""Process wiring of `palyra-ops daemon`: one event loop running the HTTP server, the scheduler and
the maintenance tasks.

Start-up order matters for crash safety: the journal is opened and runs left active by a previous
process are finalized as failed (`daemon_restart`) *before* the scheduler looks at due jobs, so its
misfire handling sees a clean state; the scheduler starts only once the server accepts connections,
because every run is a loopback HTTP call. On PostgreSQL that recovery spares the runs of peers
whose lease holds; the daemon then registers and heartbeats, and reaps peers that go silent
(`membership.py`, SPEC §11).

One daemon per SQLite journal (SPEC §11): after the listen address is probed and before the journal
is opened, the daemon takes the journal's `DaemonLock`; a second daemon is refused with one line
naming the first (pid, address) and never touches its runs.

Stop order (SIGTERM/SIGINT): the scheduler stops claiming, the gateway cancels what runs and records
each run as cancelled (`daemon_shutdown`), then the server closes. uvicorn's own signal handling is
replaced because it re-raises the signal after serving, which would kill the process before the run
records are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import socket
import stat
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from palyra_ops import sdnotify
from palyra_ops.backends import make_backend
from palyra_ops.client import remove_discovery, write_discovery
from palyra_ops.clock import Clock, SystemClock
from palyra_ops.config import DaemonConfig
from palyra_ops.context import DaemonContext
from palyra_ops.delivery import Deliverer
from palyra_ops.errors import PalyraError
from palyra_ops.fsmodes import private_dir
from palyra_ops.gateway import Gateway, Loopback, loopback_keepalive_s
from palyra_ops.journal import DaemonLock, Journal, new_id, open_journal
from palyra_ops.journal.faults import redact
from palyra_ops.journal.records import LostDaemon
from palyra_ops.logfmt import TEXT_FORMAT, formatter
from palyra_ops.maintenance import MaintenanceTasks
from palyra_ops.membership import LOST_EVENT, Membership
from palyra_ops.memory.backfill_process import OutOfProcessBackfill
from palyra_ops.scheduler import CLAIM_LEAD_MS, Scheduler
from palyra_ops.server import create_app
from palyra_ops.statepaths import TOKEN_FILE, StatePaths
from palyra_ops.tracing import make_tracer

if TYPE_CHECKING:
    from palyra_ops.watcher import Watcher

log = logging.getLogger("palyra_ops.daemon")

RESTART_REASON = "daemon_restart"
SHUTDOWN_REASON = "daemon_shutdown"


def token_path(state_root: Path) -> Path:
    return state_root / TOKEN_FILE


def read_token(state_root: Path) -> str | None:
    p = token_path(state_root)
    try:
        text = p.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PalyraError(f"{p}: cannot read the API token: {exc.strerror}") from None
    return text or None


def ensure_token(state_root: Path) -> str:
    """The console API token, created on first start with mode 0600 (SPEC §6).

    Created with O_EXCL and the final mode in one call, so it is never readable by others, not even
    for an instant, and two daemons starting together agree on one token. A token file that others
    can read is tightened rather than trusted silently.
    """
    private_dir(state_root)
    p = token_path(state_root)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            log.warning("%s was readable by others (mode %o); setting 0600", p, mode)
            os.chmod(p, 0o600)
        tok = read_token(state_root)
        if tok:
            return tok
        raise PalyraError(f"{p}: the API token file is empty; delete it to have a new one created") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        tok = secrets.token_hex(32)  # hex: never starts with "-", so `--token TOKEN` parses
        fh.write(tok + "\n")
    return tok


def probe_bind(host: str, port: int) -> None:
    """Fail with one line when the address is taken, before anything touches the journal.

    uvicorn binds the real socket right after (handing it a socket of our own measured ~40% slower
    loopback calls), so this is a probe, not a reservation; losing the tiny race ends in uvicorn's
    own bind error.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PalyraError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def check_bind(config: DaemonConfig) -> None:
    if not config.is_loopback and not config.allow_remote:
        raise PalyraError(
            f"refusing to listen on {config.listen}: it is not a loopback address. The API carries bearer "
            "tokens in clear text; put TLS termination in front and pass --allow-remote to do it anyway"
        )


class _Server(uvicorn.Server):
    """uvicorn without its signal capture: the daemon owns SIGTERM/SIGINT (see module docstring)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Daemon:
    def __init__(self, config: DaemonConfig, *, clock: Clock | None = None, paths: StatePaths | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        # the CLI hands down the StatePaths it built; a library caller gets the same rule (SPEC §4):
        # --journal / config, else $PALYRA_JOURNAL, else the state root's; a URL is refused
        self.paths = paths or StatePaths.from_env(root=config.state_root, journal=config.journal)
        self.state_root = self.paths.root
        self.journal_path = self.paths.journal
        self.lock = DaemonLock(self.paths.side_base)  # PostgreSQL: one daemon per journal and state root
        self.daemon_id = new_id()
        self.maintenance = MaintenanceTasks(self.clock)
        self.server: _Server | None = None
        self.ctx: DaemonContext | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop: asyncio.Event | None = None
        self._emits: set[asyncio.Future[Any]] = set()  # strong references until each emit is done

    def request_stop(self) -> None:
        """Stop as SIGTERM does (a daemon embedded in another program's loop, e.g. a test)."""
        if self._stop is not None:
            self._stop.set()

    def _open(self) -> tuple[Journal, str]:
        token = ensure_token(self.state_root)
        journal = open_journal(self.journal_path, clock=self.clock)
        journal.log_faults()
        return journal, token

    def _services(self, ctx: DaemonContext) -> None:
        """Maintenance tasks, and the memory and skills services when they are available (each optional)."""
        m = self.maintenance
        ctx.tasks = m.health
        ctx.maintenance = m
        journal = ctx.journal
        m.exclusive = journal.maintenance_lock  # each task on one daemon at a time (SPEC §11)
        journal.defer_checkpoints()
        m.add("journal.checkpoint", 1000, journal.checkpoint)
        try:
            self._memory_services(ctx)
        except Exception as exc:  # optional service: the daemon runs without it
            log.info("memory service not available: %s", exc)
        try:
            self._skill_services(ctx)
        except Exception as exc:
            log.info("skills not available: %s", exc)

    def _skill_services(self, ctx: DaemonContext) -> None:
        """SPEC §8: one SkillRunner (compile cache under the state root) and the periodic re-audit.

        A quarantine becomes the `skill.quarantined` system event whoever finds it: the re-audit
        (a module that no longer verifies) or the runner itself (a module whose bytes changed since
        install, caught before it runs, in a worker thread — hence the thread-safe hop to the loop).
        """
        from palyra_ops.skills.audit import QUARANTINE_EVENT, ReAuditor
        from palyra_ops.skills.sandbox import SkillRunner, default_cache_dir
        from palyra_ops.skills.store import SkillStore

        loop = asyncio.get_running_loop()
        store = SkillStore(self.state_root, clock=self.clock)

        def emit(skill_id: str, reason: str | None) -> None:  # any thread
            skill = store.get(skill_id)
            payload = {"skill_id": skill_id, "reason": skill.quarantine_reason if skill else reason,
                       "version": skill.version if skill else None,
                       "publisher": skill.publisher if skill else None,
                       "sha256": skill.module_sha256 if skill else None}

            def fire() -> None:
                if ctx.gateway is not None:
                    ctx.gateway.emit_system_event(QUARANTINE_EVENT, payload)

            loop.call_soon_threadsafe(fire)

        runner = SkillRunner(store, default_cache_dir(self.state_root), on_quarantine=emit)
        ctx.skill_store = store
        ctx.skill_runner = runner

        def audited(results: Any) -> None:
            for r in results or []:
                if getattr(r, "newly_quarantined", False):
                    emit(r.skill_id, r.reason)

        # first audit when the index says one is due (the oldest last_audit_at + interval), not one
        # interval after start: a daemon restarted more often than the interval must still audit
        interval = self.config.skills.audit_interval_ms
        due = ReAuditor(store, interval_ms=interval, clock=self.clock).next_due_ms()
        first = max(due, self.clock.now_ms()) if due is not None else None
        self.maintenance.add("skills.audit", interval, store.audit, on_result=audited, first_run_ms=first)

    def _memory_services(self, ctx: DaemonContext) -> None:
        """SPEC §9: retention + VACUUM every 5 min, embedding backfill every 10 min (both configurable).

        Both run in worker threads through the shared runner, so the scheduler loop never waits on
        them. Their results become system events (`memory.maintenance.run` after every maintenance
        pass; `memory.backfill.run` when a backfill embedded something or failed, not for every idle
        pass), so a `system_event` routine can react, e.g. report what retention deleted.
        """
        from palyra_ops.memory.embedders import EmbedderSpec
        from palyra_ops.memory.service import MemoryService

        mc = self.config.memory  # the whole `memory:` section (retention, intervals, vacuum, embedder)
        # no embedder configured: keep the one the journal last backfilled with (None), not the default
        embedder = mc.embedder if mc.embedder != EmbedderSpec() else None
        # PostgreSQL: the items live in the journal (this daemon's store), the index under our state root
        pg = None
        if self.paths.is_postgres:
            from palyra_ops.journal.postgres import PgJournal

            assert isinstance(ctx.journal, PgJournal)
            pg = ctx.journal
        memory = MemoryService(self.journal_path, clock=self.clock, embedder=embedder, config=mc,
                               state_root=self.state_root, journal=pg)
        if pg is not None:  # peers' vectors and deletes reach this daemon's index (memory/follower.py)
            self.maintenance.health["memory.follow"] = memory.follow().health
        ctx.memory = memory

        m = self.maintenance
        pending: set[asyncio.Future[Any]] = set()  # strong references until each emit is done

        def emit(task: str, result: Any, always: bool) -> None:
            error = getattr(result, "error", None)
            if error:  # the service reports e.g. a locked journal in its result instead of raising
                m.health[task]["outcome"] = "failed"
            gateway = ctx.gateway
            if gateway is None or result is None or backfill.stopped:  # no new runs while shutting down
                return
            if not always and not (getattr(result, "embedded", 0) or error):
                return
            name, payload = result.to_event()
            fut = asyncio.ensure_future(gateway.emit_event(name, payload, kinds=("system_event",)))
            pending.add(fut)
            fut.add_done_callback(done)

        def done(fut: asyncio.Future[Any]) -> None:
            pending.discard(fut)
            if not fut.cancelled() and fut.exception() is not None:
                log.warning("memory event not emitted: %s", fut.exception())

        m.add("memory.maintain", mc.maintenance_interval_ms, memory.maintain,
              on_result=lambda r: emit("memory.maintain", r, True))
        backfill = OutOfProcessBackfill(memory, mc.batch_size)
        ctx.memory_backfill = backfill
        m.add("memory.backfill", mc.backfill_interval_ms, backfill, on_result=lambda r: emit("memory.backfill", r, False))

    async def _start_watcher(self, ctx: DaemonContext, gateway: Gateway, scheduler: Scheduler) -> Watcher:
        """`--watch`: reconcile the routine directory on save; its events reach system_event routines."""
        from palyra_ops.watcher import Watcher

        loop = asyncio.get_running_loop()

        def on_event(name: str, payload: dict[str, Any]) -> None:  # called from the watcher's thread
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(
                gateway.emit_event(name, payload, kinds=("system_event",))))

        def on_applied() -> None:
            loop.call_soon_threadsafe(scheduler.wake)

        from palyra_ops.skillrefs import known_skills

        state_root = self.state_root

        def known() -> Any:  # the CLI's rule, read at every reconcile (palyra_ops/skillrefs.py)
            return known_skills(state_root)

        assert self.config.dir is not None
        wc = self.config.watcher
        watcher = Watcher(self.config.dir, self.journal_path, clock=self.clock, on_event=on_event,
                          on_applied=on_applied, known_skills=known, self_heal=wc.self_heal,
                          rescan_interval_s=wc.rescan_interval_ms / 1000, debounce_ms=wc.debounce_ms)
        await asyncio.to_thread(watcher.start)
        return watcher

    async def serve(self, *, ready: Callable[[str], None] | None = None) -> int:
        # the address first, then the journal's daemon lock: a second daemon started by mistake
        # must fail before it touches the journal (start-up recovery would otherwise finalize the
        # first one's active runs)
        check_bind(self.config)
        probe_bind(self.config.host, self.config.port)
        self.lock.acquire(self.config.listen)
        try:
            return await self._serve_locked(ready)
        finally:
            self.lock.release()

    async def _serve_locked(self, ready: Callable[[str], None] | None) -> int:
        journal, token = self._open()
        cc = self.config.cluster
        membership = Membership(journal, self.daemon_id, interval_ms=cc.heartbeat_interval_ms, lease_ms=cc.lease_ms,
                                on_lost=lambda gone: self._emit_lost(gone))
        # SQLite: the lock file proves no other daemon is alive; PostgreSQL: spare the live peers'
        # parked runs (retry waits, deferrals) of a daemon that is gone are handed over, not failed
        recovered = journal.finalize_orphans(RESTART_REASON, self.clock.now_ms(), spare_live=self.paths.is_postgres,
                                             release_parked=True)
        membership.register(sole=not self.paths.is_postgres)
        for r in recovered:
            log.warning("run %s of %s was active when the previous daemon stopped: failed (%s)",
                        r["run_id"], r["routine_id"], RESTART_REASON)
        ctx = DaemonContext(journal=journal, clock=self.clock, config=self.config, token=token,
                            internal_token=secrets.token_urlsafe(32), started_at_ms=self.clock.now_ms())
        ctx.recovered_runs = [r["run_id"] for r in recovered]
        ctx.daemon_id, ctx.membership = self.daemon_id, membership
        self.ctx = ctx
        self._services(ctx)
        scheduler_ref: list[Scheduler] = []
        gateway = Gateway(
            journal, self.clock,
            backend=make_backend(self.config.backend),
            deliverer=Deliverer(journal, self.clock, memory=ctx.memory,
                                file_root=(self.config.delivery.file_root or self.state_root / "deliveries").absolute(),
                                allow_link_local=self.config.delivery.allow_link_local_targets),
            daemon_id=self.daemon_id,
            skill_runner=ctx.skill_runner,
            skill_store=ctx.skill_store,
            on_change=lambda: scheduler_ref[0].wake() if scheduler_ref else None,
            tracer=make_tracer(self.config.tracing),
        )
        scheduler = Scheduler(journal, self.clock, gateway=gateway, daemon_id=self.daemon_id,
                              max_in_flight=self.config.dispatch_concurrency,
                              lead_ms=CLAIM_LEAD_MS,
                              poll_ms=self.config.cluster.poll_interval_ms)
        gateway.shared_journal = self.paths.is_postgres
        membership.on_handover = gateway.handover
        scheduler_ref.append(scheduler)
        ctx.gateway, ctx.scheduler = gateway, scheduler
        ctx.watcher = None  # set below with --watch
        app = create_app(ctx)
        keep_alive_s = self.config.keep_alive_ms / 1000
        uv = uvicorn.Config(app, host=self.config.host, port=self.config.port, lifespan="off", access_log=False,
                            log_level=self.config.log_level, timeout_graceful_shutdown=5, log_config=None,
                            timeout_keep_alive=keep_alive_s)
        server = _Server(uv)
        self.server = server
        stop = asyncio.Event()
        self._stop = stop
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)

        serve_task = asyncio.ensure_future(server.serve())
        while not server.started:
            if serve_task.done():
                exc = serve_task.exception()
                journal.close()
                if exc is not None:
                    raise PalyraError(f"cannot listen on {self.config.listen}: {exc}") from None
                raise PalyraError(f"cannot listen on {self.config.listen} (address in use?)")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        ctx.base_url = f"http://{host}:{port}"
        self.lock.update(f"{host}:{port}")
        membership.serving(f"{host}:{port}")
        gateway.loopback = Loopback(ctx.base_url, ctx.internal_token, clients=self.config.dispatch_clients,
                                    keepalive_expiry_s=loopback_keepalive_s(keep_alive_s))
        # webhook POSTs from a child process: the second core (palyra_ops/delivery_worker.py)
        await gateway.deliverer.start(offload=True)
        write_discovery(self.state_root, ctx.base_url, journal=self.journal_path)  # how CLIs find us
        # Long-lived start-up objects out of the collector's way, and fewer gen-0 passes: full
        # collections of a large heap are the main source of multi-ms stalls in dispatch lag.
        gc.collect()
        gc.freeze()
        if self.config.watch:
            ctx.watcher = await self._start_watcher(ctx, gateway, scheduler)
        sched_task = asyncio.ensure_future(scheduler.run_forever())
        self._tasks = [asyncio.ensure_future(self.maintenance.run_forever()),
                       asyncio.ensure_future(membership.run_forever())]
        if ready is not None:
            ready(ctx.base_url)
        started = asyncio.ensure_future(gateway.emit_event(
            "daemon.started", {"daemon_id": self.daemon_id, "recovered_runs": len(recovered)}, kinds=("system_event",)))

        stop_wait = asyncio.ensure_future(stop.wait())
        await asyncio.wait({stop_wait, serve_task}, return_when=asyncio.FIRST_COMPLETED)
        log.info("stopping: scheduler, then active runs, then the server")
        await scheduler.stop()
        self.maintenance.stop()
        membership.stop()
        backfill = ctx.memory_backfill
        if backfill is not None:
            backfill.stop()
        sched_task.cancel()
        for t in [*self._tasks, started, stop_wait]:
            t.cancel()
        await asyncio.gather(sched_task, started, *self._tasks, return_exceptions=True)
        if ctx.watcher is not None:
            await asyncio.to_thread(ctx.watcher.stop)
        await gateway.shutdown(SHUTDOWN_REASON)
        await asyncio.to_thread(membership.deregister)
        server.should_exit = True
        await asyncio.gather(serve_task, return_exceptions=True)
        runner = ctx.skill_runner
        if runner is not None:
            with contextlib.suppress(Exception):
                runner.close()
        memory = ctx.memory
        if memory is not None:
            with contextlib.suppress(Exception):
                memory.close()
        with contextlib.suppress(Exception):
            journal.checkpoint()
            journal.close_checkpointer()
        journal.close()
        remove_discovery(self.state_root)
        return 0


    def _emit_lost(self, gone: LostDaemon) -> None:
        """`daemon.lost` for system_event routines: only the reaper that won emits it (membership.py)."""
        gateway = self.ctx.gateway if self.ctx is not None else None
        if gateway is not None:
            payload = {"daemon_id": gone.daemon["daemon_id"], "host": gone.daemon["host"], "pid": gone.daemon["pid"],
                       "reaped_by": self.daemon_id, "runs": [r["run_id"] for r in gone.runs]}
            fut = asyncio.ensure_future(gateway.emit_event(LOST_EVENT, payload, kinds=("system_event",)))
            self._emits.add(fut)
            fut.add_done_callback(self._emits.discard)


def run_daemon(config: DaemonConfig, paths: StatePaths | None = None) -> int:
    logging.basicConfig(level=getattr(logging, config.log_level.upper(), logging.INFO), stream=sys.stderr,
                        format=TEXT_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(config.log_format))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per loopback dispatch is noise
    daemon = Daemon(config, paths=paths)

    def ready(url: str) -> None:
        line = f"palyra-ops daemon listening on {url} (journal {redact(str(daemon.journal_path))})"
        if config.log_format == "json":  # every line of a JSON log is JSON, this one too
            log.info(line, extra={"fields": {"event": "listening", "url": url}})
        else:
            print(line, file=sys.stderr, flush=True)
        sdnotify.daemon_ready(asyncio.get_running_loop())  # systemd Type=notify: READY=1, then watchdog pings

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(daemon.serve(ready=ready))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (a dependency on POSIX): the daemon is one event loop carrying the
    server, the scheduler and every loopback call, so a faster loop is throughput for all of them.
    Its requirement is marked `sys_platform != 'win32'` (uvloop has no Windows build), so this guard
    is the platform's, not a module that might be missing from the package."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return None
    return uvloop.new_event_loop
