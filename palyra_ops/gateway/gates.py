"""The gates (SPEC §5 order): disabled → approval → dedupe key → cooldown → quiet hours → policy →
concurrency. Every stop is a run record with its reason; a run that passes them all is started.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from palyra_ops.durations import format_duration_ms
from palyra_ops.enums import ApprovalMode, Concurrency, QuietAction
from palyra_ops.errors import JournalError, PalyraError
from palyra_ops.gateway.base import GATES, GatewayState, log
from palyra_ops.journal.records import RunContext
from palyra_ops.model import Routine
from palyra_ops.pause import OPERATOR_TRIGGERS, PauseState
from palyra_ops.schedule import QuietHours


class Gates(GatewayState):
    async def gates_or_fail(self, run: dict[str, Any], routine: Routine, **kw: Any) -> dict[str, Any]:
        """`gates`, but a journal that cannot take the run's transition finalizes the run `failed`
        (kept until the journal is writable) instead of leaving it `accepted` for ever."""
        try:
            return await self.gates(run, routine, **kw)
        except JournalError as exc:
            self.journal_failed(run, exc)
            raise

    async def gates(self, run: dict[str, Any], routine: Routine, *, dedupe_key: str | None = None,
                    catch_up: bool = False, start: str = "disabled", seen: RunContext | None = None) -> dict[str, Any]:
        """Apply the gates in SPEC §5 order from `start`; returns the run row as it stands after them.
        `seen`: the job and serial as the run's arrival just read them (`run_context`), else read here."""
        first = GATES.index(start)
        rid = routine.name
        now = self.clock.now_ms()
        job = (seen.job if seen is not None else self.journal.get_job(rid)) or {}

        if first <= 0:  # disabled (spec enabled AND effective job state, which holds before_enable)
            if not routine.enabled or (job and not job.get("enabled", 1)):
                why = "disabled"
                if job.get("approval_state") == "pending":
                    why = "disabled: awaiting before_enable approval"
                elif job.get("approval_state") == "denied" and routine.approval == "before_enable":
                    why = "disabled: before_enable approval was denied"
                return self._stop(run, routine, "skipped", why, gate="disabled")
            if job.get("paused") and run.get("trigger_kind") not in OPERATOR_TRIGGERS:
                return self._stop(run, routine, "skipped", PauseState.of(job).reason(), gate="paused")
            self.metrics.gate("disabled", "pass")

        if first <= 1 and routine.approval == ApprovalMode.BEFORE_FIRST_RUN:
            state = job.get("approval_state", "none")
            if state == "denied":
                return self._stop(run, routine, "denied", "approval_denied: the first run was denied", gate="approval",
                                  rule="approval")
            if state != "approved":
                pending = self.journal.pending_approval(rid, "before_first_run")
                if pending is not None:
                    return self._stop(run, routine, "skipped",
                                      f"awaiting_approval: approval {pending['approval_id']} is still pending",
                                      gate="approval")
                with self.journal.transaction() as c:
                    approval_id = self.journal.add_approval(c, routine_id=rid, kind="before_first_run",
                                                            run_id=run["run_id"])
                    self.journal.update_run(run["run_id"], c, **self._receipt(
                        run, {"status": "awaiting_approval", "approval_id": approval_id}))
                    self.journal.put_job(c, rid, last_run_id=run["run_id"], last_status="awaiting_approval")
                if dedupe_key:
                    self._pending_dedupe[run["run_id"]] = dedupe_key
                self.metrics.gate("approval", "awaiting_approval")
                self.metrics.run("awaiting_approval")
                run.update(status="awaiting_approval", approval_id=approval_id)
                return run
            self.metrics.gate("approval", "pass")

        if first <= 2 and dedupe_key:
            holder = self.journal.set_dedupe_key(run["run_id"], dedupe_key)
            if holder is not None:
                return self._stop(run, routine, "skipped",
                                  f"duplicate: dedupe key {dedupe_key!r} was already used by run {holder}", gate="dedupe")
            run["dedupe_key"] = dedupe_key
            self.metrics.gate("dedupe", "pass")

        if first <= 3 and routine.policies.cooldown_ms > 0 and run.get("attempt", 1) == 1:
            last = job.get("last_started_at_ms")
            if last is not None and now - last < routine.policies.cooldown_ms:
                return self._stop(run, routine, "throttled",
                                  f"cooldown: last run started {format_duration_ms(max(now - last, 0))} ago "
                                  f"(cooldown {format_duration_ms(routine.policies.cooldown_ms)})", gate="cooldown")
            self.metrics.gate("cooldown", "pass")

        if first <= 4 and routine.quiet_hours:
            qh = QuietHours.from_spec(routine.quiet_hours)
            if qh.contains(now):
                if qh.action != QuietAction.DEFER:
                    return self._stop(run, routine, "skipped", "quiet_hours", gate="quiet_hours")
                if rid in self._deferred:
                    return self._stop(run, routine, "skipped",
                                      f"quiet_hours: run {self._deferred[rid]} is already deferred to the window end",
                                      gate="quiet_hours")
                until = qh.window_end_after(now)
                fence = self.take_fence(run["run_id"])  # held by this daemon while it waits (docs/ha.md)
                try:
                    if self.shared_journal:  # one deferred run per window, whichever daemon deferred it
                        holder = self.journal.defer_exclusive(
                            run["run_id"], rid, until, fence=fence,
                            received_at_ms=run["received_at_ms"] if run.get("_receipt") else None)
                        if holder is not None:
                            self._fences.pop(run["run_id"], None)
                            return self._stop(run, routine, "skipped",
                                              f"quiet_hours: run {holder} is already deferred to the window end",
                                              gate="quiet_hours")
                        run.pop("_receipt", None)
                    else:
                        self.journal.update_run(run["run_id"], **self._receipt(run, {"not_before_ms": until,
                                                                                     "fence": fence}))
                except JournalError:
                    self._fences.pop(run["run_id"], None)
                    raise
                run["not_before_ms"] = until
                self._deferred[rid] = run["run_id"]
                self._held[run["run_id"]] = rid
                self.metrics.gate("quiet_hours", "deferred")
                self._spawn(self._resume_deferred(run, routine, until))
                return run
            self.metrics.gate("quiet_hours", "pass")

        if first <= 5:
            d = self.policy_fn(self.policies(seen.serial if seen is not None else None), principal=routine.owner,
                               action="routine.run", channel=routine.channel, owner=routine.owner)
            if not d.allowed:
                return self._stop(run, routine, "denied", f"policy: {d.reason}", gate="policy", rule=d.rule)
            run["policy_rule"] = d.rule
            self.metrics.gate("policy", "pass")

        return self._concurrency(run, routine, catch_up=catch_up)

    async def _resume_deferred(self, run: dict[str, Any], routine: Routine, until: int) -> None:
        try:
            await self.sleep_until(until)
        except asyncio.CancelledError:
            self._deferred.pop(routine.name, None)
            raise
        self._deferred.pop(routine.name, None)
        current = self.routine(routine.name) or routine
        with contextlib.suppress(JournalError):  # recorded failed by gates_or_fail
            await self.gates_or_fail(run, current, start="policy")

    def _concurrency(self, run: dict[str, Any], routine: Routine, *, catch_up: bool) -> dict[str, Any]:
        rid = routine.name
        active = self.active_run_ids(rid)
        if self.shared_journal and not catch_up:  # several daemons on one journal (SPEC §11, docs/ha.md)
            if routine.policies.concurrency == Concurrency.QUEUE_ONE:
                return self._queue_one_across(run, routine, busy=bool(active))
            if routine.policies.concurrency == Concurrency.REPLACE:
                asked = self.journal.request_cancel(rid, f"replaced: superseded by run {run['run_id']}",
                                                    daemon_id=self.daemon_id)
                self.metrics.handover("cancel_requested", len(asked))
                if asked:
                    log.info("run %s of %s replaces run(s) on other daemons: %s", run["run_id"], rid, ", ".join(asked))
        if not active and not catch_up and self.shared_journal and routine.policies.concurrency == Concurrency.FORBID:
            # several daemons on one journal (SPEC §11): a run executing on a peer forbids this one too,
            # checked and taken in one transaction under the routine's lock (two cannot both start)
            blocker = self.journal.start_exclusive(run["run_id"], rid, self.clock.now_ms())
            active = [blocker] if blocker else []
        if not active:
            self.metrics.gate("concurrency", "pass")
            return self._start(run, routine)
        if catch_up:
            # missed occurrences of one routine run in order, one after the other, whatever the policy
            self.journal.update_run(run["run_id"], **self._receipt(run, {"policy_rule": run.get("policy_rule")}))
            self._backlog.setdefault(rid, deque()).append((run, routine))
            self._held[run["run_id"]] = rid
            self.metrics.gate("concurrency", "queued")
            return run
        policy = routine.policies.concurrency
        if policy == Concurrency.ALLOW:
            self.metrics.gate("concurrency", "pass")
            return self._start(run, routine)
        if policy == Concurrency.FORBID:
            return self._stop(run, routine, "skipped", f"concurrency: forbid (run {active[0]} is active)",
                              gate="concurrency", rule=run.get("policy_rule"))
        if policy == Concurrency.REPLACE:
            for task in list(self._active.get(rid, {}).values()):
                cur = self._current.get(task)
                if cur is not None:
                    self._cancel_reasons[cur] = f"replaced: superseded by run {run['run_id']}"
                task.cancel()
            self.metrics.gate("concurrency", "replace")
            return self._start(run, routine)
        if policy == Concurrency.QUEUE_ONE:
            queued = self._queued.get(rid)
            if queued is not None:
                return self._stop(run, routine, "skipped",
                                  f"concurrency: queue_one (run {queued[0]['run_id']} is already queued)",
                                  gate="concurrency", rule=run.get("policy_rule"))
            self.journal.update_run(run["run_id"], **self._receipt(run, {"policy_rule": run.get("policy_rule")}))
            self._queued[rid] = (run, routine)
            self._held[run["run_id"]] = rid
            self.metrics.gate("concurrency", "queued")
            return run
        raise PalyraError(f"unknown concurrency policy {policy!r}")

    def _queue_one_across(self, run: dict[str, Any], routine: Routine, *, busy: bool) -> dict[str, Any]:
        """`queue_one` seeing every daemon's runs: start, queue (marked in the journal, so a peer's
        trigger sees it) or skip, decided in one transaction under the routine's lock."""
        rid = routine.name
        now = self.clock.now_ms()
        outcome, other = self.journal.queue_exclusive(run["run_id"], rid, now, busy=busy)
        if outcome == "started":
            self.metrics.gate("concurrency", "pass")
            return self._start(run, routine)
        if outcome == "skipped":
            return self._stop(run, routine, "skipped", f"concurrency: queue_one (run {other} is already queued)",
                              gate="concurrency", rule=run.get("policy_rule"))
        self.journal.update_run(run["run_id"], **self._receipt(run, {"policy_rule": run.get("policy_rule")}))
        run["queued_at_ms"] = now
        self._queued[rid] = (run, routine)
        self._held[run["run_id"]] = rid
        self.metrics.gate("concurrency", "queued")
        return run
