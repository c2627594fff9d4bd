"""A daemon's membership of its journal (SPEC §11): registration, the heartbeat and the reaper.

Every daemon registers in `journal_daemons` at start-up and renews its lease every
`cluster.heartbeat_interval` (1 s); a daemon whose last heartbeat is older than its
`cluster.lease` (5 s) is gone. Each pass, after its own heartbeat, a daemon reaps the gone ones:
their active runs are finalized `failed` (`daemon_lost: …`) in one transaction that only one
reaper wins (`JournalStore.reap_lost_daemons`), so each reaped run is logged and emitted once.

Journal calls run in a thread of their own: while the journal is unreachable a call can wait
seconds, and the event loop carries the scheduler and the HTTP server; and the loop's shared worker
threads may all be busy with maintenance (a memory backfill waits minutes on its child process), which
must not delay a heartbeat past the lease. A daemon that could not heartbeat does not
reap until it has heartbeaten for one whole lease again: after an outage every daemon's lease has
run out at once, and the peers cut off with it must get the chance to renew theirs first.

A run finished by its owner after a peer reaped it is not overwritten (the journal's fence in
`update_run_and_job`); the owner's heartbeat then finds its row gone and registers again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import time
from collections.abc import Callable

from palyra_ops import __version__
from palyra_ops.errors import JournalError
from palyra_ops.journal import Journal
from palyra_ops.journal.records import LostDaemon, RunRecord

log = logging.getLogger("palyra_ops.membership")

#: the system event a reaper emits for each daemon it found gone (system_event routines react)
LOST_EVENT = "daemon.lost"


class Membership:
    def __init__(self, journal: Journal, daemon_id: str, *, interval_ms: int = 1000, lease_ms: int = 5000,
                 reap: bool = True, on_lost: Callable[[LostDaemon], None] | None = None) -> None:
        self.journal = journal
        self.daemon_id = daemon_id
        self.interval_ms = interval_ms
        self.lease_ms = lease_ms
        self.reap = reap
        self.on_lost = on_lost
        self.address: str | None = None
        self.last_heartbeat_ok: float | None = None  # monotonic
        self._reap_after = 0.0  # monotonic: no reaping before (see module docstring)
        self._failing = False
        self._stopping = False
        #: how many runs this daemon reaped from gone peers (status)
        self.reaped_runs = 0
        #: runs handed between daemons (docs/ha.md): given a peer's cancel requests for this daemon's
        #: runs and the parked runs it took over, on the loop after each pass (the gateway's `handover`)
        self.on_handover: Callable[[list[tuple[str, str]], list[RunRecord]], None] | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="palyra-heartbeat")

    def register(self, *, sole: bool = False) -> None:
        """Join the registry. `sole`: this daemon holds the journal alone (SQLite's lock file), so
        any other row is a daemon that died without leaving: dropped at once, not after its lease."""
        if sole:
            for d in self.journal.list_daemons():
                if d["daemon_id"] != self.daemon_id:
                    self.journal.deregister_daemon(d["daemon_id"])
        self.journal.register_daemon(self.daemon_id, lease_ms=self.lease_ms, host=socket.gethostname(),
                                     pid=os.getpid(), address=self.address, version=__version__)
        self.last_heartbeat_ok = time.monotonic()

    def serving(self, address: str) -> None:
        """The daemon serves at `address` now: written at once, so a peer's status names it."""
        self.address = address
        try:
            self.journal.heartbeat(self.daemon_id, address)
        except JournalError as exc:  # the heartbeat task writes it once the journal answers
            log.debug("address not written yet: %s", exc.message)

    def deregister(self) -> None:
        """A clean stop: off the registry at once (its runs were recorded by the gateway's shutdown)."""
        try:
            self.journal.deregister_daemon(self.daemon_id)
        except JournalError as exc:
            log.warning("could not leave the daemon registry: %s (peers will see the lease run out)", exc.message)

    def stop(self) -> None:
        self._stopping = True
        self._thread.shutdown(wait=False)

    def beat(self) -> list[LostDaemon]:
        """One pass (worker thread): renew the lease, then reap gone peers. Raises JournalError."""
        if not self.journal.heartbeat(self.daemon_id, self.address):
            log.warning("daemon %s was found gone by a peer (its runs were reaped): registering again", self.daemon_id)
            self.register()
        now = time.monotonic()
        self.last_heartbeat_ok = now
        if not self.reap or now < self._reap_after:
            return []
        return self.journal.reap_lost_daemons(self.journal.clock.now_ms(), spare=self.daemon_id)

    def collect(self) -> tuple[list[tuple[str, str]], list[RunRecord]]:
        """After the beat (worker thread): peers' cancel requests for this daemon's runs, and the due
        parked runs no daemon holds, taken (each once across daemons) with a fencing token of this one."""
        return (self.journal.cancel_requests(self.daemon_id),
                self.journal.take_parked(self.daemon_id, self.journal.clock.now_ms()))

    async def run_forever(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.interval_ms / 1000)
            if self._stopping:
                return
            try:
                lost = await asyncio.get_running_loop().run_in_executor(self._thread, self.beat)
            except JournalError as exc:
                if not self._failing:
                    log.warning("heartbeat failed: %s", exc.message)
                self._failing = True
                self._reap_after = time.monotonic() + self.lease_ms / 1000
                continue
            except Exception:  # the journal (or the thread) closing under us at shutdown
                if self._stopping:
                    return
                raise
            if self._failing:
                log.info("heartbeat written again")
                self._failing = False
            for gone in lost:
                self.reaped_runs += len(gone.runs)
                d = gone.daemon
                log.warning("daemon %s (%s pid %d) is gone (no heartbeat for %.1fs, lease %gs): %d active run(s)"
                            " failed as daemon_lost%s%s", d["daemon_id"], d["host"], d["pid"],
                            d["heartbeat_age_ms"] / 1000, d["lease_ms"] / 1000, len(gone.runs),
                            "".join(f"; {r['run_id']} of {r['routine_id']}" for r in gone.runs[:20]),
                            f"; {len(gone.released)} parked run(s) (retry waits, deferrals) handed to any daemon"
                            if gone.released else "")
                if self.on_lost is not None:
                    self.on_lost(gone)
            await self._handover()

    async def _handover(self) -> None:
        """Runs handed between daemons (`collect`), given to the gateway on the loop; a journal that
        fails here is the next heartbeat's to report (nothing was taken: `take_parked` is one commit)."""
        if self.on_handover is None or self._stopping:
            return
        try:
            cancels, taken = await asyncio.get_running_loop().run_in_executor(self._thread, self.collect)
        except JournalError as exc:
            log.debug("handover pass skipped: %s", exc.message)
            return
        except Exception:  # the journal (or the thread) closing under us at shutdown
            if self._stopping:
                return
            raise
        try:
            self.on_handover(cancels, taken)
        except Exception:  # a bug here must not stop the heartbeat
            log.exception("handing over %d run(s) failed", len(taken))


__all__ = ["LOST_EVENT", "Membership"]
