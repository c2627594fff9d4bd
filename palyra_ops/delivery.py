"""Delivery of run output to Channels (SPEC §2 `delivery`, Channel kinds webhook / file / log).

Delivery never changes a run's status: a run that produced its output succeeded even when the
webhook behind it is down. What happened is recorded beside it (`delivery_status`,
`delivery_error`), so an operator sees "succeeded, delivery failed" rather than a misleading failed
run that a retry would re-execute (and re-spend tokens on).

`delivery_status` values: `delivered` (a channel accepted it), `logged` (logs_only, or an origin
channel that is not a Channel object), `local` (kept as a memory item, local_only), `suppressed`
(silent_policy chose not to deliver), `failed` (see `delivery_error`), `denied` (policy refused the
channel). The output of a successful `local_only` run, and of a successful `audit_only` run (kept for
the audit instead of delivered), becomes a memory item with source `delivery:local_only` /
`delivery:audit_only`, its routine and its run.

Where a Channel may write is limited (`palyra_ops.targets`, docs/security.md): file channels stay
under the delivery directory, webhooks never reach metadata or (unless allowed) link-local
addresses, checked when the connection is made. A webhook Channel with a `signing_secret` signs
each attempt the Standard Webhooks way; the id is the run id, so a receiver can drop repeats.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from palyra_ops.clock import Clock, rfc3339
from palyra_ops.delivery_worker import DeliveryWorker
from palyra_ops.durations import parse_duration_ms
from palyra_ops.egress import GuardedBackend, Resolver
from palyra_ops.fastpost import FastPoster
from palyra_ops.journal import Journal
from palyra_ops.model import Channel, Routine
from palyra_ops.targets import TargetRefused, header_problem, open_for_append, url_problems
from palyra_ops.webhooks import sign_standard

log = logging.getLogger("palyra_ops.delivery")
output_log = logging.getLogger("palyra_ops.output")

#: webhook posts in flight at once (issue 14). Posting through `AsyncClient.post` cost 52 % of the
#: daemon's CPU in a webhook burst, and httpcore + h11 still ~1 ms per POST in the delivery worker:
#: requests are written straight to pooled keep-alive connections (palyra_ops/fastpost.py); the
#: bound keeps a herd from opening hundreds of connections to one receiver.
WEBHOOK_IN_FLIGHT = 64  # 16 made a herd wait on receivers' latency (overload: 392 vs 796 runs/s)

#: what `AsyncClient` sent before (receivers may log or route on it)
_USER_AGENT = f"python-httpx/{httpx.__version__}"

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@dataclass(frozen=True)
class DeliveryResult:
    status: str
    channel: str | None = None
    error: str | None = None


class DeliveryError(Exception):
    pass


def resolve_headers(headers: dict[str, Any] | None) -> dict[str, str]:
    """Literal values as written; `{env: NAME}` read now, so a rotated secret needs no restart.

    A value that would split the request (CR/LF) is refused here, naming the header but not the
    value: it may be a secret, and the error lands on the run record.
    """
    out: dict[str, str] = {}
    for k, v in (headers or {}).items():
        if isinstance(v, dict) and "env" in v:
            val = os.environ.get(v["env"])
            if val is None:
                raise DeliveryError(f"header {k}: environment variable {v['env']} is not set")
        else:
            val = str(v)
        why = header_problem(str(k), val)
        if why:
            raise DeliveryError(f"header {k}: {why}")
        out[k] = val
    return out


def _secret(ref: Any, what: str) -> str:
    if not (isinstance(ref, dict) and isinstance(ref.get("env"), str)):
        raise DeliveryError(f"{what}: must be an {{env: NAME}} reference")
    value = os.environ.get(ref["env"])
    if not value:
        raise DeliveryError(f"{what}: environment variable {ref['env']} is not set")
    return value


class Deliverer:
    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        *,
        memory: Any = None,
        retry_base_s: float = 0.25,
        policy_check: Callable[[Routine, str], tuple[bool, str]] | None = None,
        file_root: Path | None = None,
        allow_link_local: bool = False,
        resolver: Resolver | None = None,
    ) -> None:
        self.journal = journal
        self.clock = clock
        self.memory = memory
        self.retry_base_s = retry_base_s
        self.policy_check = policy_check
        #: file channels write under this directory; None: `deliveries/` beside a file journal
        self.file_root = file_root
        self.allow_link_local = allow_link_local
        self.resolver = resolver
        self._fast: FastPoster | None = None
        self._in_flight: asyncio.Semaphore | None = None
        self._urls: dict[str, httpx.URL] = {}
        #: webhook POSTs sent from a child process (`start(offload=True)`: the daemon)
        self._worker: DeliveryWorker | None = None
        self._file_locks: dict[str, threading.Lock] = {}
        self._channels: dict[str, tuple[str, Channel]] = {}

    def _poster(self) -> FastPoster:
        """The pooled poster; built on first use, so a resolver or link-local setting given after
        construction (tests, the daemon's config) applies."""
        if self._fast is None:
            self._fast = FastPoster(GuardedBackend(allow_link_local=self.allow_link_local, resolver=self.resolver))
        return self._fast

    async def _request(self, url: str, content: bytes, headers: dict[str, str], timeout: float) -> int:
        """One POST on a pooled keep-alive connection (no redirects are followed); returns the
        status. Raises httpx errors or TargetRefused, like an httpx transport (palyra_ops/fastpost.py)."""
        u = self._urls.get(url)
        if u is None:
            u = self._urls[url] = httpx.URL(url)
            if len(self._urls) > 1024:  # channels come and go: keep the cache small
                self._urls.clear()
        if self._in_flight is None:
            self._in_flight = asyncio.Semaphore(WEBHOOK_IN_FLIGHT)
        async with self._in_flight:
            return await self._poster().post(u, content, headers, timeout)

    def delivery_root(self) -> Path:
        if self.file_root is not None:
            return self.file_root
        path = getattr(self.journal, "path", None)
        if isinstance(path, Path):
            return path.parent / "deliveries"
        raise DeliveryError("file channels need delivery.file_root in the daemon config (the journal is not a file)")

    async def start(self, *, offload: bool = False) -> None:
        """With `offload`, start the delivery worker (palyra_ops/delivery_worker.py) now, so the first
        delivery of a herd does not wait for a process to start."""
        if offload and self._worker is None:
            self._worker = DeliveryWorker(allow_link_local=self.allow_link_local, retry_base_s=self.retry_base_s)
            await self._worker.start()

    async def aclose(self) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            await worker.aclose()
        fast, self._fast = self._fast, None
        if fast is not None:
            await fast.aclose()

    def channel(self, name: str) -> Channel | None:
        stored = self.journal.get_resource("Channel", name)
        if stored is None:
            return None
        cached = self._channels.get(name)
        if cached and cached[0] == stored.hash:
            return cached[1]
        ch = Channel.from_resource(stored)
        self._channels[name] = (stored.hash, ch)
        return ch

    def payload(self, routine: Routine, run: dict[str, Any], output: str | None, failed: bool) -> dict[str, Any]:
        return {
            "routine_id": routine.name,
            "run_id": run["run_id"],
            "status": "failed" if failed else "succeeded",
            "attempt": run.get("attempt", 1),
            "trigger_kind": run.get("trigger_kind"),
            "scheduled_at": rfc3339(run.get("scheduled_at_ms")),
            "owner": routine.owner,
            "origin_channel": routine.channel,
            "output": output,
            "reason": run.get("reason") if failed else None,
            "delivered_at": rfc3339(self.clock.now_ms()),
        }

    async def deliver(self, routine: Routine, run: dict[str, Any], output: str | None, *, failed: bool,
                      traceparent: str | None = None) -> DeliveryResult:
        d = routine.delivery
        if d.silent_policy == "audit_only":
            if not failed:
                await self._remember(routine, run, output, "delivery:audit_only")
            return DeliveryResult("suppressed", None, None)
        if d.silent_policy == "failure_only" and not failed:
            return DeliveryResult("suppressed", None, None)
        mode, channel = d.mode, d.channel
        if failed and d.failure_mode:
            mode, channel = d.failure_mode, d.failure_channel
        if mode == "same_channel":
            channel = routine.channel
        body = self.payload(routine, run, output, failed)
        if mode == "logs_only":
            output_log.info("run %s of %s %s: %s", run["run_id"], routine.name, body["status"], output)
            return DeliveryResult("logged", None, None)
        if mode == "local_only":
            if not failed:
                await self._remember(routine, run, output, "delivery:local_only")
            return DeliveryResult("local", None, None)
        if not channel:
            return DeliveryResult("failed", None, f"delivery mode {mode} names no channel")
        ch = self.channel(channel)
        if ch is None:
            if mode == "same_channel":  # an origin like cli:alice that is not a Channel object
                output_log.info("run %s of %s for %s %s: %s", run["run_id"], routine.name, channel, body["status"], output)
                return DeliveryResult("logged", channel, None)
            return DeliveryResult("failed", channel, f"channel {channel!r} does not exist")
        if self.policy_check is not None:
            ok, why = self.policy_check(routine, channel)
            if not ok:
                return DeliveryResult("denied", channel, why)
        try:
            await self.send(ch, body, traceparent=traceparent)
        except DeliveryError as exc:
            log.warning("delivery of run %s to %s failed: %s", run["run_id"], channel, exc)
            return DeliveryResult("failed", channel, str(exc))
        return DeliveryResult("delivered", channel, None)

    async def _remember(self, routine: Routine, run: dict[str, Any], output: str | None, source: str) -> None:
        """Keep a successful run's output as a memory item (SPEC §9).

        Only successes: a failed run's "output" is its failure reason, which is on the run record
        already and would crowd real outputs out of search results. The `delivery:*` source makes the
        item idempotent per run, so a delivery repeated after a crash does not duplicate it. Off the
        event loop, because the insert is a SQLite write that may wait on the journal lock.
        """
        if self.memory is None or not output or not output.strip():
            return
        try:
            await asyncio.to_thread(self.memory.add_item, output, routine_id=routine.name, run_id=run["run_id"],
                                    source=source)
        except Exception as exc:  # memory is best effort: the run record keeps the output anyway
            log.warning("memory item for run %s not stored: %s", run["run_id"], exc)

    async def send(self, ch: Channel, body: dict[str, Any], *, traceparent: str | None = None) -> None:
        if ch.type == "log":
            output_log.log(_LEVELS.get(ch.spec.get("level", "info"), logging.INFO), "[%s] %s", ch.name,
                           json.dumps(body, sort_keys=True))
        elif ch.type == "file":
            await asyncio.to_thread(self._append_line, str(ch.spec["path"]), body)
        elif ch.type == "webhook":
            await self._post(ch, body, traceparent)
        else:
            raise DeliveryError(f"channel {ch.name}: unknown type {ch.type!r}")

    def _append_line(self, path: str, body: dict[str, Any]) -> None:
        """One JSON line per delivery, fsynced so a crash right after a run keeps its output.

        Opened through `targets.open_for_append` on every delivery (no cached descriptor), so the
        symlink and regular-file checks hold at the moment of each write.
        """
        lock = self._file_locks.setdefault(path, threading.Lock())
        line = (json.dumps(body, sort_keys=True, ensure_ascii=False) + "\n").encode()
        try:
            with lock:
                fd = open_for_append(self.delivery_root(), path)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except TargetRefused as exc:
            raise DeliveryError(str(exc)) from None
        except OSError as exc:
            raise DeliveryError(f"file {path}: {exc.strerror or exc}") from None

    async def _post(self, ch: Channel, body: dict[str, Any], traceparent: str | None = None) -> None:
        url = ch.spec["url"]
        problems = url_problems(url)  # also for channels applied before these rules existed
        if problems:
            raise DeliveryError(f"webhook {ch.name}: url {problems[0]}")
        headers = {"Accept": "*/*", "User-Agent": _USER_AGENT, **resolve_headers(ch.spec.get("headers"))}
        headers["Content-Type"] = "application/json"
        if traceparent:  # W3C trace context: the receiver continues the run's trace (SPEC §12)
            headers["traceparent"] = traceparent
        secret = _secret(ch.spec["signing_secret"], f"channel {ch.name}: signing_secret") \
            if ch.spec.get("signing_secret") is not None else None
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        timeout = parse_duration_ms(ch.spec.get("timeout", "10s")) / 1000
        retries = int(ch.spec.get("retries", 2))
        if self._worker is not None:  # the same POST, sent from the delivery worker's core
            error = await self._worker.post({"name": ch.name, "url": url, "headers": headers, "content": content,
                                             "timeout": timeout, "retries": retries, "secret": secret,
                                             "run_id": str(body["run_id"])})
            if error is not None:
                raise DeliveryError(error)
            return
        await self.post_prepared(ch.name, url, headers, content.encode(), timeout, retries, secret, str(body["run_id"]))

    async def post_prepared(self, name: str, url: str, headers: dict[str, str], content: bytes, timeout: float,
                            retries: int, secret: str | None, run_id: str) -> None:
        """The attempts of one prepared webhook POST (here, or in the delivery worker)."""
        last = ""
        made = 0
        for attempt in range(retries + 1):
            made += 1
            if attempt:
                await asyncio.sleep(min(self.retry_base_s * 2 ** (attempt - 1), 5.0))
            if secret is not None:  # each attempt is signed with its own timestamp
                try:
                    headers.update(sign_standard(secret, run_id, self.clock.now_ms() // 1000, content))
                except ValueError as exc:
                    raise DeliveryError(f"channel {name}: signing_secret: {exc}") from None
            try:
                status = await self._request(url, content, headers, timeout)
            except TargetRefused as exc:
                raise DeliveryError(f"webhook {name}: refused target: {exc}") from None
            except httpx.TimeoutException:
                last = f"webhook {url}: timed out after {timeout:g}s"
                continue
            except httpx.HTTPError as exc:
                last = f"webhook {url}: {exc or type(exc).__name__}"
                continue
            if status < 300:
                return
            last = f"webhook {url}: HTTP {status}"
            if 400 <= status < 500 and status not in (408, 429):
                break  # the receiver refused this payload; repeating it will not help
        tries = "1 attempt" if made == 1 else f"{made} attempts"
        raise DeliveryError(f"{last} ({tries})")
