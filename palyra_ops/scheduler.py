"""The embedded scheduler loop (SPEC §5).

It sleeps until the earliest `next_run_at_unix_ms` (at most 15 s when idle) or a wake-up, then takes
due jobs in batches of at most 64, oldest first. For each job it works out which nominal instants are
due, applies the misfire policy to those later than `misfire_grace`, and — in ONE journal transaction
per batch — inserts the run rows (the occurrence key `routine|nominal` is unique: that insert is the
claim) and advances the job to its next nominal instant. Only then does it dispatch the claimed runs
through the gateway's loopback HTTP call. So a crash between claim and dispatch leaves an `accepted`
run that start-up finalizes as failed (`daemon_restart`), and no occurrence is ever dispatched twice.

Jitter: `next_run_at_unix_ms` holds the jittered due time and `next_nominal_ms` the schedule instant
behind it (claims and records use the nominal instant). Apply writes only the nominal time; the
scheduler recognises that (next_run != nominal + jitter(nominal)) and moves the due time forward.

Wake-ups: `wake()` from in-process changes (API upsert, approvals, finished runs), and a poll of
SQLite's `PRAGMA data_version` every 250 ms, which changes when *another* process (an `apply`)
commits to the journal — well inside the 1 s the SPEC allows.

A journal that cannot be written (disk full, read-only, busy for the whole busy timeout) pauses the
loop with a doubling back-off (0.5 s … 8 s) instead of failing every tick: one log line when it
starts, one when it ends. While paused, each try first writes the run records the gateway held
(`Gateway.flush_unwritten`) or, with none, a one-row probe, so the fault clears — and `/healthz`
recovers — by itself once space is back, even when no job is due.

Backpressure (issue 14): the loop claims only what it can dispatch soon — at most `claim_ahead`
claimed runs wait for a dispatch slot at once. Beyond that the due jobs stay unclaimed in the
journal (`due_backlog`), and the loop waits for a slot instead of ticking. A job held back longer
than its `misfire_grace` is claimed late, so the misfire policy decides what runs (fire_once: the
latest instant, ignore: nothing) and the rest is shed and recorded (`skipped_count`,
`palyra_missed_runs_total`) instead of queueing without bound: memory and the number of
`accepted` runs stay bounded under a sustained overload.

A failed loopback call (after the Loopback's own retries) is the gateway's to finalize
(`Gateway.dispatch_failed`): a real reason, the retry policy, `routine.failed`; a retry attempt it
returns is sent from the same dispatch task at its `not_before_ms`, so stopping cancels it too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from palyra_ops.clock import Clock, rfc3339
from palyra_ops.dispatcher import Dispatcher
from palyra_ops.enums import Concurrency, Misfire
from palyra_ops.errors import JournalError
from palyra_ops.journal import JobRecord, Journal
from palyra_ops.journal.records import Claim, JobFields, NewRun
from palyra_ops.messages import RunMessage
from palyra_ops.model import Routine
from palyra_ops.schedule import Schedule, jitter_offset_ms, resolve_misfire
from palyra_ops.scheduler_batch import BatchSending, _sleep_until_wall

log = logging.getLogger("palyra_ops.scheduler")

BATCH = 64
#: how early the daemon claims (both stores). Claiming a herd 300 ms before its instant took the
#: claims off the critical path, but every claimed run is an `accepted` record from the claim on, so
#: runs listed before their instant (and a crash in the window records them failed): kept at 5 ms.
CLAIM_LEAD_MS = 5
IDLE_CAP_MS = 15_000
#: how often the scheduler polls the journal for others' changes when they are also pushed to it
FALLBACK_POLL_MS = 2_000
#: a backlog longer than this (an `every: 1s` routine down for days) is counted, not listed
MAX_LISTED_SKIPS = 1_000
MAX_ENUMERATED = 1_000_000
#: back-off of the loop while the journal cannot be written (or a tick keeps failing)
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 8.0
#: runs of one routine's on-time instants, claimed together, worth sending (the others would be
#: skipped by the gateway's concurrency gate): forbid runs one, queue_one one and one queued
CLAIM_KEEPS = {Concurrency.FORBID: 1, Concurrency.QUEUE_ONE: 2}


@dataclass
class JobPlan:
    """What one due job turns into: run rows to claim and the job's new position."""

    routine_id: str
    expected_next: int
    runs: list[NewRun] = field(default_factory=list)
    job_fields: JobFields = field(default_factory=lambda: JobFields())
    dispatch: list[tuple[RunMessage, bool]] = field(default_factory=list)  # (message, catch_up)


