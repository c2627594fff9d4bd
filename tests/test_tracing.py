"""Tracing (SPEC §12): the W3C traceparent through the loopback dispatch, the gateway and the delivery,
and OpenTelemetry spans of one real run end to end (the SDK's in-memory exporter).

The daemon runs in this test's own event loop (the real `Daemon.serve`: uvicorn on a loopback port,
the scheduler's loopback HTTP call, the gateway, a webhook delivery to a local receiver), so the
spans it exports land in the provider the test installed.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from palyra_ops.config import load_config
from palyra_ops.daemon import Daemon
from palyra_ops.enums import ACTIVE_STATUSES
from palyra_ops.journal import open_journal
from palyra_ops.model import Resource
from palyra_ops.reconcile import upsert_resource
from palyra_ops.statepaths import StatePaths
from palyra_ops.tracing import Propagating, child_of, new_traceparent, parse_traceparent, trace_id_of

TP = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)  # once per process (the API refuses a second one)
    return _EXPORTER


def test_traceparent_parsing_follows_the_w3c_rules() -> None:
    tp = new_traceparent()
    assert TP.fullmatch(tp) and parse_traceparent(tp) is not None
    child = child_of(tp)
    assert trace_id_of(child) == trace_id_of(tp) and child != tp
    for bad in ("", "01-" + tp[3:], tp.upper(), "00-" + "0" * 32 + tp[35:], tp[:36] + "0" * 16 + "-01", tp + "-x", 7):
        assert parse_traceparent(bad) is None, bad
    assert trace_id_of(child_of("garbage")) is not None  # an invalid parent starts a new trace


def _apply(journal_path: Path, receiver_url: str) -> None:
    with open_journal(journal_path) as j:
        upsert_resource(j, Resource.from_spec("Channel", "hook", {"type": "webhook", "url": receiver_url}))
        upsert_resource(j, Resource.from_spec("Routine", "traced", {
            "prompt": "p", "trigger": {"kind": "manual"},
            "delivery": {"mode": "specific_channel", "channel": "hook"}}))


async def _serve_and_dispatch(tmp: Path, receiver: Any, tracing: str, incoming: str | None) -> dict[str, Any]:
    paths = StatePaths.from_env(root=tmp / "state", journal=tmp / "state" / "journal.sqlite3")
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    _apply(paths.journal, receiver.url)
    config = load_config(None, listen="127.0.0.1:0", tracing=tracing,
                         **{"journal": str(paths.journal)})
    daemon = Daemon(config, paths=paths)
    urls: list[str] = []
    task = asyncio.ensure_future(daemon.serve(ready=urls.append))
    try:
        for _ in range(500):
            if urls or task.done():
                break
            await asyncio.sleep(0.02)
        assert urls, task.exception() if task.done() else "daemon did not start"
        token = (paths.root / "token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}", **({"traceparent": incoming} if incoming else {})}
        async with httpx.AsyncClient(base_url=urls[0], headers=headers) as c:
            run = (await c.post("/console/v1/routines/dispatch", json={"routine_id": "traced"})).json()
            for _ in range(500):
                if receiver.headers:
                    break
                await asyncio.sleep(0.02)
            # the receipt comes before the run is recorded as finished: stopping now would cancel it
            for _ in range(1000):
                runs = (await c.get("/console/v1/routines/traced/runs")).json()["items"]
                if runs and runs[0]["status"] not in ACTIVE_STATUSES:
                    break
                await asyncio.sleep(0.02)
        assert receiver.headers, "no delivery"
        return run
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)


def test_one_real_run_is_one_trace_of_dispatch_run_and_delivery(tmp_path: Path, receiver: Any,
                                                                 exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    run = asyncio.run(_serve_and_dispatch(tmp_path, receiver, "otel", None))
    delivered = receiver.headers[0]["traceparent"]
    assert TP.fullmatch(delivered)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"palyra.dispatch", "palyra.run", "palyra.deliver"} <= set(spans)
    dispatch, run_span, deliver = spans["palyra.dispatch"], spans["palyra.run"], spans["palyra.deliver"]
    trace_ids = {s.context.trace_id for s in (dispatch, run_span, deliver)}
    assert len(trace_ids) == 1
    assert dispatch.parent is None  # a manual dispatch starts the trace
    assert run_span.parent.span_id == dispatch.context.span_id
    assert deliver.parent.span_id == run_span.context.span_id
    # the receiver continues the delivery span's context
    flags = int(deliver.context.trace_flags)
    assert delivered == f"00-{deliver.context.trace_id:032x}-{deliver.context.span_id:016x}-{flags:02x}"
    assert run_span.attributes["palyra.routine"] == "traced" and run_span.attributes["palyra.status"] == "succeeded"
    assert run_span.attributes["palyra.run_id"] == run["run_id"]
    assert deliver.attributes["palyra.delivery_status"] == "delivered"


def test_a_callers_traceparent_is_continued_and_tracing_off_still_propagates(tmp_path: Path, receiver: Any,
                                                                             exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    incoming = new_traceparent()
    asyncio.run(_serve_and_dispatch(tmp_path, receiver, "off", incoming))
    # off: no spans exported, and the delivery still carries the run's trace on to the receiver
    assert [s.name for s in exporter.get_finished_spans()] == []
    delivered = receiver.headers[0]["traceparent"]
    assert TP.fullmatch(delivered) and delivered != incoming
    assert trace_id_of(delivered) == trace_id_of(incoming)  # the console caller's trace, continued


def test_propagating_tracer_yields_a_child_per_hop() -> None:
    parent = new_traceparent()
    with Propagating().span("x", parent, {}) as span:
        span.set("k", "v")  # a no-op, never an error
        assert trace_id_of(span.traceparent) == trace_id_of(parent)
