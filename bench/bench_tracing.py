"""Tracing cost (issue 12, Performance): off costs nothing measurable, `otel` ≤ 10 % of the burst rate.

The real daemon runs in this process (so its spans reach the provider set here: the SDK with a
BatchSpanProcessor and an exporter that drops spans, i.e. the cost of recording, not of a network),
once per mode and repetition, in alternation: a burst of N routines all due at the same millisecond
(`at:` one instant, one shared anchor), echo backend, webhook delivery to a local receiver (so the
delivery span and header are on the path). Measured per run: runs/s from the due instant to the last
run finished, and dispatch lag (due → gateway receipt) p50/p99, from the journal. Lost = due runs
without a final record; failed counted too.

Run by hand: `.venv/bin/python bench/bench_tracing.py [--routines 2000 --repeat 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from palyra_ops.clock import rfc3339
from palyra_ops.config import load_config
from palyra_ops.daemon import Daemon
from palyra_ops.journal import ResourceWrite, open_journal
from palyra_ops.model import Resource
from palyra_ops.statepaths import StatePaths


class Drop(SpanExporter):
    def __init__(self) -> None:
        self.n = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.n += len(spans)
        return SpanExportResult.SUCCESS


RECEIVER = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(204); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def receiver() -> tuple[subprocess.Popen[str], str]:
    """The webhook receiver in a process of its own: in this one it would compete with the daemon."""
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}/hook"


async def one(mode: str, n: int, url: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = StatePaths.from_env(root=Path(tmp), journal=Path(tmp) / "journal.sqlite3")
        due = int(time.time() * 1000) + 4000
        with open_journal(paths.journal) as j:
            ch = Resource.from_spec("Channel", "hook", {"type": "webhook", "url": url})
            docs = [Resource.from_spec("Routine", f"r{i:05d}", {
                "prompt": "p", "trigger": {"kind": "schedule", "schedule": {"at": rfc3339(due)}},
                "delivery": {"mode": "specific_channel", "channel": "hook"}}) for i in range(n)]
            with j.transaction() as c:
                j.put_resources(c, [ResourceWrite(r.kind, r.name, r.canonical, r.hash, True, r.hash, "b.yaml")
                                    for r in [ch, *docs]])
                j.put_jobs(c, [(r.name, {"trigger_kind": "schedule", "next_run_at_unix_ms": due, "next_nominal_ms": due,
                                         "anchor_ms": due - 10_000}) for r in docs], ())
        config = load_config(None, listen="127.0.0.1:0", tracing=mode, journal=str(paths.journal), log_level="warning")
        daemon = Daemon(config, paths=paths)
        task = asyncio.ensure_future(daemon.serve())
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                await asyncio.sleep(0.25)
                with open_journal(paths.journal) as j:
                    counts = j.count_runs_by_status()
                if counts.get("succeeded", 0) + counts.get("failed", 0) >= n:
                    break
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 60)
        with open_journal(paths.journal) as j:
            runs = j.runs_in_order()
        done = [r for r in runs if r["status"] in ("succeeded", "failed")]
        last = max(r["finished_at_ms"] for r in done)
        lags = sorted(r["received_at_ms"] - due for r in runs if r.get("received_at_ms") is not None)
        return {"rate": len(done) / max((last - due) / 1000, 1e-3), "p50": lags[len(lags) // 2],
                "p99": lags[int(len(lags) * 0.99) - 1], "lost": n - len(done),
                "failed": sum(r["status"] == "failed" for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--routines", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    exporter = Drop()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 16))
    trace.set_tracer_provider(provider)
    srv, url = receiver()
    results: dict[str, list[dict[str, float]]] = {"off": [], "otel": []}
    for _ in range(a.repeat):
        for mode in ("off", "otel"):
            results[mode].append(asyncio.run(one(mode, a.routines, url)))
    provider.force_flush()
    srv.terminate()
    print(f"burst of {a.routines:,} routines due in the same ms, echo backend, webhook delivery; "
          f"{a.repeat} alternating repetitions")
    for mode, rs in results.items():
        rates = [r["rate"] for r in rs]
        print(f"  tracing {mode:<4}: runs/s {statistics.median(rates):7.0f} (runs {', '.join(f'{x:.0f}' for x in rates)})"
              f"  lag p50 {statistics.median(r['p50'] for r in rs):.0f} ms  p99 {statistics.median(r['p99'] for r in rs):.0f} ms"
              f"  lost {sum(r['lost'] for r in rs):.0f}  failed {sum(r['failed'] for r in rs):.0f}")
    off, on = (statistics.median(r["rate"] for r in results[m]) for m in ("off", "otel"))
    print(f"  otel costs {100 * (1 - on / off):.1f} % of the burst rate (target ≤ 10 %); spans exported: {exporter.n:,}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