class _Cut:
    """Which of the jobs due by `tick`'s horizon it takes: those due by `base` first, at most `limit`;
    when fewer, also what comes due within the lead, up to `early_room` more (at most `batch` in all).
    The jobs arrive oldest first, so one read up to both bounds holds both groups."""

    def __init__(self, base: int, limit: int, early_room: int, batch: int) -> None:
        self.base, self.limit, self.early_room, self.batch = base, limit, early_room, batch
        self.kept = 0
        self.full = False

    def apply(self, jobs: list[JobRecord]) -> list[JobRecord]:
        now_due = [j for j in jobs if (j["next_run_at_unix_ms"] or 0) <= self.base][:self.limit]
        if len(now_due) == self.limit or not self.early_room:
            self.kept, self.full = len(now_due), len(now_due) == self.limit
            return now_due
        bound = min(self.batch, len(now_due) + self.early_room)
        kept = jobs[:bound]
        self.kept, self.full = len(kept), len(kept) == bound
        return kept


class Scheduler(BatchSending):
    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        *,
        gateway: Dispatcher,
        daemon_id: str = "",
        batch: int = BATCH,
        idle_cap_ms: int = IDLE_CAP_MS,
        poll_ms: int = 250,
        max_in_flight: int = 64,
        send: Callable[[RunMessage], Awaitable[Mapping[str, object]]] | None = None,
        lead_ms: int = 0,
        claim_ahead: int | None = None,
        early_max: int = 1024,
    ) -> None:
        self.journal = journal
        self.clock = clock
        self.gateway = gateway
        self.daemon_id = daemon_id
        self.batch = batch
        self.idle_cap_ms = idle_cap_ms
        self.poll_ms = poll_ms
        self.send = send or gateway.send
        #: claim this far ahead of the due time and send at the due instant, so the journal work is
        #: off the critical path (the daemon uses a few ms; FakeClock tests use 0)
        self.lead_ms = lead_ms
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(max_in_flight)
        #: claimed runs allowed to wait for a dispatch slot (backpressure to the claim loop): enough
        #: to keep every slot busy across a batch, few enough that they are sent soon
        self.claim_ahead = claim_ahead if claim_ahead is not None else max(2 * max_in_flight, batch)
        #: run ids claimed by the loop, due, and not yet handed to the gateway
        self._unsent: set[str] = set()
        #: run ids claimed before their instant (up to `lead_ms` early) and waiting for it: a herd is
        #: claimed before it is due, so its journal work is off the critical path (issue 14); bounded
        #: by `early_max`, and not counted as backpressure (they are not late)
        self._early: set[str] = set()
        self.early_max = early_max
        self._capacity = asyncio.Event()
        self.backpressured = False
        self._schedules: dict[str, tuple[str, Schedule]] = {}
        self._dispatching: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._stopped = asyncio.Event()
        self.running = False
        #: what keeps the loop from working right now (None when the last tick succeeded)
        self.fault: str | None = None
        self.fault_since_ms: int | None = None
        self.backoff_s = 0.0
        self.ticks = 0
        self.claimed = 0
        self.dispatched = 0
        self.dispatch_errors = 0
        self.last_tick_ms: int | None = None
        self.last_error: str | None = None

    # -- public -----------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def status(self) -> dict[str, Any]:
        now = self.clock.now_ms()
        nxt = self.journal.next_due_ms()
        retries, failures = self.gateway.transport_counts()
        return {
            "running": self.running,
            "last_tick_at": rfc3339(self.last_tick_ms),
            "last_tick_ms": self.last_tick_ms,
            "ticks": self.ticks,
            "due_backlog": self.journal.count_due(now),
            "running_count": self.gateway.active_count(),
            "dispatching": len(self._dispatching),
            # claimed runs waiting for a dispatch slot; backpressured: the loop stopped claiming
            "claimed_unsent": len(self._unsent),
            "claimed_early": len(self._early),
            "claim_ahead": self.claim_ahead,
            "backpressured": self.backpressured,
            "misfire_shed_total": sum(self.gateway.metrics.missed.values()),
            "next_due_at": rfc3339(nxt),
            "next_due_ms": nxt,
            "claimed_total": self.claimed,
            "dispatched_total": self.dispatched,
            "dispatch_errors_total": self.dispatch_errors,
            "last_error": self.last_error,
            "fault": self.fault,
            "backoff_s": self.backoff_s,
            # loopback calls sent again after a transport failure / failed on every try
            "loopback_retries_total": retries,
            "loopback_failures_total": failures,
        }

    async def run_forever(self) -> None:
        """The loop: tick, then sleep until the next due time, a wake-up or the idle cap."""
        self.running = True
        watcher = asyncio.ensure_future(self._watch_journal())
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    self._recover()
                    await self.tick()
                    nxt = self.journal.next_due_ms()
                except asyncio.CancelledError:
                    raise
                except JournalError as exc:
                    await self._back_off(exc.message, None)
                    continue
                except Exception as exc:  # one bad tick must not stop the scheduler
                    await self._back_off(f"{type(exc).__name__}: {exc}", exc)
                    continue
                if self.fault is not None:
                    log.warning("scheduler resumed after %.1f s paused (%s)",
                                max(0, self.clock.now_ms() - (self.fault_since_ms or 0)) / 1000, self.fault)
                    self.fault = self.fault_since_ms = None
                self.backoff_s = 0.0
                if self.backpressured or self._early_full():  # due work waits for slots, not for time
                    self._capacity.clear()
                    if len(self._unsent) >= self.claim_ahead or self._early_full():
                        try:
                            await asyncio.wait_for(self._capacity.wait(), self.idle_cap_ms / 1000)
                        except TimeoutError:
                            pass
                    continue
                now = self.clock.now_ms()
                delay = self.idle_cap_ms if nxt is None else max(0, min(nxt - self.lead_ms - now, self.idle_cap_ms))
                if delay == 0:
                    await asyncio.sleep(0)
                    continue
                try:
                    await asyncio.wait_for(self._wake.wait(), delay / 1000)
                except TimeoutError:
                    pass
        finally:
            self.running = False
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    def _recover(self) -> None:
        """While a fault stands: write the held run records, or probe, before claiming anything."""
        if self.gateway.unwritten_count():
            self.gateway.flush_unwritten()
        elif self.fault is not None or self.journal.write_fault is not None:
            self.journal.probe_write()

    async def _back_off(self, message: str, exc: Exception | None) -> None:
        """Pause the loop, doubling the pause while the same trouble lasts; log only a new one."""
        self.backoff_s = min(max(self.backoff_s * 2, BACKOFF_MIN_S), BACKOFF_MAX_S)
        self.last_error = message
        if self.fault != message:
            if self.fault is None:
                self.fault_since_ms = self.clock.now_ms()
            self.fault = message
            if exc is not None:
                log.error("scheduler tick failed; retrying with back-off", exc_info=exc)
            else:
                log.warning("scheduler paused: %s; retrying with back-off up to %.0f s", message, BACKOFF_MAX_S)
        try:
            await asyncio.wait_for(self._stopped.wait(), self.backoff_s)
        except TimeoutError:
            pass

    async def stop(self) -> None:
        """Stop claiming; claimed runs not yet handed to the gateway are recorded as cancelled."""
        self._stopping = True
        self._stopped.set()
        self._capacity.set()
        self.wake()
        for task in list(self._dispatching):
            task.cancel()
        if self._dispatching:
            await asyncio.gather(*list(self._dispatching), return_exceptions=True)

    async def drain(self) -> None:
        while self._dispatching:
            await asyncio.gather(*list(self._dispatching), return_exceptions=True)

    async def tick(self) -> int:
        """Claim and dispatch everything due now, batch by batch; returns the number of runs claimed."""
        total = 0
        while True:
            base = self.journal.judged_now_ms(self.clock.now_ms())  # PostgreSQL: its clock too
            now = base + self.lead_ms
            self.last_tick_ms = base
            self.ticks += 1
            room = self.claim_ahead - len(self._unsent)
            if room <= 0:  # every slot is spoken for: leave the due jobs in the journal for now
                self.backpressured = True
                self.gateway.metrics.due_backlog = max(0, self.journal.count_due(base))
                return total
            self.backpressured = False
            limit = min(self.batch, room)
            # what is due now first (bounded by the slots); then, with room left, what comes due
            # within the lead (bounded by early_max): one read up to both bounds, cut by the plan
            early_room = 0 if not self.lead_ms or self._early_full() else self.early_max - len(self._early)
            plans: list[JobPlan] = []
            cut = _Cut(base if self.lead_ms else now, limit, early_room, self.batch)
            # the due jobs read, held (PostgreSQL: locked SKIP LOCKED, so peers take other ones),
            # planned and claimed in one transaction
            due, results = self.journal.claim_due(now, min(self.batch, limit + early_room),
                                                  functools.partial(self._plan_batch, now=now, into=plans, cut=cut))
            if not due or not cut.kept:
                self.gateway.metrics.due_backlog = 0
                return total
            together: list[RunMessage] = []  # this claim's runs that may share a loopback call
            for plan, ids in zip(plans, results, strict=True):
                if ids is None:
                    continue  # another scheduler (or an apply) moved this job first
                to_send = []
                for (msg, catch_up), run_id in zip(plan.dispatch, ids, strict=True):
                    if run_id is None or not msg:
                        continue  # this occurrence was claimed before (crash, or a second scheduler)
                    msg["run_id"] = run_id
                    to_send.append((msg, catch_up))
                total += len(to_send)
                self.claimed += len(to_send)
                if to_send:
                    real_now = now - self.lead_ms
                    for m, _ in to_send:
                        trigger = m.get("trigger")
                        due = trigger["due_at_ms"] if trigger is not None else None
                        (self._early if self.lead_ms and due is not None and due > real_now else self._unsent).add(m["run_id"])
                    # runs due at one instant share a loopback call (a batch body); a `send` of
                    # its own (tests) gets one call per run
                    if self.send == self.gateway.send and not any(c for _, c in to_send):
                        together.extend(m for m, _ in to_send)
                    else:
                        self._launch(to_send)
            self._launch_together(together)
            self.gateway.metrics.claimed_unsent = len(self._unsent)
            full = cut.full
            self.gateway.metrics.due_backlog = max(0, self.journal.count_due(base)) if full else 0
            if not full:
                return total
            await asyncio.sleep(0)  # let dispatches and the server breathe between batches

    # -- planning ---------------------------------------------------------------------------------

    def schedule_for(self, routine: Routine) -> Schedule:
        assert routine.schedule is not None
        key = repr((routine.schedule, routine.policies.dst))
        cached = self._schedules.get(routine.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        s = Schedule.from_spec(routine.schedule, routine.policies.dst)
        self._schedules[routine.name] = (key, s)
        return s

    def _plan_batch(self, jobs: list[JobRecord], *, now: int, into: list[JobPlan], cut: _Cut) -> list[Claim]:
        """The claims of a due batch (`into` gets the plans), the jobs first cut to what `tick` takes
        of them (`_Cut`); the batch's routines are checked with one read, not one per job (a round
        trip each on PostgreSQL)."""
        jobs = cut.apply(jobs)
        hashes = self.gateway.prime_routines([job["routine_id"] for job in jobs])
        into[:] = [p for p in (self.plan_job(job, now, hashes) for job in jobs) if p is not None]
        return [(p.routine_id, p.expected_next, p.runs, p.job_fields) for p in into]

    def plan_job(self, job: JobRecord, now: int, hashes: dict[str, str] | None = None) -> JobPlan | None:
        """`hashes`: the routines' hashes as `prime_routines` just read them (else read here)."""
        rid = job["routine_id"]
        expected = job["next_run_at_unix_ms"]
        plan = JobPlan(rid, expected)
        routine = self.gateway.routine(rid) if hashes is None else self.gateway.routine_at(rid, hashes.get(rid))
        if routine is None or routine.schedule is None:
            plan.job_fields = {"next_run_at_unix_ms": None, "next_nominal_ms": None}
            return plan
        try:
            sched = self.schedule_for(routine)
        except Exception as exc:  # a schedule that stopped parsing (tz data change): park it, loudly
            log.error("routine %s: schedule unusable: %s", rid, exc)
            plan.job_fields = {"next_run_at_unix_ms": None, "next_nominal_ms": None}
            return plan
        anchor = job.get("anchor_ms")
        p = routine.policies
        jitter = p.jitter_ms

        def due_at(n: int) -> int:
            return n + jitter_offset_ms(rid, n, jitter)

        nominal = job.get("next_nominal_ms")
        if nominal is None or due_at(nominal) != expected:
            nominal = expected  # written by apply: the nominal instant itself
            if jitter and due_at(nominal) > now:
                plan.job_fields = {"next_run_at_unix_ms": due_at(nominal), "next_nominal_ms": nominal}
                return plan

        # every nominal instant whose (jittered) due time has come, in order
        due: list[int] = [nominal]
        skipped_extra = 0
        cursor = nominal
        while True:
            chunk = sched.fires_between(cursor, now, anchor, limit=10_000)
            if not chunk:
                break
            for n in chunk:
                if due_at(n) <= now:
                    due.append(n)
            cursor = chunk[-1]
            if len(chunk) < 10_000:
                break
            if len(due) > MAX_ENUMERATED:  # stop listing; the rest only counts toward the skip
                skipped_extra = len(sched.fires_between(cursor, now, anchor, limit=MAX_ENUMERATED))
                break
        last = due[-1]
        nxt = sched.next_after(last, anchor) if not skipped_extra else sched.next_after(now, anchor)
        plan.job_fields = {
            "next_run_at_unix_ms": due_at(nxt) if nxt is not None else None,
            "next_nominal_ms": nxt,
            "last_nominal_ms": last,
        }

        grace = p.misfire_grace_ms
        real = now - self.lead_ms  # lateness is judged on the clock, not on the claim's lead
        d = resolve_misfire(p.misfire, [n for n in due if real - due_at(n) > grace], p.max_catch_up,
                            on_time=[n for n in due if real - due_at(n) <= grace])
        run_times, skipped, catch_up = d.run, d.skipped, d.in_order
        skipped_count = len(skipped) + skipped_extra
        self.gateway.metrics.missed_runs(p.misfire, skipped_count)
        listed = skipped[-MAX_LISTED_SKIPS:]

        def row(n: int, **extra: Any) -> NewRun:
            return {  # type: ignore[typeddict-item]  # extra holds NewRun keys only
                "routine_id": rid,
                "occurrence_key": f"{rid}|{n}",
                "scheduled_at_ms": n,
                "trigger_kind": "schedule",
                "status": "accepted",
                "attempt": 1,
                "daemon_id": self.daemon_id,
                "created_at_ms": now - self.lead_ms,  # the claim's real time (now is lead_ms ahead)
                **extra,
            }

        if p.misfire == Misfire.IGNORE and skipped_count:
            # nothing runs for the missed times; one skipped record keyed on the latest says what was dropped
            n = skipped[-1]
            plan.runs.append(row(
                n, status="skipped", skipped_count=skipped_count, skipped_times=listed, finished_at_ms=now - self.lead_ms,
                reason=f"misfire: ignored {skipped_count} missed time{'s' if skipped_count != 1 else ''} "
                       f"(later than misfire_grace)",
            ))
            plan.dispatch.append(({}, False))  # placeholder keeps runs and dispatches aligned; never sent
            self.gateway.metrics.run("skipped")
            self.gateway.metrics.gate("misfire", "skipped")
            skipped_count = 0
        keep = CLAIM_KEEPS.get(p.concurrency)
        if keep and not catch_up and len(run_times) > keep:
            # several on-time instants claimed at once (the loop was held back, less than the grace):
            # sent together, all but `keep` would only reach the gateway to be skipped by forbid /
            # queue_one, a loopback call each. Recorded skipped here instead; the latest run.
            overlapped, run_times = run_times[:-keep], run_times[-keep:]
            why = (f"concurrency: {p.concurrency} (claimed together with the run for {rfc3339(run_times[-1])}, "
                   f"which runs instead)")
            for n in overlapped:
                plan.runs.append(row(n, status="skipped", finished_at_ms=now - self.lead_ms, reason=why))
                plan.dispatch.append(({}, False))
                self.gateway.metrics.run("skipped")
                self.gateway.metrics.gate("concurrency", "skipped")
        for i, n in enumerate(run_times):
            extra: dict[str, int | list[int]] = {}
            if i == 0 and skipped_count:
                extra = {"skipped_count": skipped_count, "skipped_times": listed}
            plan.runs.append(row(n, **extra))
            msg = self.gateway.message_for(routine, trigger_kind="schedule", scheduled_at_ms=n, due_at_ms=due_at(n),
                                           catch_up=catch_up)
            plan.dispatch.append((msg, catch_up))
        return plan

    # -- dispatch ---------------------------------------------------------------------------------

    def dispatch_claimed(self, messages: list[RunMessage], *, in_order: bool) -> None:
        """Send runs claimed outside the loop (a backfill) the way claimed occurrences are sent:
        in order one after the other when `in_order`, with the same failure handling and shutdown."""
        if messages:
            self._launch([(m, in_order) for m in messages])

    def _launch(self, to_send: list[tuple[RunMessage, bool]]) -> None:
        if any(c for _, c in to_send):
            # catch-up runs of one routine go out in order, one call after the other
            task = asyncio.ensure_future(self._send_in_order([m for m, _ in to_send]))
            self._track(task)
            return
        for msg, _ in to_send:
            self._track(asyncio.ensure_future(self._send_one(msg)))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._dispatching.add(task)
        task.add_done_callback(self._dispatching.discard)

    async def _send_in_order(self, msgs: list[RunMessage]) -> None:
        for i, m in enumerate(msgs):
            try:
                await self._send_one(m)
            except asyncio.CancelledError:
                for rest in msgs[i + 1:]:
                    self._sent(rest)
                    self._not_sent(rest, "daemon_shutdown", status="cancelled")
                raise

    async def _send_one(self, msg: RunMessage) -> None:
        try:
            if self.lead_ms:
                trigger = msg.get("trigger")
                due = trigger["due_at_ms"] if trigger is not None else None
                if due is not None:
                    await _sleep_until_wall(due / 1000)
            self._came_due(msg)
            while True:
                try:
                    async with self._sem:
                        self._sent(msg)
                        await self.send(msg)
                    self.dispatched += 1
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.dispatch_errors += 1
                    nxt = self.gateway.dispatch_failed(msg, exc)
                    if nxt is None:
                        return
                    msg = nxt  # the next attempt, per the routine's retry policy
                    await self.gateway.sleep_until(int(msg["not_before_ms"]))
        except asyncio.CancelledError:
            self._sent(msg)
            self._not_sent(msg, "daemon_shutdown", status="cancelled")
            raise

    def _early_full(self) -> bool:
        return len(self._early) >= self.early_max

    def _came_due(self, msg: RunMessage) -> None:
        """A run claimed ahead of its instant reached it: it now waits for a slot like any due run."""
        rid = msg.get("run_id")
        if rid in self._early:
            self._early.discard(rid)
            self._unsent.add(rid)
            self._capacity.set()

    def _sent(self, msg: RunMessage) -> None:
        """The claimed run left the wait for a slot (sent, or given up): room for another claim."""
        rid = msg.get("run_id")
        if rid in self._early:  # given up before its instant (stopping)
            self._early.discard(rid)
            self._capacity.set()
        if rid in self._unsent:
            self._unsent.discard(rid)
            self.gateway.metrics.claimed_unsent = len(self._unsent)
            if len(self._unsent) < self.claim_ahead:
                self._capacity.set()

    def _not_sent(self, msg: RunMessage, reason: str, status: str = "failed") -> None:
        """Finalize a claimed run the gateway never took (it would otherwise wait for a restart)."""
        try:
            run = self.journal.get_run(msg["run_id"]) if msg.get("run_id") else None
        except JournalError:
            run = None
        if run is not None and run["status"] == "accepted" and run.get("received_at_ms") is None:
            self.gateway.record_run(
                msg["run_id"], {"status": status, "reason": reason, "finished_at_ms": self.clock.now_ms()},
                msg["routine_id"], {"last_run_id": msg["run_id"], "last_status": status})
            self.gateway.metrics.run(status)

    async def _watch_journal(self) -> None:
        """Wake when another process commits to the journal (apply from the CLI, a peer's API): at
        once where the store pushes changes (PostgreSQL LISTEN/NOTIFY), and by polling
        `data_version` every `poll_ms` — the fallback, every FALLBACK_POLL_MS at least when pushed."""
        loop = asyncio.get_running_loop()

        def woken() -> None:  # the store's thread
            if not loop.is_closed():
                loop.call_soon_threadsafe(self.wake)

        interval_ms = max(self.poll_ms, FALLBACK_POLL_MS) if self.journal.on_change(woken) else self.poll_ms
        last = self.journal.data_version()
        while True:
            await asyncio.sleep(interval_ms / 1000)
            try:
                v = self.journal.data_version()
            except JournalError:  # unreadable for now (I/O error): keep polling
                continue
            except Exception:  # journal closing during shutdown
                return
            if v != last:
                last = v
                self.wake()
