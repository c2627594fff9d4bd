"""Explain benchmark (issue 12, Performance): `palyra-ops explain` on a 10,000-routine journal under 1 s.

The journal holds 10,000 applied routines (every 1 m … 1 h, crons, some quiet hours) and a run history
the scheduler would write: the explained routine has a day of minutely runs (1,440 occurrences, some
skipped by misfire with skipped times), every other routine a few runs. Measured in the same run:
- `explain()` in-process for a run that ran, one stopped by a gate, one skipped by misfire (best of N);
- the whole command as a user runs it, `python -m palyra_ops explain NAME --at T` (a fresh process:
  imports, opening the journal, the answer).

Run by hand: `.venv/bin/python bench/bench_explain.py [--routines 10000 --repeat 5]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from palyra_ops.clock import FakeClock, rfc3339
from palyra_ops.explain import explain
from palyra_ops.journal import open_journal
from palyra_ops.reconcile import apply_plan, plan_directory

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
M = 60_000


def write_fleet(d: Path, n: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    per_file = 100
    for f in range(0, n, per_file):
        docs = []
        for i in range(f, min(f + per_file, n)):
            sched = (f'{{every: "{1 + i % 60}m"}}' if i % 2 else f'{{cron: "{i % 60} * * * *", timezone: utc}}')
            quiet = "\n    quiet_hours: {start: '22:00', end: '06:00', timezone: utc}" if i % 10 == 0 else ""
            docs.append(f"apiVersion: palyra/v1\nkind: Routine\nmetadata: {{name: r{i:05d}}}\nspec:\n"
                        f"    prompt: p\n    trigger: {{kind: schedule, schedule: {sched}}}{quiet}\n")
        docs.append("apiVersion: palyra/v1\nkind: Routine\nmetadata: {name: hot}\nspec:\n    prompt: p\n"
                    "    trigger: {kind: schedule, schedule: {every: 1m}}\n" if f == 0 else "")
        (d / f"f{f // per_file:04d}.yaml").write_text("---\n".join(x for x in docs if x), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--routines", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d, jpath = Path(tmp) / "routines.d", Path(tmp) / "journal.sqlite3"
        write_fleet(d, a.routines)
        clock = FakeClock(T0)
        t = time.perf_counter()
        with open_journal(jpath, clock=clock) as j:
            apply_plan(j, plan_directory(d, jpath, clock=clock)[0])
            applied = time.perf_counter() - t
            with j.transaction() as c:  # a day of history for "hot", a few runs for the others
                for k in range(1, 1441):
                    n = T0 + k * M
                    status, reason, skipped = "succeeded", None, None
                    if k % 97 == 0:
                        status, reason = "skipped", "quiet_hours"
                    if k % 240 == 0:  # an outage: the next run stands for the missed time
                        continue
                    if k % 240 == 1 and k > 1:
                        skipped = [n - M]
                    j.insert_run(c, routine_id="hot", occurrence_key=f"hot|{n}", scheduled_at_ms=n, trigger_kind="schedule",
                                 status=status, reason=reason, attempt=1, created_at_ms=n + 3, finished_at_ms=n + 50,
                                 skipped_count=len(skipped or []), skipped_times=skipped)
                for i in range(0, a.routines, 10):
                    for k in (1, 2, 3):
                        n = T0 + k * 3_600_000
                        j.insert_run(c, routine_id=f"r{i:05d}", occurrence_key=f"r{i:05d}|{n}", scheduled_at_ms=n,
                                     trigger_kind="schedule", status="succeeded", attempt=1, created_at_ms=n)
            now = T0 + 1441 * M
            cases = {"ran": T0 + 100 * M, "quiet_hours gate": T0 + 97 * M, "misfire": T0 + 240 * M}
            print(f"{a.routines:,} routines applied in {applied:.1f} s; 'hot' has a day of minutely runs")
            for label, at in cases.items():
                best = float("inf")
                for _ in range(a.repeat):
                    t = time.perf_counter()
                    ex = explain(j, "hot", at_ms=at, now_ms=now)
                    best = min(best, time.perf_counter() - t)
                print(f"explain() {label:<17} {best * 1000:7.1f} ms  (decided by {ex.decided_by}; {ex.outcome})")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        best = float("inf")
        for _ in range(a.repeat):
            t = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "palyra_ops", "explain", "hot", "--at", rfc3339(T0 + 97 * M),
                                   "--journal", str(jpath)], capture_output=True, text=True, env=env, check=True)
            best = min(best, time.perf_counter() - t)
        print(f"palyra-ops explain (a fresh process)  {best * 1000:7.1f} ms  (target < 1000 ms)")
        print(done.stdout.splitlines()[-1])


if __name__ == "__main__":
    main()
