"""Runs handed between daemons sharing a journal (SPEC §11, docs/ha.md): what this daemon does with
the results of its membership pass (`membership.py`), on the event loop, once per heartbeat.

- **Cancel requests** (`replace` on a peer): a peer that started a run of a `replace` routine asked
  the journal to cancel this daemon's busy run of it; the run is cancelled here as a local replace
  would (`cancelled`, `replaced: superseded by run …`).
- **Taken parked runs**: a retry wait or a quiet-hours deferral whose daemon died (the reaper or a
  start-up recovery handed it over) and that is due now, taken with a new fencing token; a retry
  attempt starts at once (its earlier attempt held the routine's slot), a deferred run passes the
  gates from `policy` on, as at the end of its window on the daemon that deferred it.
- **`queue_one` behind a peer's run**: the run this daemon queued while another daemon's run was busy
  is started once no run of the routine runs anywhere (the check and the start in one transaction).
"""

from __future__ import annotations

import contextlib
from typing import Any

from palyra_ops.enums import Concurrency
from palyra_ops.errors import JournalError
from palyra_ops.gateway.base import GatewayState, log
from palyra_ops.journal.records import RunRecord


class Handover(GatewayState):
    def handover(self, cancels: list[tuple[str, str]], taken: list[RunRecord]) -> None:
        """The membership pass's findings, on the loop (the journal reads were made in its thread)."""
        for run_id, reason in cancels:
            self._cancel_requested(run_id, reason)
        for row in taken:
            self._resume_taken(dict(row))
        if self.shared_journal and not self._closing:
            self._start_queued_behind_peers()

    def _cancel_requested(self, run_id: str, reason: str) -> None:
        for task, current in list(self._current.items()):
            if current == run_id and not task.done():
                log.info("run %s: cancelled at a peer's request (%s)", run_id, reason)
                self._cancel_reasons[run_id] = reason
                self.metrics.handover("cancelled_for_peer")
                task.cancel()
                return

    def _resume_taken(self, run: dict[str, Any]) -> None:
        run_id, rid = run["run_id"], run["routine_id"]
        self._fences[run_id] = run["fence"]
        if self._closing:  # stopping: hand it back for another daemon
            with contextlib.suppress(JournalError):
                self.journal.update_run_and_job(run_id, {"daemon_id": None, "fence": None}, None, None,
                                                fence=self._fences.pop(run_id))
            return
        self.metrics.handover("taken_over")
        log.warning("run %s of %s (attempt %s, due %s): taken over from a daemon that is gone", run_id, rid,
                    run.get("attempt"), run.get("not_before_ms"))
        routine = self.routine(rid)
        if routine is None:
            self._stop(run, None, "failed", "routine_deleted: the routine no longer exists", gate="disabled")
            return
        if int(run.get("attempt") or 1) > 1:  # a retry wait: the next attempt runs now
            self._start_or_fail(run, routine)
            return
        self._held[run_id] = rid  # a deferred run: on through the gates after quiet hours
        self._spawn(self._gates_quietly(run, routine))

    async def _gates_quietly(self, run: dict[str, Any], routine: Any) -> None:
        with contextlib.suppress(JournalError):  # recorded failed by gates_or_fail
            await self.gates_or_fail(run, routine, start="policy")  # type: ignore[attr-defined]

    def release_parked_on_stop(self) -> int:
        """A clean stop with peers on the journal: this daemon's parked runs (retry waits, quiet-hours
        deferrals) are handed to the other daemons — owner and token cleared, as the reaper does for a
        daemon that died — instead of cancelled; a peer runs each at its time. How many."""
        handed = 0
        for run_id in [*self._waiting, *self._deferred.values()]:
            try:
                ok = self.journal.update_run_and_job(run_id, {"daemon_id": None, "fence": None}, None, None,
                                                     fence=self._fences.get(run_id))
            except JournalError as exc:
                log.warning("run %s: not handed to the other daemons (%s): cancelled instead", run_id, exc.message)
                continue
            if ok:
                handed += 1
                self._released.add(run_id)
                self._held.pop(run_id, None)
                self._fences.pop(run_id, None)
        self.metrics.handover("handed_on_stop", handed)
        if handed:
            log.info("stopping: %d parked run(s) (retry waits, deferrals) handed to the other daemons", handed)
        return handed

    def _start_queued_behind_peers(self) -> None:
        for rid, (run, routine) in list(self._queued.items()):
            if self._active.get(rid) or routine.policies.concurrency != Concurrency.QUEUE_ONE:
                continue  # a local run holds the slot: its end starts the queued one
            try:
                blocker = self.journal.start_exclusive(run["run_id"], rid, self.clock.now_ms())
            except JournalError:
                return
            if blocker is None and self._queued.get(rid) == (run, routine):
                del self._queued[rid]
                self._start_or_fail(run, self.routine(rid) or routine)  # type: ignore[attr-defined]


__all__ = ["Handover"]
