"""The gateway pipeline: the one path every message and every routine run takes.

    gates (disabled → approval → dedupe key → cooldown → quiet hours → policy → concurrency)
      → execution (skill sandbox or agent backend, under a timeout, with retries)
      → delivery → run record

Scheduled, manual and event triggers all arrive as `POST /gateway/v1/messages` calls (the scheduler's
loopback call, or `dispatch`/`emit_event` calling the daemon's own address), so a routine run is
indistinguishable from a user message up to the point where it names a routine. Routine messages are
only accepted from `system:daemon`, and a `system:daemon` message only with the daemon's internal
credential, so a console token holder cannot forge a scheduled run.

Every stop is a run record with its reason: a gate that stops a trigger finalizes the run as
skipped / throttled / denied (or parks it as awaiting_approval), never silently drops it.

Time comes from the injected clock, and every wait (retry backoff, quiet-hours defer, timeouts, the
echo backend's sleep hint) goes through `sleep_until(ms)`, so tests drive all of it with a FakeClock.
"""


from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from palyra_ops.backends import BackendError, ExecRequest
from palyra_ops.enums import RunTrigger
from palyra_ops.errors import (
    BackendFailed,
    Conflict,
    InvalidInput,
    JournalError,
    NotFound,
    PalyraError,
    PermissionDenied,
)
from palyra_ops.gateway.approvals import Approvals
from palyra_ops.gateway.base import DAEMON_DEVICE_ID, DAEMON_PRINCIPAL, TRIGGER_KINDS, log
from palyra_ops.gateway.execution import Execution
from palyra_ops.gateway.gates import Gates
from palyra_ops.gateway.handover import Handover
from palyra_ops.gateway.loopback import describe_error
from palyra_ops.journal import new_id
from palyra_ops.journal.records import RunContext
from palyra_ops.messages import RunMessage, TriggerInfo
from palyra_ops.model import Routine
from palyra_ops.schedule import retry_delay_ms
from palyra_ops.tracing import parse_traceparent

#: run ids a gateway remembers taking in (`_arrived`): far more than one loopback call can carry
#: (a batch is at most 256) or than are resent while the first call is still being handled
ARRIVED_KEPT = 4096


