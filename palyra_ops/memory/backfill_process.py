"""The daemon's `memory.backfill` task, run in a child process (see `OutOfProcessBackfill`)."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from palyra_ops.memory.service import MemoryService


class OutOfProcessBackfill:
    """The `memory.backfill` task: `MemoryService.backfill` in a short-lived child process.

    Embedding (pure-Python feature hashing) and hnswlib inserts hold the GIL for most of a batch; in
    a thread of the daemon they raised dispatch lag from ~0 to p90 16 ms / p99 34 ms
    (bench/bench_memory_lag.py). A child process (spawned: forking a process with an event loop and
    threads is unsafe; niced, so the scheduler wins a contended core) takes the work off the daemon's
    interpreter. It shares the journal, and the service's flock serialises it with the daemon's own
    maintenance; the daemon picks the saved index up at its next read (the sidecar's generation
    changed). When nothing is pending and the index on disk is for the current model, no child is
    started at all: the idle pass every interval costs two small queries.

    `stop()` (daemon shutdown) terminates a running child, so a long backfill never holds up the
    exit; what it committed stays, and the next backfill's index load reconciles the rest.
    """

    def __init__(self, memory: MemoryService, batch: int) -> None:
        self.memory = memory
        self.batch = batch
        self._lock = threading.Lock()
        self._proc: Any = None
        self._stopped = False

    def __call__(self) -> Any:
        from palyra_ops.memory.index import read_sidecar
        from palyra_ops.memory.maintenance import BackfillResult

        memory = self.memory
        key = memory.embedder.key
        side = read_sidecar(memory.index_path) or {}
        index_current = (side.get("model"), side.get("dim"), side.get("version")) == (key.model, key.dim, key.version)
        idle = BackfillResult(started_at_ms=memory.clock.now_ms(), model=key.to_json(), index_action="none")
        if memory.store.pending_count(key) == 0 and (index_current or memory.store.max_label() == 0):
            return idle
        import multiprocessing

        mp = multiprocessing.get_context("spawn")
        receive, send = mp.Pipe(duplex=False)
        # the child embeds with the daemon's own embedder (the configured one, else the one the journal
        # remembers): on its own it would pick the remembered one and ignore `memory.embedder`
        proc = mp.Process(target=_backfill_child, name="palyra-memory-backfill", daemon=True,
                          args=(str(memory.location), self.batch, memory.index_params, send,
                                getattr(memory, "embedder_spec", None), memory.state_root))
        with self._lock:
            if self._stopped:
                return idle
            proc.start()
            self._proc = proc
        send.close()
        try:
            kind, value = receive.recv()
        except EOFError:  # the child died without answering (stopped, killed, crashed)
            proc.join(5)
            kind, value = "error", f"backfill process ended without a result (exit code {proc.exitcode})"
        finally:
            receive.close()
            proc.join(5)
            with self._lock:
                self._proc = None
        if kind == "error":  # a result like the service's own failures: health shows it, the event carries it
            idle.error = "stopped: the daemon is shutting down" if self._stopped else str(value)
            return idle
        return value

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._proc is not None and self._proc.is_alive():
                self._proc.terminate()


class IndexBuildChild:
    """The index file rebuilt from the journal's vectors in a spawned child (a backfill of 0 items:
    load or rebuild, then save) — what a daemon's memory follower starts with when it has no sound
    index file and many items (hnswlib inserts in the daemon's own interpreter would hold its event
    loop up, as a backfill in a thread did). `run()` blocks; `stop()` ends a running child."""

    def __init__(self, memory: MemoryService) -> None:
        self.memory = memory
        self._proc: Any = None

    def run(self) -> str | None:
        """None when the child saved the index file, else why it did not."""
        import multiprocessing

        memory = self.memory
        mp = multiprocessing.get_context("spawn")
        receive, send = mp.Pipe(duplex=False)
        self._proc = proc = mp.Process(
            target=_backfill_child, name="palyra-memory-index", daemon=True,
            args=(str(memory.location), 64, memory.index_params, send, memory.embedder_spec, memory.state_root, 0))
        proc.start()
        send.close()
        try:
            kind, value = receive.recv()
        except EOFError:
            return f"index build process ended without a result (exit code {proc.exitcode})"
        finally:
            receive.close()
            proc.join(5)
            self._proc = None
        if kind == "error":
            return str(value)
        return value.error if value.error else (None if value.index_saved else f"index {value.index_action}: not saved")

    def stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.terminate()


def _backfill_child(journal_path: str, batch: int, index_params: Any, send: Any, spec: Any = None,
                    state_root: Any = None, limit: int | None = None) -> None:
    """The child's side: its own service on the same journal (a SQLite file or a PostgreSQL URL; then
    its index under the daemon's `state_root`), with the daemon's embedder (`spec`); `limit` 0 only
    brings the index file up to date."""
    with contextlib.suppress(OSError):
        os.nice(10)
    try:
        from palyra_ops.memory.service import MemoryService

        parent = os.getppid()
        with MemoryService(journal_path, spec, create=False, index_params=index_params,
                           state_root=state_root) as memory:
            # a daemon killed -9 does not take its child along, and its maintenance lock is gone
            # with it: stop at the next batch, so a peer's backfill never runs beside this one
            send.send(("ok", memory.backfill(batch_size=batch, limit=limit,
                                             keep_going=lambda: os.getppid() == parent)))
    except Exception as exc:  # reported by the task's health, never a traceback in the daemon's log
        send.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        send.close()
