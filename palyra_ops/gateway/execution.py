"""Execution: a started run under its timeout (skill sandbox or agent backend), its retries, its
delivery and its final record; `routine.failed` and other system events go out from here.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from palyra_ops.backends import BackendError, ExecRequest
from palyra_ops.delivery import DeliveryResult
from palyra_ops.durations import format_duration_ms
from palyra_ops.errors import JournalError
from palyra_ops.gateway.base import GatewayState, SkillDenied, log, log_finished
from palyra_ops.journal.records import JobFields, new_id
from palyra_ops.model import Routine
from palyra_ops.pause import PAUSED_EVENT, note_failure
from palyra_ops.policy import authorize_skill
from palyra_ops.schedule import retry_delay_ms
from palyra_ops.tracing import trace_id_of


class Execution(GatewayState):
    def _start(self, run: dict[str, Any], routine: Routine) -> dict[str, Any]:
        now = self.clock.now_ms()
        fields = self._receipt(run, {"status": "running", "started_at_ms": now, "policy_rule": run.get("policy_rule")})
        if run.get("queued_at_ms") is not None:  # queue_one's mark: no longer the queued run
            fields["queued_at_ms"] = None
        prior = self._fences.get(run["run_id"])
        fields["fence"] = self.take_fence(run["run_id"])  # the run's lease token from here on
        try:
            started = self.journal.update_run_and_job(
                run["run_id"], fields, routine.name,
                {"last_run_id": run["run_id"], "last_status": "running", "last_started_at_ms": now}, fence=prior,
            )
        except JournalError:
            if prior is None:  # the token was never written: the run's later writes go without it
                self._fences.pop(run["run_id"], None)
            raise
        self._held.pop(run["run_id"], None)
        if not started:  # a peer reaped or took the run while this daemon was stalled: not executed
            self.fenced(run["run_id"], routine.name, fields)
            return dict(self.journal.get_run(run["run_id"]) or run)
        run.update(fields)
        task: asyncio.Task[None] = asyncio.ensure_future(self._execute(run, routine))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._active.setdefault(routine.name, {})[run["run_id"]] = task
        self._current[task] = run["run_id"]
        self.metrics.active = self.active_count()
        return dict(run)

    async def _execute(self, run: dict[str, Any], routine: Routine) -> None:
        first_id = run["run_id"]
        attributes = {"palyra.routine": routine.name, "palyra.run_id": first_id,
                      "palyra.trigger": str(run.get("trigger_kind") or "")}
        with self.tracer.span("palyra.run", self._traces.pop(first_id, None), attributes) as span:
            self._spans[first_id] = span
            try:
                await self._execute_attempts(run, routine)
            finally:
                self._spans.pop(first_id, None)

    async def _execute_attempts(self, run: dict[str, Any], routine: Routine) -> None:
        task = asyncio.current_task()
        assert task is not None
        first_id = run["run_id"]
        current = run
        try:
            while True:
                try:
                    ok, output, reason = await self._attempt(current, routine)
                except SkillDenied as denied:
                    current["skill_rule"] = denied.rule
                    self._finish(current, routine, "denied", denied.reason, None, None)
                    self.metrics.gate("skill", "denied")
                    return
                if ok:
                    if not self.still_held(current["run_id"], routine):
                        self.fenced(current["run_id"], routine.name, {"status": "succeeded"})  # not delivered
                        return
                    res = await self._deliver(routine, current, output, failed=False)
                    self._finish(current, routine, "succeeded", None, output, res)
                    return
                attempt = int(current.get("attempt", 1))
                retry = routine.policies.retry
                if attempt < retry.max_attempts and not self._closing:
                    self._finish(current, routine, "failed", reason, None, None, final=False)
                    not_before = self.clock.now_ms() + retry_delay_ms(retry.backoff_ms, attempt)
                    nxt = {
                        "routine_id": routine.name,
                        "scheduled_at_ms": current.get("scheduled_at_ms"),
                        "trigger_kind": current["trigger_kind"],
                        "trigger_payload": current.get("trigger_payload"),
                        "attempt": attempt + 1,
                        "first_run_id": first_id,
                        "status": "accepted",
                        "not_before_ms": not_before,
                        "policy_rule": current.get("policy_rule"),
                        "daemon_id": self.daemon_id,
                        "run_id": new_id(),
                    }
                    nxt["fence"] = self.take_fence(nxt["run_id"])  # held by this daemon while it waits
                    try:
                        nid = self.journal.insert_run(**nxt)
                    except JournalError as exc:  # no record for a retry, so no retry: this failure is final
                        self._fences.pop(nxt["run_id"], None)
                        log.debug("run %s: retry not scheduled: %s", current["run_id"], exc.message)
                        self._after_failure(current, routine, reason)
                        return
                    assert nid is not None
                    current = {**nxt, "run_id": nid}
                    self._current[task] = nid
                    self._waiting.add(nid)
                    try:
                        await self.sleep_until(not_before)
                    finally:
                        self._waiting.discard(nid)
                    now = self.clock.now_ms()
                    if not self.record_run(nid, {"status": "running", "started_at_ms": now}, routine.name,
                                           {"last_run_id": nid, "last_status": "running"}) and nid not in self._unwritten:
                        return  # a peer took the waiting retry over while this daemon was stalled
                    current.update(status="running", started_at_ms=now)
                    continue
                current["reason"] = reason
                if not self.still_held(current["run_id"], routine, failed=True):
                    self.fenced(current["run_id"], routine.name, {"status": "failed"})  # not delivered
                    return
                res = await self._deliver(routine, current, reason, failed=True)
                self._finish(current, routine, "failed", reason, None, res)
                self._after_failure(current, routine, reason)
                return
        except asyncio.CancelledError:
            why = self._cancel_reasons.pop(current["run_id"], "cancelled")
            if current["run_id"] in self._released:  # handed to a peer at a clean stop: its to record
                self._released.discard(current["run_id"])
            else:
                self._finish(current, routine, "cancelled", why, None, None)
        finally:
            runs = self._active.get(routine.name, {})
            runs.pop(first_id, None)
            if not runs:
                self._active.pop(routine.name, None)
            self._current.pop(task, None)
            self.metrics.active = self.active_count()
            if not self._closing:
                self._slot_free(routine.name)

    def _slot_free(self, rid: str) -> None:
        if self._active.get(rid):
            return
        backlog = self._backlog.get(rid)
        if backlog:
            run, routine = backlog.popleft()
            if not backlog:
                self._backlog.pop(rid, None)
            self._start_or_fail(run, self.routine(rid) or routine)
            return
        queued = self._queued.pop(rid, None)
        if queued is not None:
            run, routine = queued
            self._start_or_fail(run, self.routine(rid) or routine)

    def _start_or_fail(self, run: dict[str, Any], routine: Routine) -> None:
        """Start a parked run; one the journal cannot record as started is finalized failed instead."""
        try:
            self._start(run, routine)
        except JournalError as exc:
            self.journal_failed(run, exc)

    async def _attempt(self, run: dict[str, Any], routine: Routine) -> tuple[bool, str | None, str | None]:
        """One execution under the routine's timeout: (ok, output, failure reason); a refused skill
        run raises SkillDenied instead, because it ends differently (denied, no retry)."""
        started = self.clock.now_ms()
        timeout = routine.policies.timeout_ms
        if self._real_time:  # the loop's own timer: no extra tasks per run
            try:
                async with asyncio.timeout(timeout / 1000):
                    return True, await self._execute_once(run, routine, started), None
            except TimeoutError:
                return False, None, f"timeout: the run exceeded {format_duration_ms(timeout)}"
            except BackendError as exc:
                return False, None, str(exc)
            except (asyncio.CancelledError, SkillDenied):
                raise
            except Exception as exc:
                log.error("run %s of %s crashed", run["run_id"], routine.name, exc_info=exc)
                return False, None, f"internal error: {type(exc).__name__}: {exc}"
        work = asyncio.ensure_future(self._execute_once(run, routine, started))
        timer = asyncio.ensure_future(self.sleep_until(started + timeout))
        try:
            await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            timer.cancel()
            await asyncio.gather(work, timer, return_exceptions=True)
            raise
        if work.done():
            timer.cancel()
            exc = work.exception()
            if exc is None:
                return True, work.result(), None
            if isinstance(exc, BackendError):
                return False, None, str(exc)
            if isinstance(exc, SkillDenied):
                raise exc
            log.error("run %s of %s crashed", run["run_id"], routine.name, exc_info=exc)
            return False, None, f"internal error: {type(exc).__name__}: {exc}"
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        return False, None, f"timeout: the run exceeded {format_duration_ms(timeout)}"

    async def _execute_once(self, run: dict[str, Any], routine: Routine, now_ms: int) -> str:
        payload = run.get("trigger_payload")
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError:
                pass
        req = ExecRequest(
            routine_id=routine.name, run_id=run["run_id"], attempt=int(run.get("attempt", 1)), owner=routine.owner,
            channel=routine.channel, prompt=routine.prompt or "", trigger_kind=run["trigger_kind"],
            scheduled_at_ms=run.get("scheduled_at_ms"), trigger_payload=payload, labels=routine.labels,
        )
        if routine.skill:
            return await self._run_skill(routine, req, run)
        return await self.backend.run(req, now_ms=now_ms, sleep_until=self.sleep_until)

    async def _run_skill(self, routine: Routine, req: ExecRequest, run: dict[str, Any]) -> str:
        """Authorize (`skill.execute` + each declared capability), then run in the sandbox.

        Refusals — by policy, or by the runner (quarantined, not installed, capability not granted,
        module changed since install) — raise SkillDenied with the deciding rule; misbehaviour in the
        sandbox (fuel, deadline, trap, exit code) is a BackendError: failed, and retried per policy.
        The allowing rule is kept on the run (`skill_rule`) so the record names both decisions.
        """
        assert routine.skill is not None
        skill_id = routine.skill["id"]
        if self.skill_runner is None or self.skill_store is None:
            raise BackendError(f"skill {skill_id!r}: skills are not available in this daemon")
        skill = self.skill_store.get(skill_id)
        auth = authorize_skill(self.policies(), principal=routine.owner, skill_id=skill_id, skill=skill,
                               channel=routine.channel, owner=routine.owner)
        d = auth.decision
        if not d.allowed:
            raise SkillDenied(d.reason if d.rule == "quarantine" else f"policy: {d.reason}", d.rule)
        run["skill_rule"] = d.rule
        stdin = {"prompt": req.prompt, "trigger": req.to_json()["trigger"], "input": routine.skill.get("input") or {}}
        result = await asyncio.to_thread(self.skill_runner.run, skill_id, stdin, granted=auth.granted)
        if result.denied:
            raise SkillDenied(result.reason or f"skill {skill_id!r} was refused", self._refusal_rule(skill_id))
        if not result.ok:
            raise BackendError(f"skill {skill_id!r}: {result.reason}")
        out = result.output
        return out if isinstance(out, str) else json.dumps(out, sort_keys=True)

    def _refusal_rule(self, skill_id: str) -> str:
        """Name what made the runner refuse, from the index as it stands after the refusal (the
        runner quarantines a tampered module on the spot, so that case reads as a quarantine)."""
        current = self.skill_store.get(skill_id)
        if current is None:
            return "skill not installed"
        if current.quarantined:
            return "quarantine"
        return "capability not granted"

    async def _deliver(self, routine: Routine, run: dict[str, Any], output: str | None, *, failed: bool) -> DeliveryResult:
        parent = self._spans.get(run.get("first_run_id") or run["run_id"])
        try:
            with self.tracer.span("palyra.deliver", parent.traceparent if parent else None,
                                  {"palyra.routine": routine.name, "palyra.run_id": run["run_id"]}) as span:
                res = await self.deliverer.deliver(routine, run, output, failed=failed, traceparent=span.traceparent)
                span.set("palyra.delivery_status", res.status)
        except asyncio.CancelledError:
            raise
        except JournalError as exc:  # a full journal is not a delivery bug: no traceback per run
            res = DeliveryResult("failed", None, exc.message)
        except Exception as exc:  # a delivery bug must not lose the run record
            log.exception("delivery of run %s crashed", run["run_id"])
            res = DeliveryResult("failed", None, f"internal error: {type(exc).__name__}: {exc}")
        self.metrics.delivery(res.status)
        return res

    def _finish(self, run: dict[str, Any], routine: Routine, status: str, reason: str | None, output: str | None,
                res: DeliveryResult | None, *, final: bool = True) -> None:
        now = self.clock.now_ms()
        fields: dict[str, Any] = {"status": status, "reason": reason, "finished_at_ms": now}
        if output is not None:
            fields["output"] = output
        if res is not None:
            fields["delivery_status"] = res.status
            fields["delivery_error"] = res.error
        job: JobFields = {"last_run_id": run["run_id"], "last_status": status, "last_finished_at_ms": now}
        if status == "succeeded" and final:
            job["consecutive_failures"] = 0  # pause_after_failures counts failures in a row
            job["last_success_at_ms"] = now
        skill_rule = run.pop("skill_rule", None)
        if skill_rule is not None:
            # a skill refusal names the rule that refused it; a skill run that executed names both the
            # routine.run rule and the skill.execute rule. Only on the record: a retry's run row
            # inherits the routine.run rule from `run`, and gets its own skill decision.
            gate_rule = run.get("policy_rule")
            both = skill_rule if status == "denied" or gate_rule in (None, skill_rule) else f"{gate_rule}; {skill_rule}"
            self.record_run(run["run_id"], {**fields, "policy_rule": both}, routine.name, job)
        else:
            self.record_run(run["run_id"], fields, routine.name, job)
        run.update(fields)
        self.metrics.run(status)
        span = self._spans.get(run.get("first_run_id") or run["run_id"])
        if span is not None:
            span.set("palyra.status", status)
        log_finished(routine.name, run, status, reason, now, trace_id_of(span.traceparent) if span else None)
        if self.on_change is not None:
            self.on_change()

    def _after_failure(self, run: dict[str, Any], routine: Routine, reason: str | None) -> None:
        """Emit `routine.failed`, except for runs it triggered itself (no failure feedback loops)."""
        payload = run.get("trigger_payload")
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError:
                payload = None
        if run.get("trigger_kind") == "system_event" and isinstance(payload, dict) and payload.get("event") == "routine.failed":
            return
        if self._closing:
            return
        self._spawn(self._emit_quietly("routine.failed", {"routine_id": routine.name, "run_id": run["run_id"],
                                                          "reason": reason}))
        try:
            paused = note_failure(self.journal, routine.name, routine.policies.pause_after_failures)
        except JournalError as exc:
            log.warning("routine %s: failure not counted for pause_after_failures: %s", routine.name, exc.message)
            return
        if paused is not None:
            log.warning("routine %s paused: %s", routine.name, paused.note)
            self._spawn(self._emit_quietly(PAUSED_EVENT, {"routine_id": routine.name, "run_id": run["run_id"],
                                                          "note": paused.note, "by": paused.by}))

    def emit_system_event(self, name: str, payload: dict[str, Any]) -> None:
        """Fire-and-forget `emit_event` for services on the loop (skill quarantine, ...): a failure to
        dispatch the event's routines is logged, never raised into the service that noticed it."""
        if not self._closing:
            self._spawn(self._emit_quietly(name, payload))

    async def _emit_quietly(self, name: str, payload: dict[str, Any]) -> None:
        try:
            await self.emit_event(name, payload, kinds=("system_event",))
        except Exception as exc:
            log.warning("system event %s: %s", name, exc)

