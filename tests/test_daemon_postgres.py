"""A real daemon on a PostgreSQL journal runs an `every: 1s` routine (SPEC §4, §11).

The daemon is the real `palyra-ops daemon` subprocess with `--journal postgresql://…` on the tests'
own throwaway cluster; apply writes through another connection, as from the CLI. What is checked is
what a user sees: deliveries at the one-second cadence, each occurrence once, `/healthz` healthy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from conftest import DaemonHandle

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
