"""The routine message: what the scheduler (and every other trigger) sends to the gateway.

It is the JSON body of `POST /gateway/v1/messages` for a routine run, built by
`Gateway.message_for` and sent over the loopback; typed here, in a leaf module, so the scheduler,
its `Dispatcher` protocol and the gateway agree on its shape without importing each other.
"""

from __future__ import annotations

from typing import TypedDict


class TriggerInfo(TypedDict):
    kind: str
    payload: object
    #: the nominal instant (schedule triggers), the due instant after jitter, both journal ms
    scheduled_at_ms: int | None
    due_at_ms: int | None
    #: one of a catch-up backlog: runs in order behind the routine's active run, whatever its policy
    catch_up: bool


class RunMessage(TypedDict, total=False):
    principal: str
    device_id: str
    owner: str
    channel: str
    routine_id: str
    #: the claimed run's id (scheduled runs); absent or None for a run the gateway creates
    run_id: str | None
    #: the id a new run gets, so a resent call is recognised (see `Gateway.accept`)
    request_id: str
    text: str | None
    dedupe_key: str | None
    trigger: TriggerInfo
    #: a retry attempt is sent at this instant (journal ms)
    not_before_ms: int
    #: W3C trace context of the dispatch (palyra_ops.tracing): the run continues this trace
    traceparent: str
