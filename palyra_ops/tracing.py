"""W3C trace context through a run, and optional OpenTelemetry spans (SPEC §12).

Every run carries a `traceparent` (https://www.w3.org/TR/trace-context/): the gateway's `send`
starts it (or continues one the caller sent), the loopback call carries it as a header, the gateway
continues it for the run's execution, and each webhook delivery carries it on to the receiver — so a
receiver, a log line and a trace backend name the same trace. That propagation is always on and
costs two random ids per run.

Spans are exported only when OpenTelemetry is installed (`pip install 'palyra-ops[otel]'`) and
enabled (`tracing: otel` in the daemon config, or `--tracing otel`): the spans `palyra.dispatch`
(the loopback call), `palyra.run` (the execution, with its status) and `palyra.deliver` (each
delivery) go to the globally configured tracer provider — the standard `OTEL_*` environment
variables with `opentelemetry-instrument`, or a provider set by the embedding program (the tests set
one with the SDK's in-memory exporter). Off, the code path is the propagation above and nothing else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
TRACING_MODES = ("off", "otel")


def new_traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def parse_traceparent(value: object) -> tuple[str, str, str] | None:
    """(trace id, parent id, flags) of a valid version-00 traceparent; None for anything else (an
    invalid header is ignored and a new trace started, as the spec says)."""
    if not isinstance(value, str):
        return None
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None or m[1] == "0" * 32 or m[2] == "0" * 16:
        return None
    return m[1], m[2], m[3]


def child_of(traceparent: str | None) -> str:
    """A new span id in the same trace (a new trace when there is none, or it is invalid)."""
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return new_traceparent()
    trace_id, _, flags = parsed
    return f"00-{trace_id}-{os.urandom(8).hex()}-{flags}"


def trace_id_of(traceparent: str | None) -> str | None:
    parsed = parse_traceparent(traceparent)
    return parsed[0] if parsed else None


Attributes = Mapping[str, str | int | bool]


class Span(Protocol):
    #: this span's own context, to pass on (header, message, delivery)
    traceparent: str

    def set(self, key: str, value: str | int | bool) -> None: ...


class Tracer(Protocol):
    def span(self, name: str, parent: str | None, attributes: Attributes) -> AbstractContextManager[Span]:
        """A span under `parent` (a traceparent, or None for a new trace)."""
        ...


class _Hop:
    __slots__ = ("traceparent",)

    def __init__(self, traceparent: str) -> None:
        self.traceparent = traceparent

    def set(self, key: str, value: str | int | bool) -> None:
        pass


class Propagating:
    """Tracing off: no spans, only the trace context carried along (a new span id per hop)."""

    @contextmanager
    def span(self, name: str, parent: str | None, attributes: Attributes) -> Iterator[Span]:
        yield _Hop(child_of(parent))


class _OTelSpan:
    __slots__ = ("_span", "traceparent")

    def __init__(self, span: object, traceparent: str) -> None:
        self._span = span
        self.traceparent = traceparent

    def set(self, key: str, value: str | int | bool) -> None:
        self._span.set_attribute(key, value)  # type: ignore[attr-defined]


class OTelTracer:
    """Spans on the global OpenTelemetry tracer provider, parented on the incoming traceparent."""

    def __init__(self) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._tracer = trace.get_tracer("palyra_ops")
        self._propagator = TraceContextTextMapPropagator()
        from opentelemetry.context import Context

        self._root = Context()  # no parent: a new trace

    @contextmanager
    def span(self, name: str, parent: str | None, attributes: Attributes) -> Iterator[Span]:
        # a span of its own per run, never the ambient one: runs interleave on the event loop
        ctx = self._propagator.extract({"traceparent": parent}) if parse_traceparent(parent) else self._root
        span = self._tracer.start_span(name, context=ctx, attributes=dict(attributes))
        try:
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
            yield _OTelSpan(span, carrier.get("traceparent") or child_of(parent))
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            span.end()


def make_tracer(mode: str) -> Tracer:
    if mode == "otel":
        try:
            return OTelTracer()
        except ImportError:  # an optional extra, named in the error the config check gives
            from palyra_ops.errors import PalyraError

            raise PalyraError("tracing: otel needs OpenTelemetry: pip install 'palyra-ops[otel]'") from None
    return Propagating()
