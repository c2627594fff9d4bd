"""Several daemons on one PostgreSQL journal (issue 10): burst and steady lag, against one SQLite daemon.

    .venv/bin/python bench/bench_ha.py [burst|lag|all] [--burst 10000] [--routines 200] [--window 15]
                                       [--daemons 3] [--json OUT]

burst  N routines all due at one instant (an `at` schedule), echo backend: time from that instant until
       every run is journaled final; runs/s, lost (occurrences without a run) and duplicates (runs
       beyond one per occurrence), and how the runs split over the daemons. First one daemon on SQLite,
       then --daemons daemons on one PostgreSQL journal, in the same run.
lag    R routines `every: 1s` (anchors spread over the second) for --window s; lag = scheduled
       instant -> gateway receipt (received_at_ms); p50/p99/max, and lost/duplicate instants. One
       SQLite daemon, then --daemons daemons on PostgreSQL.

PostgreSQL is the tests' throwaway cluster (tests/pgcluster.py: Debian's server binaries, a temp dir,
fsync off), started and removed by this script.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from bench_dispatch import Daemon, clear_routines, put_routines, summary  # type: ignore[import-not-found]  # noqa: E402
from pgcluster import PgCluster, find_bindir  # type: ignore[import-not-found]  # noqa: E402

from palyra_ops.clock import rfc3339  # noqa: E402
from palyra_ops.journal import open_journal  # noqa: E402


def _daemons(root: Path, journal: str | Path, n: int) -> list[Daemon]:
    out = []
    for i in range(n):
        d = Daemon(root / f"d{i}")
        d.root.mkdir(parents=True)
        d.journal = journal  # type: ignore[assignment]  # a path or a URL: passed to --journal as is
        out.append(d)
    for d in out:
        d.start()
    return out


def _stop(daemons: list[Daemon]) -> None:
    for d in daemons:
        d.stop()


def _once(rows: list[Any]) -> dict[str, int]:
    keys = Counter(r["occurrence_key"] for r in rows)
    return {"runs": len(rows), "distinct_occurrences": len(keys), "duplicates": sum(n - 1 for n in keys.values())}


def burst(journal: str | Path, root: Path, n: int, daemons: int) -> dict[str, Any]:
    ds = _daemons(root, journal, daemons)
    try:
        due_ms = (int(time.time()) + 10) * 1000 + 500
        t0 = time.time()
        put_routines(journal, [(f"b-{i:05d}", {"prompt": "x", "trigger": {"kind": "schedule",
                                                "schedule": {"at": rfc3339(due_ms)}}}) for i in range(n)])
        setup_s = time.time() - t0
        wait = due_ms / 1000 - time.time()
        if wait < 0:
            raise SystemExit(f"setting up {n} routines took too long ({setup_s:.1f}s)")
        time.sleep(wait)
        with open_journal(journal) as j:
            deadline = time.time() + 60
            while time.time() < deadline:
                c = j.count_runs_by_status()
                if sum(c.values()) >= n and not c.get("running") and not c.get("accepted"):
                    break
                time.sleep(0.1)
            rows = j.runs_in_order()
    finally:
        _stop(ds)
    finished = max(r["finished_at_ms"] or 0 for r in rows)
    elapsed = (finished - due_ms) / 1000
    once = _once(rows)
    return {"daemons": daemons, "routines": n, **once, "lost": n - once["distinct_occurrences"],
            "succeeded": sum(r["status"] == "succeeded" for r in rows), "elapsed_s": round(elapsed, 3),
            "runs_per_s": round(len(rows) / elapsed, 1) if elapsed > 0 else None,
            "per_daemon": sorted(Counter(r["daemon_id"] for r in rows).values(), reverse=True),
            "setup_s": round(setup_s, 1)}


def lag(journal: str | Path, root: Path, n: int, window_s: float, daemons: int) -> dict[str, Any]:
    ds = _daemons(root, journal, daemons)
    try:
        put_routines(journal, [(f"lag-{i:04d}", {"prompt": "x", "trigger": {"kind": "schedule", "schedule": {"every": "1s"}}})
                               for i in range(n)], phase_ms=max(1, 1000 // n))
        t_start = int(time.time() * 1000) + 3000  # let the first seconds settle
        time.sleep(window_s + 3)
        t_end = int(time.time() * 1000) - 1000
        clear_routines(journal)
        time.sleep(1.5)
        with open_journal(journal) as j:
            rows = [r for r in j.runs_in_order() if r["scheduled_at_ms"] and t_start <= r["scheduled_at_ms"] < t_end]
    finally:
        _stop(ds)
    lags = [r["received_at_ms"] - r["scheduled_at_ms"] for r in rows if r["received_at_ms"] is not None]
    per = Counter(r["routine_id"] for r in rows)
    expected = n * int((t_end - t_start) / 1000)
    once = _once(rows)
    return {"daemons": daemons, "routines": n, "window_s": window_s, **summary(lags), **once,
            "lost_about": max(0, expected - once["distinct_occurrences"] - n),  # +-1 instant per routine at the edges
            "statuses": dict(Counter(r["status"] for r in rows)),
            "reasons": dict(Counter((r["reason"] or "")[:80] for r in rows if r["status"] != "succeeded").most_common(3)),
            "min_per_routine": min(per.values(), default=0),
            "per_daemon": sorted(Counter(r["daemon_id"] for r in rows).values(), reverse=True)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", nargs="?", default="all", choices=["burst", "lag", "all"], help="which case to run")
    ap.add_argument("--burst", type=int, default=10_000, help="routines due at one instant (burst)")
    ap.add_argument("--routines", type=int, default=200, help="routines every: 1s (lag)")
    ap.add_argument("--window", type=float, default=15.0, help="seconds of steady load measured (lag)")
    ap.add_argument("--daemons", type=int, default=3, help="daemons on the PostgreSQL journal")
    ap.add_argument("--stores", default="sqlite,postgres", help="which stores to run, comma-separated")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries (tools/system-deps.sh installs them)")
    cluster = PgCluster(bindir)
    cluster.start()
    out: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for case in (["burst", "lag"] if args.case == "all" else [args.case]):
                for store in args.stores.split(","):
                    journal: str | Path = cluster.create_database() if store == "postgres" else root / f"{case}.sqlite3"
                    n_d = args.daemons if store == "postgres" else 1
                    sub = root / f"{case}-{store}"
                    if case == "burst":
                        res = burst(journal, sub, args.burst, n_d)
                    else:
                        res = lag(journal, sub, args.routines, args.window, n_d)
                    out[f"{case}_{store}"] = res
                    print(f"{case:5} {store:8} {json.dumps(res)}", flush=True)
    finally:
        cluster.stop()
    if "burst_sqlite" in out and "burst_postgres" in out and out["burst_sqlite"]["runs_per_s"]:
        out["burst_ratio_pg_to_sqlite"] = round(out["burst_postgres"]["runs_per_s"] / out["burst_sqlite"]["runs_per_s"], 2)
        print("burst PostgreSQL/SQLite rate:", out["burst_ratio_pg_to_sqlite"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
