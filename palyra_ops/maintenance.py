"""Periodic maintenance tasks of the daemon (memory retention, embeddings backfill, skill re-audit).

Each task is a blocking function run in a worker thread (`asyncio.to_thread`), so a VACUUM or an
embedding batch never stalls the scheduler loop; tasks never overlap with themselves. Their health —
last run, duration, outcome, next run — is kept in one plain dict that `GET /console/v1/system/status`
and `palyra-ops status` show as-is.

Several daemons on one journal (SPEC §11) run each task on one daemon at a time: `exclusive(name)`
(the journal's `maintenance_lock`, an advisory lock on PostgreSQL) is tried around each run, and a
run whose lock a peer holds is skipped (outcome `skipped`) — never waited for, never run beside it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from palyra_ops.clock import Clock, rfc3339
from palyra_ops.errors import PalyraError

log = logging.getLogger("palyra_ops.maintenance")


@dataclass
class _Task:
    name: str
    interval_ms: int
    fn: Callable[[], Any]
    on_result: Callable[[Any], None] | None
    next_run_ms: int


#: what a task returns when a peer holds its lock (the run is skipped)
HELD_BY_PEER = object()


class MaintenanceTasks:
    def __init__(self, clock: Clock,
                 exclusive: Callable[[str], AbstractContextManager[bool]] | None = None) -> None:
        self.clock = clock
        self.exclusive = exclusive
        self._tasks: dict[str, _Task] = {}
        #: live health, by task name (served as-is by the status routes)
        self.health: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._running: set[str] = set()

    def add(
        self,
        name: str,
        interval_ms: int,
        fn: Callable[[], Any],
        *,
        on_result: Callable[[Any], None] | None = None,
        first_run_ms: int | None = None,
    ) -> None:
        """Register a task; `interval_ms <= 0` registers it disabled (shown, never run)."""
        now = self.clock.now_ms()
        nxt = first_run_ms if first_run_ms is not None else now + interval_ms
        self._tasks[name] = _Task(name, interval_ms, fn, on_result, nxt)
        self.health[name] = {
            "interval_ms": interval_ms,
            "enabled": interval_ms > 0,
            "last_run_at": None,
            "duration_ms": None,
            "outcome": None,
            "detail": None,
            "runs": 0,
            "next_run_at": rfc3339(nxt) if interval_ms > 0 else None,
        }
        self._wake.set()

    async def run_now(self, name: str) -> Any:
        """Run one task immediately (CLI/API triggered or tests); returns its result."""
        return await self._run(self._tasks[name])

    async def _run(self, task: _Task) -> Any:
        if task.name in self._running:
            return None
        self._running.add(task.name)
        started = self.clock.now_ms()
        t0 = time.perf_counter()
        h = self.health[task.name]
        result: Any = None
        try:
            result = await asyncio.to_thread(self._guarded, task)
            if result is HELD_BY_PEER:
                result = None
                h["outcome"] = "skipped"
                h["detail"] = "running on another daemon"
            else:
                h["outcome"] = "ok"
                h["detail"] = _summary(result)
                if task.on_result is not None:
                    task.on_result(result)
        except PalyraError as exc:  # an expected failure (a full journal): one line, and only when new
            if h.get("outcome") != "failed" or h.get("detail") != exc.message:
                log.warning("maintenance task %s failed: %s", task.name, exc.message)
            h["outcome"] = "failed"
            h["detail"] = exc.message
        except Exception as exc:  # a failing task is reported, never fatal to the daemon
            log.exception("maintenance task %s failed", task.name)
            h["outcome"] = "failed"
            h["detail"] = f"{type(exc).__name__}: {exc}"
        finally:
            self._running.discard(task.name)
            h["last_run_at"] = rfc3339(started)
            h["duration_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            h["runs"] += 1
            if task.interval_ms > 0:
                task.next_run_ms = self.clock.now_ms() + task.interval_ms
                h["next_run_at"] = rfc3339(task.next_run_ms)
        return result

    def _guarded(self, task: _Task) -> Any:
        """The task under its journal-wide lock (worker thread); HELD_BY_PEER when a peer has it."""
        if self.exclusive is None:
            return task.fn()
        with self.exclusive(task.name) as got:
            return task.fn() if got else HELD_BY_PEER

    async def run_forever(self) -> None:
        while not self._stopping:
            self._wake.clear()
            now = self.clock.now_ms()
            due = [t for t in self._tasks.values() if t.interval_ms > 0 and t.next_run_ms <= now]
            for t in due:
                asyncio.ensure_future(self._run(t))
                t.next_run_ms = now + t.interval_ms  # no double start while it runs
            upcoming = [t.next_run_ms for t in self._tasks.values() if t.interval_ms > 0]
            delay = min(15.0, max(0.05, (min(upcoming) - self.clock.now_ms()) / 1000)) if upcoming else 15.0
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()


def _summary(result: Any) -> Any:
    """A JSON-able digest of what a task returned (dataclass → dict, lists → count)."""
    if result is None:
        return None
    if hasattr(result, "__dataclass_fields__"):
        from dataclasses import asdict

        try:
            return asdict(result)
        except TypeError:
            return str(result)
    if isinstance(result, (list, tuple)):
        return {"items": len(result)}
    if isinstance(result, (str, int, float, bool, dict)):
        return result
    return str(result)
