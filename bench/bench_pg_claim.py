"""The PostgreSQL store's claim path (issue 10, "Performance": ≥ 10,000 occurrences/s batched).

    .venv/bin/python bench/bench_pg_claim.py [--jobs 10000] [--batches 64,100,500] [--rounds 3]

Starts its own throwaway cluster (tests/pgcluster.py), puts `--jobs` scheduled jobs all due, and
claims every one of them batch by batch, four ways in the same run:

claim-due   `claim_due` of the store (what the scheduler does each batch: one pipelined transaction,
            the due jobs read and locked FOR UPDATE SKIP LOCKED, planned, compare-and-set,
            ON CONFLICT DO NOTHING);
store       `due_jobs` + `claim_occurrences` of the store (what the scheduler did before: two
            transactions);
store-claim the `claim_occurrences` part alone (the due list read before the clock starts);
bare        the peer: one hand-written transaction per batch, `SELECT … FOR UPDATE SKIP LOCKED LIMIT n`,
            `INSERT … SELECT FROM unnest() ON CONFLICT DO NOTHING`, `UPDATE … FROM unnest()`, on one
            plain psycopg connection (what the issue measured at ~19,700/s at batch 100).

Every round checks that each occurrence was claimed exactly once. Figures are occurrences/s; the
best of `--rounds` is printed beside the median (the machine is shared).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import psycopg  # noqa: E402
from pgcluster import PgCluster, find_bindir  # noqa: E402

from palyra_ops.journal import new_id, open_journal  # noqa: E402
from palyra_ops.journal.postgres import PgJournal  # noqa: E402

T0 = 1_767_225_600_000
FAR = T0 + 10**10


def _reset(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM journal_cron_runs")
        conn.execute("UPDATE journal_cron_jobs SET next_run_at_unix_ms = %s + substr(routine_id, 2)::int", (T0,))
        conn.execute("VACUUM ANALYZE journal_cron_jobs")
        conn.execute("VACUUM ANALYZE journal_cron_runs")


def _claim(job: dict[str, Any]) -> tuple[str, int, list[dict[str, Any]], dict[str, Any]]:
    rid, nxt = job["routine_id"], job["next_run_at_unix_ms"]
    run = {"routine_id": rid, "trigger_kind": "schedule", "status": "accepted", "attempt": 1,
           "occurrence_key": f"{rid}|{nxt}", "scheduled_at_ms": nxt}
    return rid, nxt, [run], {"next_run_at_unix_ms": FAR, "next_nominal_ms": FAR, "last_nominal_ms": nxt}


def store_round(j: PgJournal, n: int, batch: int, with_read: bool) -> float:
    claimed = 0
    t0 = time.perf_counter()
    elapsed_read = 0.0
    while True:
        r0 = time.perf_counter()
        due = j.due_jobs(T0 + n, batch)
        elapsed_read += time.perf_counter() - r0
        if not due:
            break
        out = j.claim_occurrences([_claim(job) for job in due])
        claimed += sum(1 for ids in out if ids and ids[0])
    dt = time.perf_counter() - t0 - (0.0 if with_read else elapsed_read)
    assert claimed == n, (claimed, n)
    return n / dt


def claim_due_round(j: PgJournal, n: int, batch: int) -> float:
    claimed = 0
    t0 = time.perf_counter()
    while True:
        due, out = j.claim_due(T0 + n, batch, lambda jobs: [_claim(job) for job in jobs])
        if not due:
            break
        claimed += sum(1 for ids in out if ids and ids[0])
    dt = time.perf_counter() - t0
    assert claimed == n, (claimed, n)
    return n / dt


def bare_round(url: str, n: int, batch: int) -> float:
    claimed = 0
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        t0 = time.perf_counter()
        while True:
            with conn.transaction():
                rows = conn.execute(
                    "SELECT routine_id, next_run_at_unix_ms FROM journal_cron_jobs WHERE next_run_at_unix_ms <= %s"
                    " AND enabled = 1 ORDER BY next_run_at_unix_ms LIMIT %s FOR UPDATE SKIP LOCKED",
                    (T0 + n, batch)).fetchall()
                if not rows:
                    break
                ids = [r[0] for r in rows]
                nxt = [r[1] for r in rows]
                got = conn.execute(
                    "INSERT INTO journal_cron_runs (run_id, routine_id, occurrence_key, scheduled_at_ms, trigger_kind,"
                    " status, created_at_ms) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[],"
                    " %s::text[], %s::text[], %s::bigint[]) ON CONFLICT DO NOTHING RETURNING run_id",
                    ([new_id() for _ in ids], ids, [f"{a}|{b}" for a, b in zip(ids, nxt, strict=True)], nxt,
                     ["schedule"] * len(ids), ["accepted"] * len(ids), [T0] * len(ids))).fetchall()
                conn.execute("UPDATE journal_cron_jobs AS j SET next_run_at_unix_ms = %s FROM unnest(%s::text[])"
                             " AS v(routine_id) WHERE j.routine_id = v.routine_id", (FAR, ids))
                claimed += len(got)
        dt = time.perf_counter() - t0
    assert claimed == n, (claimed, n)
    return n / dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10_000, help="jobs due at once (default 10000)")
    ap.add_argument("--batches", default="64,100,500", help="batch sizes, comma-separated (default 64,100,500)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per figure (default 3)")
    opts = ap.parse_args()
    bindir = find_bindir()
    if bindir is None:
        print("PostgreSQL server binaries are not installed (tools/system-deps.sh)", file=sys.stderr)
        return 1
    cluster = PgCluster(bindir)
    cluster.start()
    try:
        url = cluster.create_database()
        with open_journal(url) as j:
            assert isinstance(j, PgJournal)
            with j.transaction() as t:
                j.put_jobs(t, [(f"r{i:06}", {"trigger_kind": "schedule", "next_run_at_unix_ms": T0 + i})
                               for i in range(opts.jobs)], existing=())
            kinds: dict[str, Callable[[int], float]] = {
                "claim-due": lambda b: claim_due_round(j, opts.jobs, b),
                "store": lambda b: store_round(j, opts.jobs, b, True),
                "store-claim": lambda b: store_round(j, opts.jobs, b, False),
                "bare": lambda b: bare_round(url, opts.jobs, b),
            }
            print(f"{opts.jobs} occurrences due at once; occurrences/s, best (median) of {opts.rounds}")
            for b in (int(x) for x in opts.batches.split(",")):
                cells = []
                for name, fn in kinds.items():
                    figures = []
                    for _ in range(opts.rounds):
                        _reset(url, opts.jobs)
                        figures.append(fn(b))
                    cells.append(f"{name} {max(figures):>7,.0f} ({statistics.median(figures):,.0f})")
                print(f"batch {b:>4}: " + "  ".join(cells))
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
