"""Observability (SPEC §12): a log line per run (text or JSON lines), per-routine gauges, the missed-run
counter and build info — on the real daemon, and exactly on a FakeClock."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from palyra_ops import __version__
from palyra_ops.clock import to_ms
from palyra_ops.logfmt import JsonLines

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
M = 60_000

ROUTINE = {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "beat"},
           "spec": {"prompt": "beat", "trigger": {"kind": "schedule", "schedule": {"every": "1s"}}}}


def test_json_log_lines_and_per_routine_gauges_on_the_real_daemon(daemon_factory: Any) -> None:
    d = daemon_factory(extra_args=["--log-format", "json"])
    d.write("beat.yaml", ROUTINE)
    d.apply()
    d.wait_for(lambda: any(r["status"] == "succeeded" for r in d.runs("beat")), what="a run")

    def run_lines() -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in d.log().splitlines() if x.startswith("{")]
        return [x for x in lines if x["logger"] == "palyra_ops.runs"]

    line = d.wait_for(lambda: next(iter(run_lines()), None), what="a JSON run line")
    assert (line["level"], line["routine"], line["status"], line["attempt"], line["trigger"]) == (
        "info", "beat", "succeeded", 1, "schedule")
    assert line["msg"].startswith("run finished: routine=beat run=") and isinstance(line["duration_ms"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["ts"])
    assert line["run"] in {r["run_id"] for r in d.runs("beat")}
    # every line the daemon logs is a JSON object (a pipeline needs no second parser)
    assert all(x.startswith("{") for x in d.log().splitlines() if x.strip()), d.log()[-2000:]

    text = d.client().get("/metrics").text
    assert f'palyra_build_info{{version="{__version__}",python="' in text
    job = d.job("beat")
    assert job is not None and job["last_success_at_ms"] is not None
    ok = float(re.search(r'^palyra_routine_last_success_timestamp_seconds\{routine="beat"\} (\S+)$', text, re.M)[1])
    nxt = float(re.search(r'^palyra_routine_next_run_timestamp_seconds\{routine="beat"\} (\S+)$', text, re.M)[1])
    assert ok <= nxt and abs(nxt - ok) < 30
    assert "# TYPE palyra_missed_runs_total counter" in text


def test_the_missed_run_counter_and_the_last_success_gauge_exactly(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("late", trigger={"kind": "schedule", "schedule": {"every": "1m"}})  # fire_once
        rt.routine("skip", trigger={"kind": "schedule", "schedule": {"every": "1m"}}, policies={"misfire": "ignore"})
        rt.clock.set(to_ms(T0) + 5 * M)  # down for 08:01..08:04
        await rt.tick()
        # 08:01..08:04 are later than misfire_grace (30 s); 08:05 is on time
        assert rt.gateway.metrics.missed == {"fire_once": 4, "ignore": 4}
        text = rt.gateway.metrics.render(rt.journal.job_times())
        assert 'palyra_missed_runs_total{policy="fire_once"} 4' in text
        assert 'palyra_missed_runs_total{policy="ignore"} 4' in text
        assert f'palyra_routine_last_success_timestamp_seconds{{routine="late"}} {(to_ms(T0) + 5 * M) / 1000:.3f}' in text
        # ignore skipped the late ones and ran 08:05, which is on time
        assert f'palyra_routine_last_success_timestamp_seconds{{routine="skip"}} {(to_ms(T0) + 5 * M) / 1000:.3f}' in text
        rt.routine("never", trigger={"kind": "manual"})
        assert 'routine="never"' not in rt.gateway.metrics.render(rt.journal.job_times())  # no time, no sample
        assert f'palyra_routine_next_run_timestamp_seconds{{routine="skip"}} {(to_ms(T0) + 6 * M) / 1000:.3f}' in text

    asyncio.run(main())


def test_a_label_value_is_escaped() -> None:
    from palyra_ops.metrics import Metrics

    text = Metrics().render([('we"ird\\name\n', 1_000, None)])
    assert 'palyra_routine_last_success_timestamp_seconds{routine="we\\"ird\\\\name\\n"} 1.000' in text


def test_json_lines_carry_exceptions_and_plain_records() -> None:
    fmt = JsonLines()
    rec = logging.LogRecord("palyra_ops.x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    assert json.loads(fmt.format(rec))["msg"] == "hello world"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("palyra_ops.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    doc = json.loads(fmt.format(rec))
    assert doc["level"] == "error" and "ValueError: boom" in doc["exception"]
