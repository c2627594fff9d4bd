"""Claimed runs due at one instant sent in one loopback call (issue 14, Build 2).

Every run still enters through `POST /gateway/v1/messages` — one `handle_message` each, the same
gates, the same idempotency by run id — but a herd pays the HTTP round trip (client, server,
event-loop work: about a quarter of a run's CPU) once per claimed batch instead of once per run.
A mixin of `Scheduler`, kept apart so the loop module stays readable; it uses the scheduler's
slots (`_sem`), its backpressure bookkeeping (`_sent`) and its single-run path for retries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from palyra_ops.messages import RunMessage

if TYPE_CHECKING:
    from palyra_ops.dispatcher import Dispatcher


async def _sleep_until_wall(t: float) -> None:
    """Sleep until wall time `t` (seconds) without overshooting by the selector's 1 ms rounding:
    a timer to 1 ms before, then yield to the loop until the instant (sub-millisecond spin)."""
    delay = t - time.time() - 0.001
    if delay > 0:
        await asyncio.sleep(delay)
    while time.time() < t:
        await asyncio.sleep(0)


class BatchSending:
    gateway: Dispatcher
    lead_ms: int
    dispatched: int
    dispatch_errors: int
    _sem: asyncio.Semaphore
    _track: Callable[[asyncio.Task[Any]], None]
    _send_one: Callable[[RunMessage], Awaitable[None]]
    _sent: Callable[[RunMessage], None]
    _came_due: Callable[[RunMessage], None]
    _not_sent: Callable[..., None]

    def _launch_together(self, msgs: list[RunMessage]) -> None:
        """One loopback call per due instant among a claim's runs (a herd is one call per 64)."""
        by_due: dict[int | None, list[RunMessage]] = {}
        for m in msgs:
            trigger = m.get("trigger")
            by_due.setdefault(trigger["due_at_ms"] if trigger is not None else None, []).append(m)
        for group in by_due.values():
            if len(group) == 1:
                self._track(asyncio.ensure_future(self._send_one(group[0])))
            else:
                self._track(asyncio.ensure_future(self._send_batch(group)))

    async def _send_batch(self, msgs: list[RunMessage]) -> None:
        """Send runs due at one instant in one call at that instant; a run that failed is finalized
        or retried one by one, exactly as after a single call (`dispatch_failed`)."""
        try:
            trigger = msgs[0].get("trigger")
            due = trigger["due_at_ms"] if trigger is not None else None
            if self.lead_ms and due is not None:
                await _sleep_until_wall(due / 1000)
            for m in msgs:
                self._came_due(m)
            async with self._sem:
                for m in msgs:
                    self._sent(m)
                try:
                    outcomes = await self.gateway.send_many(msgs)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the call as a whole: every run in it failed the same way
                    outcomes = [exc] * len(msgs)
        except asyncio.CancelledError:
            for m in msgs:
                self._sent(m)
                self._not_sent(m, "daemon_shutdown", status="cancelled")
            raise
        for m, outcome in zip(msgs, outcomes, strict=True):
            if not isinstance(outcome, Exception):
                self.dispatched += 1
                continue
            self.dispatch_errors += 1
            nxt = self.gateway.dispatch_failed(m, outcome)
            if nxt is not None:
                self._track(asyncio.ensure_future(self._retry_later(nxt)))

    async def _retry_later(self, msg: RunMessage) -> None:
        """The next attempt of a run that failed in a batch, at its `not_before_ms`."""
        try:
            await self.gateway.sleep_until(int(msg["not_before_ms"]))
        except asyncio.CancelledError:
            self._not_sent(msg, "daemon_shutdown", status="cancelled")
            raise
        await self._send_one(msg)
