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
import contextlib
import itertools
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from palyra_ops.backends import Backend, BackendError, EchoBackend, ExecRequest
from palyra_ops.clock import Clock, SystemClock
from palyra_ops.delivery import Deliverer, DeliveryResult
from palyra_ops.durations import format_duration_ms
from palyra_ops.errors import Conflict, JournalError, NotFound, PalyraError
from palyra_ops.journal import FINAL_STATUSES, Journal, new_id
from palyra_ops.model import Routine

log = logging.getLogger("palyra_ops.gateway")
#: one INFO line per finished run (every final status, gate stops included): docs/daemon.md
run_log = logging.getLogger("palyra_ops.runs")


def log_finished(routine_id: str, run: dict[str, Any], status: str, reason: str | None, now_ms: int) -> None:
    started = run.get("started_at_ms")
    took = f"{now_ms - started}ms" if isinstance(started, int) else "-"
    run_log.info("run finished: routine=%s run=%s status=%s attempt=%s duration=%s reason=%s",
                 routine_id, run.get("run_id"), status, run.get("attempt", 1), took,
                 json.dumps(reason) if reason else "-")

DAEMON_PRINCIPAL = "system:daemon"
DAEMON_DEVICE_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
TRIGGER_KINDS = ("schedule", "hook", "webhook", "system_event", "manual")
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


def default_policy_fn() -> Callable[..., Any]:
    """`palyra_ops.policy.evaluate` when the policy engine is installed, else baseline-allow."""
    try:
        from palyra_ops.policy import evaluate
    except ImportError:  # pragma: no cover - the engine ships with the package
        return baseline_policy
    return evaluate


def real_sleep_until(clock: Clock) -> SleepUntil:
    async def sleep_until(ms: int) -> None:
        while True:
            delay = ms - clock.now_ms()
            if delay <= 0:
                return
            await asyncio.sleep(min(delay / 1000, 5.0))

    return sleep_until


# -- metrics ----------------------------------------------------------------------------------------

LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """In-process Prometheus metrics; counters live as long as the daemon process (the usual model)."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.gates: dict[tuple[str, str], int] = {}
        self.deliveries: dict[str, int] = {}
        self.lag_counts = [0] * (len(LAG_BUCKETS_S) + 1)
        self.lag_sum = 0.0
        self.lag_n = 0
        self.dispatch_errors = 0
        self.due_backlog = 0
        self.active = 0

    def run(self, status: str) -> None:
        self.runs[status] = self.runs.get(status, 0) + 1

    def gate(self, gate: str, outcome: str) -> None:
        self.gates[(gate, outcome)] = self.gates.get((gate, outcome), 0) + 1

    def delivery(self, status: str) -> None:
        self.deliveries[status] = self.deliveries.get(status, 0) + 1

    def lag(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        for i, b in enumerate(LAG_BUCKETS_S):
            if seconds <= b:
                self.lag_counts[i] += 1
                break
        else:
            self.lag_counts[-1] += 1
        self.lag_sum += seconds
        self.lag_n += 1

    def render(self, ctx: Any = None) -> str:
        out: list[str] = []

        def esc(v: str) -> str:
            return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

        out += ["# HELP palyra_runs_total Run records finalized or parked, by status.", "# TYPE palyra_runs_total counter"]
        for status, n in sorted(self.runs.items()):
            out.append(f'palyra_runs_total{{status="{esc(status)}"}} {n}')
        out += ["# HELP palyra_gate_outcomes_total Gate decisions, by gate and outcome.",
                "# TYPE palyra_gate_outcomes_total counter"]
        for (gate, outcome), n in sorted(self.gates.items()):
            out.append(f'palyra_gate_outcomes_total{{gate="{esc(gate)}",outcome="{esc(outcome)}"}} {n}')
        out += ["# HELP palyra_deliveries_total Deliveries of run output, by status.", "# TYPE palyra_deliveries_total counter"]
        for status, n in sorted(self.deliveries.items()):
            out.append(f'palyra_deliveries_total{{status="{esc(status)}"}} {n}')
        out += ["# HELP palyra_dispatch_lag_seconds Scheduled instant to gateway receipt.",
                "# TYPE palyra_dispatch_lag_seconds histogram"]
        cum = 0
        for b, n in zip(LAG_BUCKETS_S, self.lag_counts, strict=False):
            cum += n
            out.append(f'palyra_dispatch_lag_seconds_bucket{{le="{b:g}"}} {cum}')
        out.append(f'palyra_dispatch_lag_seconds_bucket{{le="+Inf"}} {self.lag_n}')
        out.append(f"palyra_dispatch_lag_seconds_sum {self.lag_sum:.6f}")
        out.append(f"palyra_dispatch_lag_seconds_count {self.lag_n}")
        out += ["# HELP palyra_due_backlog Jobs due but not yet claimed at the last scheduler tick.",
                "# TYPE palyra_due_backlog gauge", f"palyra_due_backlog {self.due_backlog}"]
        out += ["# HELP palyra_active_runs Runs executing in this process.", "# TYPE palyra_active_runs gauge",
                f"palyra_active_runs {self.active}"]
        out += ["# HELP palyra_dispatch_errors_total Loopback dispatches that failed.",
                "# TYPE palyra_dispatch_errors_total counter", f"palyra_dispatch_errors_total {self.dispatch_errors}"]
        return "\n".join(out) + "\n"


# -- loopback ---------------------------------------------------------------------------------------


#: transport failures after which the gateway may not have received the whole request. Retrying
#: them is safe because the gateway is idempotent by run id (a repeat gets the first receipt).
#: Timeouts are not among them: a call that timed out was received and is slow, not lost.
RETRYABLE_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.NetworkError, httpx.RemoteProtocolError,
                                                           httpx.ConnectTimeout)
#: waits before the 2nd, 3rd and 4th try: the first retry goes out at once on a fresh connection
#: (the usual case is one pooled connection the server was closing), the others ride out a blip
RETRY_DELAYS_S = (0.0, 0.05, 0.25)
#: the server's keep-alive idle timeout (uvicorn's default is 5 s)
SERVER_KEEP_ALIVE_S = 20.0


def loopback_keepalive_s(server_keep_alive_s: float) -> float:
    """How long the loopback client reuses an idle pooled connection: clearly below the server's
    keep-alive (a quarter of it, at most 5 s). With both at 5 s (httpx's and uvicorn's defaults) a
    connection the server was closing got reused, and the call died with `httpx.ReadError`."""
    return max(0.0, min(5.0, server_keep_alive_s / 4))


def describe_error(exc: BaseException) -> str:
    """`Type: message` for any failure, never empty: httpx's ReadError often has an empty message,
    which made run reasons read `dispatch_failed: ` with nothing after it."""
    if isinstance(exc, PalyraError):
        return exc.message
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = str(cur).strip()
        if text:
            return f"{type(exc).__name__}: {text}"
        cur = cur.__cause__ or cur.__context__
    return f"{type(exc).__name__} (the transport gave no detail)"


class Loopback:
    """Pooled keep-alive connections to the daemon's own gateway.

    A few small pools beat one shared client: httpx's pool gets slower as concurrency on one pool
    grows. Calls go straight to each pool's transport with a prebuilt request: the client layers
    (URL merging, auth and redirect handling, cookies) cost ~40% of a loopback call and do nothing here.

    No run may be lost to the transport: pooled connections are retired well before the server's
    keep-alive closes them (`loopback_keepalive_s`), and a call that fails in a way that means the
    gateway may not have it (connection reset or closed, refused) is sent again, up to
    `len(RETRY_DELAYS_S)` more times. The gateway answers a repeat of a message it already has with
    that run's receipt, so a retry never executes a run twice.
    """

    def __init__(self, base_url: str, internal_token: str, *, clients: int = 4, timeout_s: float = 30.0,
                 keepalive_expiry_s: float | None = None) -> None:
        self.url = httpx.URL(base_url.rstrip("/") + "/gateway/v1/messages")
        self.headers = {"Authorization": f"Bearer {internal_token}", "Content-Type": "application/json"}
        self.extensions = {"timeout": {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}}
        expiry = loopback_keepalive_s(SERVER_KEEP_ALIVE_S) if keepalive_expiry_s is None else keepalive_expiry_s
        self.keepalive_expiry_s = expiry
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32, keepalive_expiry=expiry)
        self.transports = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(max(1, clients))]
        self._rr = itertools.cycle(self.transports)
        #: calls sent again after a transport failure, and calls that failed every try
        self.retries = 0
        self.failures = 0

    async def post(self, message: dict[str, Any]) -> dict[str, Any]:
        content = json.dumps(message).encode()
        last: Exception | None = None
        for delay in (None, *RETRY_DELAYS_S):
            if delay is not None:
                self.retries += 1
                if delay:
                    await asyncio.sleep(delay)
            req = httpx.Request("POST", self.url, content=content, headers=self.headers, extensions=self.extensions)
            try:
                resp = await next(self._rr).handle_async_request(req)
                try:
                    raw = await resp.aread()
                finally:
                    await resp.aclose()
            except RETRYABLE_TRANSPORT_ERRORS as exc:
                last = exc
                continue
            except httpx.HTTPError as exc:
                self.failures += 1
                raise PalyraError(f"loopback call failed: {describe_error(exc)}", code="dispatch_failed",
                                  status=502) from None
            return self._answer(resp.status_code, raw)
        self.failures += 1
        assert last is not None
        raise PalyraError(f"loopback call failed {1 + len(RETRY_DELAYS_S)} times: {describe_error(last)}",
                          code="dispatch_failed", status=502)

    @staticmethod
    def _answer(status: int, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        if status >= 400:
            err = body.get("error", {}) if isinstance(body, dict) else {}
            raise PalyraError(err.get("message") or f"gateway answered HTTP {status}",
                              code=err.get("code") or "error", status=status)
        return body

    async def aclose(self) -> None:
        for t in self.transports:
            await t.aclose()


# -- the gateway ------------------------------------------------------------------------------------


class Gateway:
    def __init__(
        self,
        journal: Journal,
        clock: Clock | None = None,
        *,
        backend: Backend | None = None,
        deliverer: Deliverer | None = None,
        daemon_id: str | None = None,
        sleep_until: SleepUntil | None = None,
        policy_fn: Callable[..., Any] | None = None,
        skill_runner: Any = None,
        skill_store: Any = None,
        on_change: Callable[[], None] | None = None,
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
        self.metrics = Metrics()
        self.loopback: Loopback | None = None
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

    # -- lookups ----------------------------------------------------------------------------------

    def routine(self, name: str) -> Routine | None:
        cached = self._routines.get(name)
        if cached is not None and self.journal.resource_hash("Routine", name) == cached[0]:
            return cached[1]
        stored = self.journal.get_resource("Routine", name)
        if stored is None:
            self._routines.pop(name, None)
            return None
        r = Routine.from_resource(stored)
        self._routines[name] = (stored.hash, r)
        return r

    def policies(self) -> list[dict]:
        serial = self.journal.serial()
        if self._policies is None or self._policies[0] != serial:
            docs = [{"name": r.name, "spec": r.body["spec"]} for r in self.journal.list_resources("Policy")]
            self._policies = (serial, docs)
        return self._policies[1]

    def _deliver_allowed(self, routine: Routine, channel: str) -> tuple[bool, str]:
        d = self.policy_fn(self.policies(), principal=routine.owner, action=f"channel.deliver:{channel}",
                           channel=routine.channel, owner=routine.owner)
        return bool(d.allowed), f"{d.reason} ({d.rule})"

    def active_count(self) -> int:
        return len(self._current)

    def active_run_ids(self, routine_id: str) -> list[str]:
        return [self._current[t] for t in self._active.get(routine_id, {}).values() if t in self._current]

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- entry points -----------------------------------------------------------------------------

    async def handle_message(self, body: dict[str, Any], *, internal: bool,
                             received_at_ms: int | None = None) -> tuple[int, dict[str, Any]]:
        """`POST /gateway/v1/messages`: a routine run (from system:daemon) or a user message."""
        principal = body.get("principal")
        if not isinstance(principal, str) or not principal:
            raise PalyraError("message needs a principal (e.g. user:alice)", code="bad_request", status=400)
        if principal == DAEMON_PRINCIPAL and not internal:
            raise PalyraError("system:daemon messages need the daemon's internal credential",
                              code="forbidden", status=403)
        if body.get("routine_id") is not None:
            if principal != DAEMON_PRINCIPAL:
                raise PalyraError("routine runs are dispatched by system:daemon only; "
                                  "use POST /console/v1/routines/dispatch", code="forbidden", status=403)
            if body.get("device_id") != DAEMON_DEVICE_ID:
                raise PalyraError(f"system:daemon messages carry device id {DAEMON_DEVICE_ID}",
                                  code="forbidden", status=403)
            return 202, await self.accept(body, received_at_ms=received_at_ms)
        return 200, await self._user_message(body, principal, received_at_ms)

    async def _user_message(self, body: dict[str, Any], principal: str, received_at_ms: int | None) -> dict[str, Any]:
        received = received_at_ms if received_at_ms is not None else self.clock.now_ms()
        text = body.get("text")
        if not isinstance(text, str) or not text:
            raise PalyraError("message needs a non-empty 'text'", code="bad_request", status=400)
        channel = str(body.get("channel") or "api")
        req = ExecRequest(routine_id="", run_id=new_id(), attempt=1, owner=principal, channel=channel, prompt=text,
                          trigger_kind="message", scheduled_at_ms=None, trigger_payload=body.get("context"))
        try:
            output = await self.backend.run(req, now_ms=self.clock.now_ms(), sleep_until=self.sleep_until)
        except BackendError as exc:
            raise PalyraError(str(exc), code="backend_error", status=502) from None
        return {"message_id": req.run_id, "principal": principal, "channel": channel, "output": output,
                "received_at_ms": received}

    def message_for(self, routine: Routine, *, trigger_kind: str, payload: Any = None, dedupe_key: str | None = None,
                    run_id: str | None = None, scheduled_at_ms: int | None = None, due_at_ms: int | None = None,
                    catch_up: bool = False) -> dict[str, Any]:
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

    async def send(self, message: dict[str, Any]) -> dict[str, Any]:
        """Through the loopback HTTP call when the server runs; in-process otherwise (unit tests)."""
        if self.loopback is not None:
            if not message.get("run_id"):
                # the id the run will get: lets the gateway recognise a retried call (see accept)
                message.setdefault("request_id", new_id())
            return await self.loopback.post(message)
        return (await self.handle_message(message, internal=True))[1]

    async def dispatch(self, routine_id: str, *, trigger_kind: str = "manual", trigger_payload: Any = None,
                       dedupe_key: str | None = None) -> dict[str, Any]:
        """Run a routine now (console dispatch, `cron run-now`); returns the run row after the gates."""
        if trigger_kind not in TRIGGER_KINDS:
            raise PalyraError(f"trigger_kind {trigger_kind!r} is not one of {', '.join(TRIGGER_KINDS)}",
                              code="bad_request", status=400)
        routine = self.routine(routine_id)
        if routine is None:
            raise NotFound(f"routine {routine_id!r} does not exist")
        return await self.send(self.message_for(routine, trigger_kind=trigger_kind, payload=trigger_payload,
                                                dedupe_key=dedupe_key))

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

    async def accept(self, body: dict[str, Any], *, received_at_ms: int | None = None) -> dict[str, Any]:
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
            raise PalyraError(f"trigger kind {kind!r} is not one of {', '.join(TRIGGER_KINDS)}",
                              code="bad_request", status=400)
        run_id = body.get("run_id")
        if run_id:
            run = self.journal.get_run(str(run_id))
            if run is None or run["routine_id"] != routine_id:
                raise NotFound(f"run {run_id!r} of routine {routine_id!r} does not exist")
            if run["status"] != "accepted" or run.get("received_at_ms") is not None or run["run_id"] in self._unwritten:
                return self.receipt(run)  # a repeat: this gateway already has the run
            due = trigger.get("due_at_ms") or (run.get("scheduled_at_ms") if int(run.get("attempt") or 1) == 1 else None)
            if due is not None:
                self.metrics.lag((now - int(due)) / 1000)
            # written with the run's first transition (one commit less on the hot path); nothing awaits
            # between here and that write, so a replayed message still sees it
            run["received_at_ms"] = now
            run["_receipt"] = True
        else:
            request_id = body.get("request_id")
            if request_id is not None and (not isinstance(request_id, str) or not 0 < len(request_id) <= 64):
                raise PalyraError("request_id must be a string of at most 64 characters", code="bad_request",
                                  status=400)
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
        routine = self.routine(routine_id)
        if routine is None:
            return self._stop(run, None, "failed", "routine_deleted: the routine no longer exists", gate="disabled")
        dedupe = body.get("dedupe_key")
        return await self.gates_or_fail(run, routine, dedupe_key=str(dedupe) if dedupe else None,
                                        catch_up=bool(trigger.get("catch_up")))

    def receipt(self, run: dict[str, Any]) -> dict[str, Any]:
        """A run row as the gateway knows it: the journal's, with any transition still unwritten."""
        out = dict(run)
        pending = self._unwritten.get(run["run_id"])
        if pending is not None:
            out.update(pending[0])
        return out

    async def gates_or_fail(self, run: dict[str, Any], routine: Routine, **kw: Any) -> dict[str, Any]:
        """`gates`, but a journal that cannot take the run's transition finalizes the run `failed`
        (kept until the journal is writable) instead of leaving it `accepted` for ever."""
        try:
            return await self.gates(run, routine, **kw)
        except JournalError as exc:
            self.journal_failed(run, exc)
            raise

    def journal_failed(self, run: dict[str, Any], exc: JournalError) -> None:
        """Finalize a run whose transition the journal refused (written once it can be)."""
        self._held.pop(run["run_id"], None)
        self._deferred = {k: v for k, v in self._deferred.items() if v != run["run_id"]}
        now = self.clock.now_ms()
        fields = self._receipt(run, {"status": "failed", "reason": f"{exc.code}: {exc.message}", "finished_at_ms": now})
        self.record_run(run["run_id"], fields, run["routine_id"], {"last_run_id": run["run_id"], "last_status": "failed"})
        self.metrics.run("failed")
        run.update(fields)

    def dispatch_failed(self, message: dict[str, Any], exc: BaseException) -> dict[str, Any] | None:
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
        from palyra_ops.schedule import retry_delay_ms

        not_before = now + retry_delay_ms(retry.backoff_ms, attempt)
        try:
            nid = self.journal.insert_run(
                routine_id=routine.name, scheduled_at_ms=run.get("scheduled_at_ms"), trigger_kind=run["trigger_kind"],
                trigger_payload=run.get("trigger_payload"), attempt=attempt + 1,
                first_run_id=run.get("first_run_id") or run["run_id"], status="accepted", not_before_ms=not_before,
                policy_rule=run.get("policy_rule"), daemon_id=self.daemon_id)
        except JournalError:
            return None
        assert nid is not None
        trigger = {**(message.get("trigger") or {}), "due_at_ms": None, "catch_up": False}
        return {**message, "run_id": nid, "trigger": trigger, "not_before_ms": not_before}

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
            self.journal.update_run_and_job(run_id, fields, routine_id, job_fields)
        except JournalError as exc:
            self._unwritten[run_id] = (fields, routine_id, job_fields)
            log.debug("run %s: transition held until the journal is writable: %s", run_id, exc.message)
            return False
        return True

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
                self.journal.update_run_and_job(run_id, fields, rid, job)
                del self._unwritten[run_id]
                done += 1
        finally:
            if done:
                log.warning("journal writable again: wrote %d held run record(s)%s", done,
                            f", {len(self._unwritten)} still held" if self._unwritten else "")
        return done

    # -- gates ------------------------------------------------------------------------------------

    def _stop(self, run: dict[str, Any], routine: Routine | None, status: str, reason: str, *, gate: str,
              rule: str | None = None) -> dict[str, Any]:
        now = self.clock.now_ms()
        fields: dict[str, Any] = {"status": status, "reason": reason, "finished_at_ms": now}
        if rule is not None:
            fields["policy_rule"] = rule
        self._receipt(run, fields)
        self.record_run(run["run_id"], fields, run["routine_id"], {"last_run_id": run["run_id"], "last_status": status})
        self._held.pop(run["run_id"], None)
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

    async def gates(self, run: dict[str, Any], routine: Routine, *, dedupe_key: str | None = None,
                    catch_up: bool = False, start: str = "disabled") -> dict[str, Any]:
        """Apply the gates in SPEC §5 order from `start`; returns the run row as it stands after them."""
        first = GATES.index(start)
        rid = routine.name
        now = self.clock.now_ms()
        job = self.journal.get_job(rid) or {}

        if first <= 0:  # disabled (spec enabled AND effective job state, which holds before_enable)
            if not routine.enabled or (job and not job.get("enabled", 1)):
                why = "disabled"
                if job.get("approval_state") == "pending":
                    why = "disabled: awaiting before_enable approval"
                elif job.get("approval_state") == "denied" and routine.approval == "before_enable":
                    why = "disabled: before_enable approval was denied"
                return self._stop(run, routine, "skipped", why, gate="disabled")
            self.metrics.gate("disabled", "pass")

        if first <= 1 and routine.approval == "before_first_run":
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
            from palyra_ops.schedule import QuietHours

            qh = QuietHours.from_spec(routine.quiet_hours)
            if qh.contains(now):
                if qh.action != "defer":
                    return self._stop(run, routine, "skipped", "quiet_hours", gate="quiet_hours")
                if rid in self._deferred:
                    return self._stop(run, routine, "skipped",
                                      f"quiet_hours: run {self._deferred[rid]} is already deferred to the window end",
                                      gate="quiet_hours")
                until = qh.window_end_after(now)
                self.journal.update_run(run["run_id"], **self._receipt(run, {"not_before_ms": until}))
                run["not_before_ms"] = until
                self._deferred[rid] = run["run_id"]
                self._held[run["run_id"]] = rid
                self.metrics.gate("quiet_hours", "deferred")
                self._spawn(self._resume_deferred(run, routine, until))
                return run
            self.metrics.gate("quiet_hours", "pass")

        if first <= 5:
            d = self.policy_fn(self.policies(), principal=routine.owner, action="routine.run",
                               channel=routine.channel, owner=routine.owner)
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
        if policy == "allow":
            self.metrics.gate("concurrency", "pass")
            return self._start(run, routine)
        if policy == "forbid":
            return self._stop(run, routine, "skipped", f"concurrency: forbid (run {active[0]} is active)",
                              gate="concurrency", rule=run.get("policy_rule"))
        if policy == "replace":
            for task in list(self._active.get(rid, {}).values()):
                cur = self._current.get(task)
                if cur is not None:
                    self._cancel_reasons[cur] = f"replaced: superseded by run {run['run_id']}"
                task.cancel()
            self.metrics.gate("concurrency", "replace")
            return self._start(run, routine)
        if policy == "queue_one":
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

    # -- execution --------------------------------------------------------------------------------

    def _start(self, run: dict[str, Any], routine: Routine) -> dict[str, Any]:
        now = self.clock.now_ms()
        fields = self._receipt(run, {"status": "running", "started_at_ms": now, "policy_rule": run.get("policy_rule")})
        self.journal.update_run_and_job(
            run["run_id"], fields, routine.name,
            {"last_run_id": run["run_id"], "last_status": "running", "last_started_at_ms": now},
        )
        run.update(fields)
        self._held.pop(run["run_id"], None)
        task: asyncio.Task[None] = asyncio.ensure_future(self._execute(run, routine))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._active.setdefault(routine.name, {})[run["run_id"]] = task
        self._current[task] = run["run_id"]
        self.metrics.active = self.active_count()
        return dict(run)

    async def _execute(self, run: dict[str, Any], routine: Routine) -> None:
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
                    res = await self._deliver(routine, current, output, failed=False)
                    self._finish(current, routine, "succeeded", None, output, res)
                    return
                attempt = int(current.get("attempt", 1))
                retry = routine.policies.retry
                if attempt < retry.max_attempts and not self._closing:
                    from palyra_ops.schedule import retry_delay_ms

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
                    }
                    try:
                        nid = self.journal.insert_run(**nxt)
                    except JournalError as exc:  # no record for a retry, so no retry: this failure is final
                        log.debug("run %s: retry not scheduled: %s", current["run_id"], exc.message)
                        self._after_failure(current, routine, reason)
                        return
                    assert nid is not None
                    current = {**nxt, "run_id": nid}
                    self._current[task] = nid
                    await self.sleep_until(not_before)
                    now = self.clock.now_ms()
                    self.record_run(nid, {"status": "running", "started_at_ms": now}, routine.name,
                                    {"last_run_id": nid, "last_status": "running"})
                    current.update(status="running", started_at_ms=now)
                    continue
                current["reason"] = reason
                res = await self._deliver(routine, current, reason, failed=True)
                self._finish(current, routine, "failed", reason, None, res)
                self._after_failure(current, routine, reason)
                return
        except asyncio.CancelledError:
            why = self._cancel_reasons.pop(current["run_id"], "cancelled")
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
        from palyra_ops.policy import authorize_skill

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
        try:
            res = await self.deliverer.deliver(routine, run, output, failed=failed)
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
        job = {"last_run_id": run["run_id"], "last_status": status, "last_finished_at_ms": now}
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
        log_finished(routine.name, run, status, reason, now)
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

    # -- approvals --------------------------------------------------------------------------------

    async def decide_approval(self, approval_id: str, approve: bool, by: str) -> dict[str, Any]:
        a = self.journal.get_approval(approval_id)
        if a is None:
            raise NotFound(f"approval {approval_id!r} does not exist")
        if a["state"] != "pending":
            raise Conflict(f"approval {approval_id} is already {a['state']}")
        state = "approved" if approve else "denied"
        rid = a["routine_id"]
        routine = self.routine(rid)
        run: dict[str, Any] | None = None
        with self.journal.transaction() as c:
            self.journal.decide_approval(c, approval_id, state, by)
            if routine is not None and self.journal.get_job(rid) is not None:
                job: dict[str, Any] = {"approval_state": state}
                if a["kind"] == "before_enable":
                    job["enabled"] = int(approve and routine.enabled)
                    if approve and routine.schedule:
                        from palyra_ops.schedule import Schedule

                        now = self.clock.now_ms()
                        s = Schedule.from_spec(routine.schedule, routine.policies.dst)
                        job.update(anchor_ms=now, next_run_at_unix_ms=s.next_after(now, now), next_nominal_ms=None)
                self.journal.put_job(c, rid, **job)
        if a["kind"] == "before_first_run" and a.get("run_id"):
            run = self.journal.get_run(a["run_id"])
            if run is not None and run["status"] == "awaiting_approval":
                dedupe = self._pending_dedupe.pop(run["run_id"], None)
                if routine is None:
                    run = self._stop(run, None, "failed", "routine_deleted: the routine no longer exists", gate="approval")
                elif approve:
                    self.journal.update_run(run["run_id"], status="accepted")
                    run["status"] = "accepted"
                    run = await self.gates_or_fail(run, routine, dedupe_key=dedupe, start="dedupe")
                else:
                    run = self._stop(run, routine, "denied", f"approval_denied: denied by {by}", gate="approval",
                                     rule="approval")
        if self.on_change is not None:
            self.on_change()
        out = dict(self.journal.get_approval(approval_id) or a)
        out["run"] = run
        return out

    # -- lifecycle --------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until nothing runs (tests; graceful stop after shutdown cancelled everything)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def shutdown(self, reason: str = "daemon_shutdown: the daemon stopped") -> None:
        """Cancel what runs and record it; parked runs (queued, deferred, retry waits) too."""
        self._closing = True
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
        self._backlog.clear()
        self._deferred.clear()
        await self.deliverer.aclose()
        await self.backend.aclose()
        if self.loopback is not None:
            await self.loopback.aclose()
