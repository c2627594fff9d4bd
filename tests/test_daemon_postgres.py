"""A real daemon on a PostgreSQL journal runs an `every: 1s` routine (SPEC §4, §11).

The daemon is the real `palyra-ops daemon` subprocess with `--journal postgresql://…` on the tests'
own throwaway cluster; apply writes through another connection, as from the CLI. What is checked is
what a user sees: deliveries at the one-second cadence, each occurrence once, `/healthz` healthy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from conftest import DaemonHandle
from pgcluster import PgCluster

EVERY_1S = {"kind": "schedule", "schedule": {"every": "1s"}}


def test_a_daemon_on_a_postgresql_journal_runs_an_every_second_routine(
        daemon_factory: Callable[..., DaemonHandle], pg_url: str) -> None:
    d = daemon_factory(journal=pg_url)
    out = d.paths.state_root / "deliveries" / "out" / "runs.jsonl"
    docs: list[dict[str, Any]] = [
        {"apiVersion": "palyra/v1", "kind": "Channel", "metadata": {"name": "file-out"},
         "spec": {"type": "file", "path": "out/runs.jsonl"}},
        {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "tick"},
         "spec": {"prompt": "tick", "trigger": EVERY_1S, "delivery": {"mode": "specific_channel", "channel": "file-out"}}},
    ]
    d.write("tick.yaml", docs)
    d.apply()
    d.wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 3, timeout=15, what="three deliveries")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert {x["routine_id"] for x in lines} == {"tick"} and lines[0]["status"] == "succeeded"
    runs = d.runs("tick")
    sched = [r["scheduled_at_ms"] for r in runs]
    assert sched == sorted(set(sched)), "each occurrence once"
    assert all(b - a == 1000 for a, b in zip(sched, sched[1:], strict=False)), sched
    assert all(r["received_at_ms"] - r["scheduled_at_ms"] < 1000 for r in runs if r["received_at_ms"])
    health = d.client().get("/healthz")
    assert health.status_code == 200, health.text
    assert d.log().count("Traceback") == 0, d.log()[-3000:]
    assert "s3cret" not in d.log()


def test_the_watcher_and_the_console_api_work_on_a_postgresql_journal(
        daemon_factory: Callable[..., DaemonHandle], pg_url: str) -> None:
    """`--watch` applies a written file into PostgreSQL, and the console API reads it back."""
    d = daemon_factory(journal=pg_url, extra_args=["--watch"])
    d.write("w.yaml", [{"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "watched"},
                        "spec": {"prompt": "w", "trigger": EVERY_1S}}])
    d.wait_for(lambda: len([r for r in d.runs("watched") if r["status"] == "succeeded"]) >= 2, timeout=20,
               what="two runs of the watched routine")
    c = d.client()
    for path in ("/console/v1/routines", "/console/v1/routines/watched", "/console/v1/routines/watched/runs",
                 "/console/v1/cron/status", "/console/v1/system/status", "/console/v1/approvals", "/metrics"):
        r = c.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:500])
    routines = c.get("/console/v1/routines").json()
    assert "watched" in json.dumps(routines)
    runs = c.get("/console/v1/routines/watched/runs").json()
    assert "succeeded" in json.dumps(runs)
    # writes through the API: a manual run, pause and resume (job state in the same journal)
    r = c.post("/console/v1/routines/dispatch", json={"routine_id": "watched"})
    assert r.status_code == 202, r.text
    d.wait_for(lambda: any(x["trigger_kind"] == "manual" and x["status"] == "succeeded" for x in d.runs("watched")),
               timeout=15, what="the manual run")
    assert c.post("/console/v1/routines/watched/pause", json={"note": "db work"}).status_code == 200
    job = d.job("watched")
    assert job is not None and job["paused"] == 1 and job["pause_note"] == "db work"
    assert c.post("/console/v1/routines/watched/resume", json={}).status_code == 200
    job = d.job("watched")
    assert job is not None and job["paused"] == 0
    assert d.log().count("Traceback") == 0, d.log()[-3000:]


def test_a_daemon_rides_out_postgresql_being_down_for_a_few_seconds(
        daemon_factory: Callable[..., DaemonHandle], pg_url: str, pg_cluster: PgCluster) -> None:
    """The server stopped for ~3 s: the daemon keeps serving HTTP, reports the fault on `/healthz`,
    logs no traceback, and once the server is back resumes by itself — each occurrence still once."""
    d = daemon_factory(journal=pg_url)
    d.write("t.yaml", [{"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "tick"},
                        "spec": {"prompt": "t", "trigger": EVERY_1S}}])
    d.apply()
    d.wait_for(lambda: len(d.runs("tick")) >= 2, timeout=15, what="two runs before the outage")
    c = d.client(timeout=30)
    pg_cluster.stop_server()
    try:
        down = d.wait_for(lambda: (r := c.get("/healthz")).status_code != 200 and r, timeout=30,
                          what="/healthz to report the journal fault")
        assert "journal" in down.text.lower(), down.text
    finally:
        time.sleep(3)  # the outage itself, not a synchronisation
        pg_cluster.start_server()
    before = len(d.runs("tick"))
    d.wait_for(lambda: len([r for r in d.runs("tick") if r["status"] == "succeeded"]) >= before + 2, timeout=40,
               what="runs to resume after the server came back")
    d.wait_for(lambda: c.get("/healthz").status_code == 200, timeout=30, what="/healthz healthy again")
    sched = [r["scheduled_at_ms"] for r in d.runs("tick")]
    assert len(sched) == len(set(sched)), "an occurrence was claimed twice"
    log = d.log()
    assert "Traceback" not in log, log[-4000:]
    assert "psycopg.pool" not in log  # the outage is logged once each way by the journal, not per attempt
    assert "cannot reach the database" in log and log.count("is writable again") == 1, log[-4000:]
