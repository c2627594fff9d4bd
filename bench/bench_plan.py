"""GitOps-core benchmark: 10,000 routines across 100 files.

Prints, measured in the same run:
- bare libyaml parse time (yaml.load_all with CSafeLoader over the same files) — the peer;
- cold `plan` against an empty journal (no cache) and its ratio to the bare parse (target ≤ 1.5×);
- `apply` of all 10,000 creates (target < 3 s);
- warm `plan` after editing one file, with the journal populated (target < 0.3 s);
- peak RSS (target < 300 MB).

Run by hand: `.venv/bin/python bench/bench_plan.py [--routines 10000 --files 100]`.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from palyra_ops.clock import SystemClock
from palyra_ops.journal import open_journal
from palyra_ops.reconcile import apply_plan, plan_directory

CRONS = ["0 9 * * 1-5", "*/15 * * * *", "0 * * * *", "30 2 * * *", "0 0 * * 0", "5 4 * * *", "0 12 1 * *", "@daily", "@hourly", "45 23 * * 1-5"]
ZONES = ["utc", "Europe/Prague", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]


def routine(i: int) -> str:
    cron = CRONS[i % len(CRONS)]
    tz = ZONES[i % len(ZONES)]
    return f"""apiVersion: palyra/v1
kind: Routine
metadata:
  name: routine-{i:05d}
  description: Generated routine number {i} for the plan benchmark
  labels: {{team: team-{i % 17}, tier: t{i % 3}}}
spec:
  owner: user:owner-{i % 50}
  prompt: Summarize the state of service {i} and report anomalies
  trigger:
    kind: schedule
    schedule:
      cron: "{cron}"
      timezone: {tz}
  policies:
    concurrency: forbid
    misfire: fire_once
    retry: {{max_attempts: 3, backoff: 10s}}
    jitter: 30s
  delivery:
    mode: logs_only
"""


def generate(root: Path, routines: int, files: int) -> list[Path]:
    per = routines // files
    paths = []
    for f in range(files):
        p = root / f"team-{f:03d}.yaml"
        p.write_text("---\n".join(routine(f * per + k) for k in range(per)), encoding="utf-8")
        paths.append(p)
    return paths


def bare_parse(paths: list[Path]) -> float:
    t = time.perf_counter()
    n = 0
    for p in paths:
        for _doc in yaml.load_all(p.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader):
            n += 1
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--routines", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="palyra-bench-plan-"))
    try:
        src = work / "routines.d"
        src.mkdir()
        paths = generate(src, args.routines, args.files)
        size = sum(p.stat().st_size for p in paths)
        print(f"tree: {args.routines} routines in {args.files} files, {size / 1e6:.1f} MB")

        parse_t, cold_t = [], []
        for r in range(args.repeat):
            parse_t.append(bare_parse(paths))
            state = work / f"cold-{r}"
            t = time.perf_counter()
            plan, _ = plan_directory(src, state / "journal.sqlite3")
            cold_t.append(time.perf_counter() - t)
            shutil.rmtree(state, ignore_errors=True)
        parse_med, cold_med = statistics.median(parse_t), statistics.median(cold_t)
        print(f"bare libyaml parse (CSafeLoader): {parse_med * 1000:8.0f} ms")
        print(f"cold plan, empty journal:         {cold_med * 1000:8.0f} ms   ratio {cold_med / parse_med:.2f}x (target <= 1.5x)")

        jpath = work / "state" / "journal.sqlite3"
        plan, _ = plan_directory(src, jpath)
        with open_journal(jpath, clock=SystemClock()) as j:
            t = time.perf_counter()
            res = apply_plan(j, plan, directory=src)
            apply_s = time.perf_counter() - t
        print(f"apply {res.added} creates:           {apply_s * 1000:8.0f} ms   (target < 3000 ms)")

        warm = []
        for r in range(args.repeat):
            p = paths[r % len(paths)]
            p.write_text(p.read_text().replace("report anomalies", f"report anomalies (edit {r})", 1))
            t = time.perf_counter()
            plan, _ = plan_directory(src, jpath)
            warm.append(time.perf_counter() - t)
            assert plan.summary["change"] == 1, plan.summary
            with open_journal(jpath) as j:
                apply_plan(j, plan, directory=src)
        print(f"warm plan after editing one file: {statistics.median(warm) * 1000:8.0f} ms   (target < 300 ms)")
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS:                         {rss_mb:8.0f} MB   (target < 300 MB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
