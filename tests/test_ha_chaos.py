"""Issue 10's acceptance test, scaled to CI: three daemons on one PostgreSQL journal, one of them
kill -9'd at random every few seconds and restarted, while routines `every: 2s` (`forbid`) deliver
to a local webhook receiver (SPEC §11).

Checked afterwards, from the receiver and the journal:
- no occurrence (and no run) delivered twice, and every run recorded `succeeded` was delivered;
- every nominal instant of every routine in the window has a record (a run, or a skipped time);
- no run is left active once the killed daemons' leases have run out (and none after a clean stop);
- `forbid` never overlapped: per routine, no run started before the previous one finished, whichever
  daemons ran them (a reaped run counts as running until the peer finalized it);
- a killed daemon's active runs were finalized within lease + 5 s of the kill.

`PALYRA_HA_CHAOS_S` sets the chaos window (default 36 s; the issue's full minute is 60),
`PALYRA_HA_CHAOS_ROUTINES` the routine count (default 20; the issue's is 60) and
`PALYRA_HA_CHAOS_SEED` the random kills; all are printed with the figures (`-s` shows them).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from conftest import DaemonHandle, Receiver

from palyra_ops.journal import open_journal

ROUTINES = int(os.environ.get("PALYRA_HA_CHAOS_ROUTINES", "20"))
EVERY_MS = 2000
LEASE_MS = 3000
CONFIG = {"cluster": {"heartbeat_interval": "250ms", "lease": f"{LEASE_MS}ms"}}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _docs(url: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [{"apiVersion": "palyra/v1", "kind": "Channel", "metadata": {"name": "hook"},
                                   "spec": {"type": "webhook", "url": url}}]
    for i in range(ROUTINES):
        docs.append({"apiVersion": "palyra/v1", "kind": "Routine",
                     "metadata": {"name": f"r{i:02}", "labels": {"echo-sleep": "1s"}},
                     "spec": {"prompt": "tick", "trigger": {"kind": "schedule", "schedule": {"every": "2s"}},
                              "policies": {"concurrency": "forbid"},
                              "delivery": {"mode": "specific_channel", "channel": "hook"}}})
    return docs


def _registry(url: str) -> dict[int, str]:
    with open_journal(url) as j:
        return {d["pid"]: d["daemon_id"] for d in j.list_daemons()}


def _all_runs(url: str) -> list[dict[str, Any]]:
    with open_journal(url) as j:
        return [dict(r) for r in j.runs_in_order()]


def test_three_daemons_under_kill_9_run_every_occurrence_once(
        daemon_factory: Callable[..., DaemonHandle], pg_url: str, receiver: Receiver) -> None:
    chaos_s = float(os.environ.get("PALYRA_HA_CHAOS_S", "36"))
    seed = int(os.environ.get("PALYRA_HA_CHAOS_SEED", str(time.time_ns() % 100_000)))
    rng = random.Random(seed)
    daemons = [daemon_factory(journal=pg_url, config=CONFIG) for _ in range(3)]
    daemons[0].write("routines.yaml", _docs(receiver.url))
    daemons[0].apply()
    started_ms = _now_ms()
    kills: dict[str, int] = {}  # daemon id -> when it was killed (wall ms)
    deadline = time.monotonic() + chaos_s
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(2.0, 4.0))
        victim = rng.choice(daemons)
        owner = _registry(pg_url).get(victim.proc.pid)
        victim.kill()
        if owner is not None:
            kills[owner] = _now_ms()
        victim.restart()
    ended_ms = _now_ms()

    # the leases of the killed daemons run out: every active run then belongs to a live daemon
    def settled() -> bool:
        with open_journal(pg_url) as j:
            live = j.live_daemon_ids()
            return all(r["daemon_id"] in live and r["daemon_id"] not in kills for r in j.active_runs())
    daemons[0].wait_for(settled, timeout=LEASE_MS / 1000 + 15, interval=0.2, what="the killed daemons' runs finalized")
    for d in daemons:
        assert d.stop() == 0, d.log()[-3000:]
    runs = _all_runs(pg_url)
    assert [r for r in runs if r["status"] in ("accepted", "running")] == []  # none left active

    # exactly once at the receiver
    delivered = Counter(b["run_id"] for b in receiver.bodies)
    assert [rid for rid, n in delivered.items() if n > 1] == []
    occurrences = Counter((b["routine_id"], b["scheduled_at"]) for b in receiver.bodies)
    assert [k for k, n in occurrences.items() if n > 1] == []
    by_id = {r["run_id"]: r for r in runs}
    assert set(delivered) <= set(by_id)
    succeeded = {r["run_id"] for r in runs if r["status"] == "succeeded" and r["trigger_kind"] == "schedule"}
    assert succeeded - set(delivered) == set(), "a succeeded run was never delivered"

    # every nominal instant in the window has a record
    window = (started_ms + 2 * EVERY_MS, ended_ms - EVERY_MS)
    per_routine: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        if r["trigger_kind"] == "schedule":
            per_routine[r["routine_id"]].append(r)
    assert sorted(per_routine) == [f"r{i:02}" for i in range(ROUTINES)]
    missing: list[tuple[str, int]] = []
    for name, rows in per_routine.items():
        covered = {r["scheduled_at_ms"] for r in rows}
        for r in rows:
            covered.update(int(t) for t in _skipped(r))
        base = min(r["scheduled_at_ms"] for r in rows)
        first = base + max(0, -(-(window[0] - base) // EVERY_MS)) * EVERY_MS
        missing += [(name, t) for t in range(first, window[1], EVERY_MS) if t not in covered]
        occ = Counter(r["scheduled_at_ms"] for r in rows if r["attempt"] == 1)
        assert [t for t, n in occ.items() if n > 1] == [], name  # one first attempt per occurrence
    assert missing == []

    # forbid never overlapped, across daemons
    overlaps = []
    for name, rows in per_routine.items():
        ran = sorted((r for r in rows if r["started_at_ms"] is not None), key=lambda r: r["started_at_ms"])
        for prev, nxt in zip(ran, ran[1:], strict=False):
            if nxt["started_at_ms"] < (prev["finished_at_ms"] or 0):
                overlaps.append((name, prev["run_id"], prev["daemon_id"], nxt["run_id"], nxt["daemon_id"]))
    assert overlaps == []

    # a killed daemon's active runs were finalized by a peer (or a restart) within lease + 5 s
    lost = [r for r in runs if r["daemon_id"] in kills and (r["reason"] or "").startswith(("daemon_lost", "daemon_restart"))]
    finalize_s = [(r["finished_at_ms"] - kills[r["daemon_id"]]) / 1000 for r in lost]
    assert all(s <= LEASE_MS / 1000 + 5 for s in finalize_s), sorted(finalize_s)[-5:]

    # figures: how late due work went out, overall and in the 3 s after each kill
    lag = [r["received_at_ms"] - r["scheduled_at_ms"] for r in runs if r["received_at_ms"] and r["scheduled_at_ms"]]
    after_kill = [r["received_at_ms"] - r["scheduled_at_ms"] for r in runs if r["received_at_ms"] and any(
        0 <= r["scheduled_at_ms"] - k <= 3000 for k in kills.values())]
    statuses = Counter(r["status"] for r in runs)
    lag.sort()
    print(f"\nFIGURES seed={seed} chaos={chaos_s:.0f}s routines={ROUTINES} kills={len(kills)} runs={len(runs)} {dict(statuses)}"
          f" delivered={len(delivered)} reaped={sum(1 for r in lost if r['reason'].startswith('daemon_lost'))}"
          f" recovered_at_start={sum(1 for r in lost if r['reason'].startswith('daemon_restart'))}"
          f" finalize_after_kill_max={max(finalize_s, default=0):.2f}s"
          f" delivered_then_lost={sum(1 for r in lost if r['run_id'] in delivered)}"
          f" lag_p50={statistics.median(lag) if lag else 0:.0f}ms lag_p99={lag[int(len(lag) * 0.99) - 1] if lag else 0}ms"
          f" lag_max_after_kill={max(after_kill, default=0)}ms")


def _skipped(r: dict[str, Any]) -> list[int]:
    raw = r.get("skipped_times")
    return [int(t) for t in json.loads(raw)] if raw else []
