"""`Dispatcher`: what the scheduler needs of the gateway, in a module of its own so the scheduler's
parts (scheduler.py, scheduler_batch.py) and the gateway can all name it without importing each other."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from palyra_ops.journal.records import JobFields
from palyra_ops.messages import RunMessage
from palyra_ops.metrics import Metrics
from palyra_ops.model import Routine


class Dispatcher(Protocol):
    """What the scheduler needs of the gateway: the seam between claiming a run and running it.

    `palyra_ops.gateway.Gateway` is the one implementation; the scheduler never imports it, so the
    arrow runs one way (gateway → scheduler is never needed) and a test can stand in its own.
    """

    metrics: Metrics
    #: waits until a journal instant (the gateway's injected clock: FakeClock tests drive it)
    sleep_until: Callable[[int], Awaitable[None]]

    def routine(self, name: str) -> Routine | None: ...

    def routine_at(self, name: str, current_hash: str | None) -> Routine | None:
        """`routine` given the hash just read (`prime_routines`): no read of its own when cached."""
        ...

    def prime_routines(self, names: Sequence[str]) -> dict[str, str]:
        """A claimed batch's routines checked (and loaded) with two reads in all; their hashes."""
        ...

    def message_for(self, routine: Routine, *, trigger_kind: str, payload: Any = None, dedupe_key: str | None = None,
                    run_id: str | None = None, scheduled_at_ms: int | None = None, due_at_ms: int | None = None,
                    catch_up: bool = False) -> RunMessage: ...

    async def send(self, message: RunMessage) -> Mapping[str, object]:
        """Deliver the message to the gateway (the loopback call); returns the run's receipt."""
        ...

    async def send_many(self, messages: list[RunMessage]) -> list[Mapping[str, object] | Exception]:
        """Deliver many messages in one loopback call; per message its receipt or its error."""
        ...

    def dispatch_failed(self, message: RunMessage, exc: BaseException) -> RunMessage | None:
        """Finalize a claimed run whose call failed; the next attempt's message if it retries."""
        ...

    def record_run(self, run_id: str, fields: Mapping[str, object], routine_id: str | None,
                   job_fields: JobFields | None) -> bool: ...

    def active_count(self) -> int: ...

    def unwritten_count(self) -> int: ...

    def flush_unwritten(self) -> int: ...

    def transport_counts(self) -> tuple[int, int]:
        """Loopback calls sent again after a transport failure, and calls that failed every try."""
        ...