class Gateway(Gates, Execution, Approvals, Handover):
    """The pipeline assembled from its stages; this module holds its entry points and lifecycle."""

    # -- entry points -----------------------------------------------------------------------------

    def arrivals(self, messages: Sequence[Mapping[str, Any]]) -> dict[str, RunContext]:
        """The `run_context`s of a claimed batch's runs, read at once (one round trip on PostgreSQL
        for the batch instead of one per run), for `handle_message(seen=…)`.

        Only for runs whose routine occurs once in the batch: an earlier message of the same
        routine changes the job row a later one's gates read (cooldown, last run). A journal that
        cannot answer leaves each message to read (and fail) on its own."""
        named = [m for m in messages if m.get("run_id") and isinstance(m.get("routine_id"), str)]
        routines = Counter(m["routine_id"] for m in named)
        pairs = [(str(m["run_id"]), m["routine_id"]) for m in named if routines[m["routine_id"]] == 1]
        if not pairs:
            return {}
        try:
            return self.journal.run_contexts(pairs)
        except JournalError:
            return {}

    async def handle_message(self, body: dict[str, Any], *, internal: bool, received_at_ms: int | None = None,
                             seen: RunContext | None = None) -> tuple[int, dict[str, Any]]:
        """`POST /gateway/v1/messages`: a routine run (from system:daemon) or a user message.
        `seen`: the run's context as its batch's `arrivals` read it."""
        principal = body.get("principal")
        if not isinstance(principal, str) or not principal:
            raise InvalidInput("message needs a principal (e.g. user:alice)")
        if principal == DAEMON_PRINCIPAL and not internal:
            raise PermissionDenied("system:daemon messages need the daemon's internal credential")
        if body.get("routine_id") is not None:
            if principal != DAEMON_PRINCIPAL:
                raise PermissionDenied("routine runs are dispatched by system:daemon only; "
                                  "use POST /console/v1/routines/dispatch")
            if body.get("device_id") != DAEMON_DEVICE_ID:
                raise PermissionDenied(f"system:daemon messages carry device id {DAEMON_DEVICE_ID}")
            return 202, await self.accept(body, received_at_ms=received_at_ms, seen=seen)
        return 200, await self._user_message(body, principal, received_at_ms)

    async def _user_message(self, body: dict[str, Any], principal: str, received_at_ms: int | None) -> dict[str, Any]:
        received = received_at_ms if received_at_ms is not None else self.clock.now_ms()
        text = body.get("text")
        if not isinstance(text, str) or not text:
            raise InvalidInput("message needs a non-empty 'text'")
        channel = str(body.get("channel") or "api")
        req = ExecRequest(routine_id="", run_id=new_id(), attempt=1, owner=principal, channel=channel, prompt=text,
                          trigger_kind="message", scheduled_at_ms=None, trigger_payload=body.get("context"))
        try:
            output = await self.backend.run(req, now_ms=self.clock.now_ms(), sleep_until=self.sleep_until)
        except BackendError as exc:
            raise BackendFailed(str(exc)) from None
        return {"message_id": req.run_id, "principal": principal, "channel": channel, "output": output,
                "received_at_ms": received}

    def message_for(self, routine: Routine, *, trigger_kind: str, payload: Any = None, dedupe_key: str | None = None,
                    run_id: str | None = None, scheduled_at_ms: int | None = None, due_at_ms: int | None = None,
                    catch_up: bool = False) -> RunMessage:
        return {
            "principal": DAEMON_PRINCIPAL,
            "device_id": DAEMON_DEVICE_ID,
            "owner": routine.owner,
            "channel": routine.channel,
            "routine_id": routine.name,
            "run_id": run_id,
            "text": routine.prompt,
            "dedupe_key": dedupe_key,
            "trigger": {"kind": trigger_kind, "payload": payload, "scheduled_at_ms": scheduled_at_ms,
                        "due_at_ms": due_at_ms, "catch_up": catch_up},
        }

    async def send(self, message: RunMessage) -> dict[str, Any]:
        """Through the loopback HTTP call when the server runs; in-process otherwise (unit tests)."""
        attributes = {"palyra.routine": message.get("routine_id") or "",
                      "palyra.trigger": (message.get("trigger") or {}).get("kind") or ""}
        with self.tracer.span("palyra.dispatch", message.get("traceparent"), attributes) as span:
            message["traceparent"] = span.traceparent
            if self.loopback is not None:
                if not message.get("run_id"):
                    # the id the run will get: lets the gateway recognise a retried call (see accept)
                    message.setdefault("request_id", new_id())
                return await self.loopback.post(message, traceparent=span.traceparent)
            return (await self.handle_message(message, internal=True))[1]

    async def send_many(self, messages: list[RunMessage]) -> list[Mapping[str, object] | Exception]:
        """Claimed runs in ONE loopback call (the batch body of `POST /gateway/v1/messages`, issue 14):
        every run still enters the pipeline there, one `handle_message` each, but the HTTP round trip
        (client, server, event-loop work: a quarter of a run's CPU) is paid once per batch. Per
        message its receipt or the error it got; a call lost as a whole raises (every message failed).
        In process (no server: unit tests) each message is one `send`."""
        if self.loopback is None or len(messages) == 1:
            out: list[Mapping[str, object] | Exception] = []
            for m in messages:
                try:
                    out.append(await self.send(m))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    out.append(exc)
            return out
        with ExitStack() as spans:
            for m in messages:
                attributes = {"palyra.routine": m.get("routine_id") or "",
                              "palyra.trigger": (m.get("trigger") or {}).get("kind") or ""}
                span = spans.enter_context(self.tracer.span("palyra.dispatch", m.get("traceparent"), attributes))
                m["traceparent"] = span.traceparent
            return list(await self.loopback.post_batch(messages))

    async def dispatch(self, routine_id: str, *, trigger_kind: str = "manual", trigger_payload: Any = None,
                       dedupe_key: str | None = None, traceparent: str | None = None) -> dict[str, Any]:
        """Run a routine now (console dispatch, `cron run-now`); returns the run row after the gates."""
        if trigger_kind not in TRIGGER_KINDS:
            raise InvalidInput(f"trigger_kind {trigger_kind!r} is not one of {', '.join(TRIGGER_KINDS)}")
        routine = self.routine(routine_id)
        if routine is None:
            raise NotFound(f"routine {routine_id!r} does not exist")
        message = self.message_for(routine, trigger_kind=trigger_kind, payload=trigger_payload, dedupe_key=dedupe_key)
        if parse_traceparent(traceparent):  # the caller's trace: the run continues it
            message["traceparent"] = str(traceparent)
        return await self.send(message)

    async def emit_event(self, name: str, payload: Any = None, *, kinds: tuple[str, ...] = ("system_event", "hook"),
                         dedupe_key: str | None = None) -> list[dict[str, Any]]:
        """Record an event and run every routine triggered by it (system_event and/or hook)."""
        self.journal.add_event(name, payload if isinstance(payload, dict) else {"data": payload})
        runs = []
        for job in self.journal.jobs_by_trigger(kinds):
            routine = self.routine(job["routine_id"])
            if routine is None or routine.trigger_kind not in kinds or routine.trigger.get("event") != name:
                continue
            runs.append(await self.send(self.message_for(
                routine, trigger_kind=routine.trigger_kind, payload={"event": name, "data": payload},
                dedupe_key=dedupe_key)))
        return runs

    def webhook_integrations(self) -> set[str]:
        """Integrations some webhook routine listens to (the HTTP layer answers 404 for any other
        integration that is not configured either)."""
        out: set[str] = set()
        for job in self.journal.jobs_by_trigger(("webhook",)):
            routine = self.routine(job["routine_id"])
            if routine is None or routine.trigger_kind != "webhook":
                continue
            name = (routine.trigger.get("webhook") or {}).get("integration")
            if isinstance(name, str):
                out.add(name)
        return out

    async def trigger_webhook(self, integration: str, event: str | None, payload: Any, *,
                              dedupe_key: str | None = None) -> list[dict[str, Any]]:
        runs = []
        for job in self.journal.jobs_by_trigger(("webhook",)):
            routine = self.routine(job["routine_id"])
            if routine is None or routine.trigger_kind != "webhook":
                continue
            spec = routine.trigger.get("webhook") or {}
            if spec.get("integration") != integration:
                continue
            if spec.get("event") is not None and spec.get("event") != event:
                continue
            runs.append(await self.send(self.message_for(
                routine, trigger_kind="webhook",
                payload={"integration": integration, "event": event, "body": payload}, dedupe_key=dedupe_key)))
        return runs

    # -- accepting a routine message -------------------------------------------------------------

    async def accept(self, body: dict[str, Any], *, received_at_ms: int | None = None,
                     seen: RunContext | None = None) -> dict[str, Any]:
        """Take a routine message: a run the scheduler claimed (`run_id`) or a new one.

        Idempotent by run id, so the loopback can resend a call whose connection died: a message for
        a run this gateway already received returns that run's receipt (its row as it stands) and
        executes nothing. A new run's id is the message's `request_id` when the sender gave one, so
        a resent manual, event or webhook message is recognised the same way.
        """
        now = received_at_ms if received_at_ms is not None else self.clock.now_ms()
        routine_id = str(body["routine_id"])
        trigger = body.get("trigger") or {}
        kind = trigger.get("kind") or "manual"
        if kind not in TRIGGER_KINDS:
            raise InvalidInput(f"trigger kind {kind!r} is not one of {', '.join(TRIGGER_KINDS)}")
        run_id = body.get("run_id")
        if run_id:
            if seen is None or seen.run is None or str(run_id) in self._arrived:
                # the run, its job, its routine's hash and the serial in one read (one round trip on
                # PostgreSQL, where these were four): the gates below take the job and serial from it.
                # A context its batch read early is trusted only for a run not taken in since (a
                # resent batch handled while the first is still going reads it again here)
                seen = self.journal.run_context(str(run_id), routine_id)
            run = seen.run
            if run is None or run["routine_id"] != routine_id:
                raise NotFound(f"run {run_id!r} of routine {routine_id!r} does not exist")
            if run["status"] != "accepted" or run.get("received_at_ms") is not None or run["run_id"] in self._unwritten:
                return self.receipt(run)  # a repeat: this gateway already has the run
            self._arrived[run["run_id"]] = None
            if len(self._arrived) > ARRIVED_KEPT:
                self._arrived.popitem(last=False)
            if run.get("fence") is not None and run["fence"] != self._fences.get(run["run_id"]):
                return self.receipt(run)  # held by a peer (it took the run over): not this gateway's to run
            due = trigger.get("due_at_ms") or (run.get("scheduled_at_ms") if int(run.get("attempt") or 1) == 1 else None)
            if due is not None and kind != RunTrigger.BACKFILL:  # a backfilled instant is late on purpose
                self.metrics.lag((now - int(due)) / 1000)
            # written with the run's first transition (one commit less on the hot path); nothing awaits
            # between here and that write, so a replayed message still sees it
            run["received_at_ms"] = now
            run["_receipt"] = True
        else:
            seen = None
            request_id = body.get("request_id")
            if request_id is not None and (not isinstance(request_id, str) or not 0 < len(request_id) <= 64):
                raise InvalidInput("request_id must be a string of at most 64 characters")
            fields = {
                "routine_id": routine_id,
                "trigger_kind": kind,
                "trigger_payload": trigger.get("payload"),
                "status": "accepted",
                "attempt": 1,
                "daemon_id": self.daemon_id,
                "received_at_ms": now,
                "created_at_ms": now,
            }
            if request_id:
                fields["run_id"] = request_id
            new = self.journal.insert_run(**fields)
            if new is None:  # the same request again (its first try reached us)
                prior = self.journal.get_run(str(request_id))
                if prior is None or prior["routine_id"] != routine_id:
                    raise Conflict(f"request_id {request_id!r} was already used for another run")
                return self.receipt(prior)
            run = self.journal.get_run(new)
            assert run is not None
        traceparent = body.get("traceparent")
        if parse_traceparent(traceparent):
            self._traces[run["run_id"]] = str(traceparent)  # the run's execution continues this trace
        routine = self.routine(routine_id) if seen is None else self.routine_at(routine_id, seen.routine_hash)
        if routine is None:
            return self._stop(run, None, "failed", "routine_deleted: the routine no longer exists", gate="disabled")
        dedupe = body.get("dedupe_key")
        return await self.gates_or_fail(run, routine, dedupe_key=str(dedupe) if dedupe else None, seen=seen,
                                        catch_up=bool(trigger.get("catch_up")))

    def dispatch_failed(self, message: RunMessage, exc: BaseException) -> RunMessage | None:
        """A claimed run whose loopback call failed even after the Loopback's own retries.

        The run is finalized `failed` with a real reason (`dispatch_failed: ReadError: ...`, never
        empty) unless the gateway got it after all (then it runs, or ran, and nothing is done). Then
        the routine's retry policy applies as for a failed execution: the next attempt is recorded
        `accepted` with `not_before_ms` and returned as the message to send at that time; after the
        last attempt `routine.failed` is emitted. While the journal cannot be written the run is
        only finalized (once it can be): neither a retry nor an event could be recorded.
        """
        run_id = message.get("run_id")
        run = self.journal.get_run(run_id) if run_id else None
        if run is None or run["status"] != "accepted" or run.get("received_at_ms") is not None or run_id in self._unwritten:
            return None
        reason = f"dispatch_failed: {describe_error(exc)}"
        self.metrics.dispatch_errors += 1
        now = self.clock.now_ms()
        fields = {"status": "failed", "reason": reason, "finished_at_ms": now}
        written = self.record_run(run["run_id"], fields, run["routine_id"],
                                  {"last_run_id": run["run_id"], "last_status": "failed"})
        self.metrics.run("failed")
        run.update(fields)
        journal_down = not written or (isinstance(exc, PalyraError) and exc.code.startswith("journal_"))
        routine = self.routine(run["routine_id"])
        if routine is None or journal_down:
            return None
        log.warning("run %s of %s: %s", run["run_id"], routine.name, reason)
        attempt = int(run.get("attempt") or 1)
        retry = routine.policies.retry
        if attempt >= retry.max_attempts or self._closing:
            self._after_failure(run, routine, reason)
            return None
        not_before = now + retry_delay_ms(retry.backoff_ms, attempt)
        retry_id = new_id()
        try:
            nid = self.journal.insert_run(
                routine_id=routine.name, scheduled_at_ms=run.get("scheduled_at_ms"), trigger_kind=run["trigger_kind"],
                trigger_payload=run.get("trigger_payload"), attempt=attempt + 1,
                first_run_id=run.get("first_run_id") or run["run_id"], status="accepted", not_before_ms=not_before,
                policy_rule=run.get("policy_rule"), daemon_id=self.daemon_id, run_id=retry_id,
                fence=self.take_fence(retry_id))
        except JournalError:
            self._fences.pop(retry_id, None)
            return None
        assert nid is not None
        prior = message.get("trigger")
        trigger: TriggerInfo = {"kind": prior["kind"] if prior else run["trigger_kind"],
                                "payload": prior["payload"] if prior else None,
                                "scheduled_at_ms": prior["scheduled_at_ms"] if prior else run.get("scheduled_at_ms"),
                                "due_at_ms": None, "catch_up": False}
        return {**message, "run_id": nid, "trigger": trigger, "not_before_ms": not_before}

    # -- lifecycle --------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until nothing runs (tests; graceful stop after shutdown cancelled everything)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def shutdown(self, reason: str = "daemon_shutdown: the daemon stopped") -> None:
        """Cancel what runs and record it; parked runs (queued, deferred, retry waits) too."""
        self._closing = True
        if self.shared_journal:  # peers on the journal run this daemon's parked runs at their time
            self.release_parked_on_stop()
        for task in list(self._tasks):
            cur = self._current.get(task)
            if cur is not None:
                self._cancel_reasons[cur] = reason
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        now = self.clock.now_ms()
        for run_id, rid in list(self._held.items()):
            self.record_run(run_id, {"status": "cancelled", "reason": reason, "finished_at_ms": now},
                            rid, {"last_status": "cancelled"})
            self.metrics.run("cancelled")
        self._held.clear()
        if self._unwritten:
            try:
                self.flush_unwritten()
            except JournalError as exc:
                log.error("%d run record(s) could not be written (%s); the next start finalizes them as %s",
                          len(self._unwritten), exc.message, "failed/daemon_restart")
        self._queued.clear()
        self._fences.clear()
        self._traces.clear()
        self._backlog.clear()
        self._deferred.clear()
        await self.deliverer.aclose()
        await self.backend.aclose()
        if self.loopback is not None:
            await self.loopback.aclose()
