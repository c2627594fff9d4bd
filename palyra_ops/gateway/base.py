"""What every stage of the gateway shares: its state, its lookups and how a run transition is written.

`Gateway` (core.py) is assembled from the stages of the pipeline, one module each — gates.py
(disabled → … → concurrency), execution.py (sandbox or backend, retries, delivery, events) and
approvals.py — all on this base, so each stage reads and writes the same in-process run state
without reaching into another stage's module. The stages call each other only through the methods
named in `GatewayState`'s docstring below.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from palyra_ops.backends import Backend, EchoBackend
from palyra_ops.clock import Clock, SystemClock
from palyra_ops.delivery import Deliverer
from palyra_ops.enums import DeliveryMode, RunTrigger, SilentPolicy
from palyra_ops.errors import JournalError
from palyra_ops.journal import FINAL_STATUSES, Journal, new_id
from palyra_ops.metrics import Metrics
from palyra_ops.model import Routine
from palyra_ops.policy import evaluate
from palyra_ops.tracing import Propagating, Span, Tracer

if TYPE_CHECKING:
    from palyra_ops.gateway.loopback import Loopback
    from palyra_ops.skills.sandbox import SkillRunner
    from palyra_ops.skills.store import SkillStore

log = logging.getLogger("palyra_ops.gateway")
#: one INFO line per finished run (every final status, gate stops included): docs/daemon.md
run_log = logging.getLogger("palyra_ops.runs")


def log_finished(routine_id: str, run: dict[str, Any], status: str, reason: str | None, now_ms: int,
                 trace_id: str | None = None) -> None:
    if not run_log.isEnabledFor(logging.INFO):
        return
    started = run.get("started_at_ms")
    took = f"{now_ms - started}ms" if isinstance(started, int) else "-"
    fields = {"routine": routine_id, "run": run.get("run_id"), "status": status, "attempt": run.get("attempt", 1),
              "trigger": run.get("trigger_kind"), "scheduled_at_ms": run.get("scheduled_at_ms"),
              "duration_ms": now_ms - started if isinstance(started, int) else None, "reason": reason,
              "trace_id": trace_id}
    run_log.info("run finished: routine=%s run=%s status=%s attempt=%s duration=%s reason=%s",
                 routine_id, run.get("run_id"), status, run.get("attempt", 1), took,
                 json.dumps(reason) if reason else "-", extra={"fields": fields})

DAEMON_PRINCIPAL = "system:daemon"
DAEMON_DEVICE_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
TRIGGER_KINDS = tuple(RunTrigger)
GATES = ("disabled", "approval", "dedupe", "cooldown", "quiet_hours", "policy", "concurrency")

SleepUntil = Callable[[int], Awaitable[None]]

@dataclass(frozen=True)
class PolicyDecision:
    allowed: bool
    rule: str
    reason: str


class SkillDenied(Exception):
    """A skill run refused before it executed (policy, quarantine, not installed, tampered module).

    Kept apart from BackendError because the outcome differs: the run is recorded `denied` with the
    deciding rule and is never retried — retrying a refusal cannot change the answer, and a retried
    quarantine would only multiply denied records.
    """

    def __init__(self, reason: str, rule: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rule = rule


def baseline_policy(policies: list[dict], **kw: Any) -> PolicyDecision:
    return PolicyDecision(True, "baseline", "baseline allow")



def default_policy_fn() -> Callable[..., PolicyDecision]:
    """The policy engine (`palyra_ops.policy.evaluate`): it ships with the package."""
    return evaluate


def real_sleep_until(clock: Clock) -> SleepUntil:
    async def sleep_until(ms: int) -> None:
        while True:
            delay = ms - clock.now_ms()
            if delay <= 0:
                return
            await asyncio.sleep(min(delay / 1000, 5.0))

    return sleep_until


def reaches_out(routine: Routine, *, failed: bool) -> bool:
    """Whether delivering this outcome of `routine` has an effect beyond the daemon's own log (a
    channel, a webhook, the memory store); `logs_only` and a suppressed outcome do not."""
    d = routine.delivery
    if d.silent_policy == SilentPolicy.AUDIT_ONLY:
        return not failed  # a success is remembered (memory); a failure is suppressed
    if d.silent_policy == SilentPolicy.FAILURE_ONLY and not failed:
        return False
    mode = d.failure_mode if failed and d.failure_mode else d.mode
    return mode != DeliveryMode.LOGS_ONLY


class GatewayState:
    """The gateway's in-process run state and the helpers every stage uses.

    Stages call across modules only through `gates`/`gates_or_fail` (gates.py), `_start`
    (execution.py) and `_emit_quietly` (execution.py).
    """

    def __init__(
        self,
        journal: Journal,
        clock: Clock | None = None,
        *,
        backend: Backend | None = None,
        deliverer: Deliverer | None = None,
        daemon_id: str | None = None,
        sleep_until: SleepUntil | None = None,
        policy_fn: Callable[..., PolicyDecision] | None = None,
        skill_runner: SkillRunner | None = None,
        skill_store: SkillStore | None = None,
        on_change: Callable[[], None] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.journal = journal
        self.clock = clock or SystemClock()
        self.backend: Backend = backend or EchoBackend()
        self.policy_fn = policy_fn or default_policy_fn()
        self.deliverer = deliverer or Deliverer(journal, self.clock, policy_check=self._deliver_allowed)
        if self.deliverer.policy_check is None:
            self.deliverer.policy_check = self._deliver_allowed
        self.daemon_id = daemon_id or new_id()
        self.sleep_until: SleepUntil = sleep_until or real_sleep_until(self.clock)
        #: waits are on the system clock, so timeouts can use the loop's timers directly
        self._real_time = sleep_until is None and isinstance(self.clock, SystemClock)
        self.skill_runner = skill_runner
        self.skill_store = skill_store
        self.on_change = on_change
        self.tracer: Tracer = tracer or Propagating()
        #: trace context of accepted runs not yet executing (run id -> traceparent), and the open
        #: `palyra.run` span of each executing run (by its first attempt's id)
        self._traces: dict[str, str] = {}
        self._spans: dict[str, Span] = {}
        self.metrics = Metrics()
        self.loopback: Loopback | None = None  # set by the daemon once it serves
        #: other daemons may share the journal (PostgreSQL): `forbid` looks at their running runs too
        self.shared_journal = False
        self._routines: dict[str, tuple[str, Routine]] = {}
        self._policies: tuple[int, list[dict]] | None = None
        # in-process run state: what is executing, parked, or queued behind an active run
        self._active: dict[str, dict[str, asyncio.Task[None]]] = {}
        self._current: dict[asyncio.Task[None], str] = {}  # task -> run id of its current attempt
        self._queued: dict[str, tuple[dict[str, Any], Routine]] = {}  # queue_one: routine -> run
        self._backlog: dict[str, deque[tuple[dict[str, Any], Routine]]] = {}  # catch-up, in order
        self._deferred: dict[str, str] = {}  # quiet-hours defer: routine -> run id
        self._held: dict[str, str] = {}  # run id -> routine id, every accepted run not yet executing
        self._pending_dedupe: dict[str, str] = {}  # awaiting-approval run id -> its dedupe key
        self._cancel_reasons: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        #: run transitions the journal could not take (full, read-only): run id -> (run fields,
        #: routine id, job fields), written by `flush_unwritten` once it can, so no run stays active
        self._unwritten: dict[str, tuple[dict[str, Any], str | None, dict[str, Any] | None]] = {}
        #: fencing tokens of the runs this gateway holds (run id -> token, `journal/store.py`
        #: `update_run_and_job`): every write of a run carries its token, so once a peer reaped or took
        #: over a run this daemon held (it was stalled past its lease) the late writes are refused
        self._fences: dict[str, str] = {}
        #: run ids this gateway has taken in (newest last, bounded): a batch's arrivals are read
        #: before its first message is handled (`arrivals`), so a resent batch handled while the
        #: first is still going reads such a run again instead of trusting its early read
        self._arrived: OrderedDict[str, None] = OrderedDict()
        #: retry attempts waiting for their backoff here, and parked runs handed to the other daemons
        #: at a clean stop (their tasks end without a record: a peer runs them; gateway/handover.py)
        self._waiting: set[str] = set()
        self._released: set[str] = set()

    # -- lookups ----------------------------------------------------------------------------------

    def routine(self, name: str) -> Routine | None:
        cached = self._routines.get(name)
        if cached is not None and self.journal.resource_hash("Routine", name) == cached[0]:
            return cached[1]
        return self._load_routine(name)

    def routine_at(self, name: str, current_hash: str | None) -> Routine | None:
        """`routine`, given the hash the caller just read along with other things (None: no such
        routine): no read of its own unless the cached object is stale. On PostgreSQL each read is a
        round trip with the event loop blocked, so the run path reads hashes together (docs/ha.md)."""
        if current_hash is None:
            self._routines.pop(name, None)
            return None
        cached = self._routines.get(name)
        if cached is not None and cached[0] == current_hash:
            return cached[1]
        return self._load_routine(name)

    def prime_routines(self, names: Sequence[str]) -> dict[str, str]:
        """A claimed batch's routines: their hashes in one read, the stale or uncached ones loaded
        in one more (not one read per job); the hashes, for `routine_at` (absent: no such routine)."""
        hashes = self.journal.resource_hashes("Routine", names)
        stale = [n for n, h in hashes.items() if (self._routines.get(n) or ("",))[0] != h]
        for stored in self.journal.resources_named("Routine", stale) if stale else ():
            self._routines[stored.name] = (stored.hash, Routine.from_resource(stored))
        return hashes

    def _load_routine(self, name: str) -> Routine | None:
        stored = self.journal.get_resource("Routine", name)
        if stored is None:
            self._routines.pop(name, None)
            return None
        r = Routine.from_resource(stored)
        self._routines[name] = (stored.hash, r)
        return r

    def policies(self, serial: int | None = None) -> list[dict]:
        """The Policy documents, cached by the journal's serial (`serial`: the caller just read it)."""
        if serial is None:
            serial = self.journal.serial()
        if self._policies is None or self._policies[0] != serial:
            docs = [{"name": r.name, "spec": r.body["spec"]} for r in self.journal.list_resources("Policy")]
            self._policies = (serial, docs)
        return self._policies[1]

    def _deliver_allowed(self, routine: Routine, channel: str) -> tuple[bool, str]:
        d = self.policy_fn(self.policies(), principal=routine.owner, action=f"channel.deliver:{channel}",
                           channel=routine.channel, owner=routine.owner)
        return bool(d.allowed), f"{d.reason} ({d.rule})"

    def transport_counts(self) -> tuple[int, int]:
        lb = self.loopback
        return (lb.retries, lb.failures) if lb is not None else (0, 0)

    def active_count(self) -> int:
        return len(self._current)

    def active_run_ids(self, routine_id: str) -> list[str]:
        return [self._current[t] for t in self._active.get(routine_id, {}).values() if t in self._current]

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def receipt(self, run: dict[str, Any]) -> dict[str, Any]:
        """A run row as the gateway knows it: the journal's, with any transition still unwritten."""
        out = dict(run)
        pending = self._unwritten.get(run["run_id"])
        if pending is not None:
            out.update(pending[0])
        return out

    def journal_failed(self, run: dict[str, Any], exc: JournalError) -> None:
        """Finalize a run whose transition the journal refused (written once it can be)."""
        self._held.pop(run["run_id"], None)
        self._traces.pop(run["run_id"], None)
        self._deferred = {k: v for k, v in self._deferred.items() if v != run["run_id"]}
        now = self.clock.now_ms()
        fields = self._receipt(run, {"status": "failed", "reason": f"{exc.code}: {exc.message}", "finished_at_ms": now})
        self.record_run(run["run_id"], fields, run["routine_id"], {"last_run_id": run["run_id"], "last_status": "failed"})
        self.metrics.run("failed")
        run.update(fields)

    # -- run records the journal could not take ---------------------------------------------------

    def record_run(self, run_id: str, fields: dict[str, Any], routine_id: str | None,
                   job_fields: dict[str, Any] | None) -> bool:
        """Write a run transition, or keep it for later while the journal cannot be written.

        Returns whether it was written. Transitions of one run are merged in order, except that a
        final status already waiting wins over later ones (it happened first). A later write for a
        run with a transition waiting carries the waiting fields too, so nothing is lost or reordered.
        """
        pending = self._unwritten.pop(run_id, None)
        if pending is not None:
            pf, pr, pj = pending
            if pf.get("status") in FINAL_STATUSES:
                fields, job_fields = {**fields, **pf}, {**(job_fields or {}), **(pj or {})}
            else:
                fields, job_fields = {**pf, **fields}, {**(pj or {}), **(job_fields or {})}
            routine_id = routine_id or pr
        try:
            written = self.journal.update_run_and_job(run_id, fields, routine_id, job_fields,
                                                      fence=self._fences.get(run_id))
        except JournalError as exc:
            self._unwritten[run_id] = (fields, routine_id, job_fields)
            log.debug("run %s: transition held until the journal is writable: %s", run_id, exc.message)
            return False
        if not written:
            self.fenced(run_id, routine_id, fields)
        elif fields.get("status") in FINAL_STATUSES:
            self._fences.pop(run_id, None)
        return written

    def take_fence(self, run_id: str) -> str:
        """The token this gateway writes run `run_id` with, made the first time it takes the run."""
        token = self._fences.get(run_id)
        if token is None:
            token = self._fences[run_id] = new_id()
        return token

    def fenced(self, run_id: str, routine_id: str | None, fields: dict[str, Any]) -> None:
        """A write the fence refused: a peer reaped the run (this daemon was stalled past its lease)
        or took it over. The journal keeps the peer's record; this is logged and kept as an event."""
        self._fences.pop(run_id, None)
        self.metrics.handover("fenced_write")
        log.warning("run %s of %s: not written (%s): a peer reaped it or took it over while this daemon was"
                    " stalled past its lease", run_id, routine_id, fields.get("status") or "update")
        try:
            self.journal.add_event("run.fenced", {"run_id": run_id, "routine_id": routine_id, "daemon_id": self.daemon_id,
                                                  "status": fields.get("status")})
        except JournalError as exc:
            log.debug("run.fenced event not recorded: %s", exc.message)

    def still_held(self, run_id: str, routine: Routine | None = None, *, failed: bool = False) -> bool:
        """Checked just before delivering a run's output when peers share the journal: False once a
        peer reaped the run (or took it over) while this daemon was stalled — it is not delivered.
        A journal that cannot answer does not stop a delivery (the run's own record decides later).
        Not asked (a round trip on the run path saved) when `routine`'s delivery of this outcome
        leaves nothing outside this daemon's log: its final write is fenced all the same."""
        if not self.shared_journal or (routine is not None and not reaches_out(routine, failed=failed)):
            return True
        try:
            held = self.journal.fence_holds(run_id, self._fences.get(run_id))
        except JournalError:
            return True
        if not held:
            self.metrics.handover("fenced_delivery")
        return held

    def unwritten_count(self) -> int:
        return len(self._unwritten)

    def flush_unwritten(self) -> int:
        """Write the held transitions, oldest first; raises the journal's error while it still fails.

        A held run's job summary (`last_run_id`, `last_status`) is only written when no newer run
        has written one since (run ids are ULIDs, so they compare by time).
        """
        done = 0
        try:
            for run_id in list(self._unwritten):
                fields, rid, job = self._unwritten[run_id]
                if rid is not None and job:
                    current = (self.journal.get_job(rid) or {}).get("last_run_id")
                    if current is not None and current > run_id:
                        job = None
                if not self.journal.update_run_and_job(run_id, fields, rid, job, fence=self._fences.get(run_id)):
                    self.fenced(run_id, rid, fields)
                elif fields.get("status") in FINAL_STATUSES:
                    self._fences.pop(run_id, None)
                del self._unwritten[run_id]
                done += 1
        finally:
            if done:
                log.warning("journal writable again: wrote %d held run record(s)%s", done,
                            f", {len(self._unwritten)} still held" if self._unwritten else "")
        return done

    def _stop(self, run: dict[str, Any], routine: Routine | None, status: str, reason: str, *, gate: str,
              rule: str | None = None) -> dict[str, Any]:
        now = self.clock.now_ms()
        fields: dict[str, Any] = {"status": status, "reason": reason, "finished_at_ms": now}
        if rule is not None:
            fields["policy_rule"] = rule
        self._receipt(run, fields)
        self.record_run(run["run_id"], fields, run["routine_id"], {"last_run_id": run["run_id"], "last_status": status})
        self._held.pop(run["run_id"], None)
        self._traces.pop(run["run_id"], None)
        self.metrics.gate(gate, status)
        self.metrics.run(status)
        run.update(fields)
        log_finished(run["routine_id"], run, status, reason, now)
        return run

    @staticmethod
    def _receipt(run: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        if run.pop("_receipt", False):
            fields["received_at_ms"] = run["received_at_ms"]
        return fields

