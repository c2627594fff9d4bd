"""Benchmark of routine-directory loading (issue target: 10,000 routines in 100 files).

Prints the bare libyaml parse time (`yaml.load_all(text, Loader=yaml.CSafeLoader)`, the baseline the
targets are relative to), the cold `load_directory` time and its ratio to the baseline (target
≲ 1.25x), the warm time with a cache after editing one file, and the peak RSS.

    .venv/bin/python bench/bench_source.py [--files 100] [--per-file 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import yaml

from palyra_ops.source import load_directory

ZONES = ["Europe/Prague", "America/New_York", "utc", "Asia/Tokyo", "local"]


def routine(i: int) -> str:
    return f"""apiVersion: palyra/v1
kind: Routine
metadata:
  name: routine-{i:05d}
  description: Summarize incidents for team {i % 17}
  labels: {{team: sre, tier: "t{i % 3}"}}
spec:
  enabled: true
  owner: user:alice
  channel: cli:alice
  prompt: Summarize yesterday's incidents for shard {i}
  trigger:
    kind: schedule
    schedule:
      cron: "{i % 60} {i % 24} * * 1-5"
      timezone: {ZONES[i % len(ZONES)]}
  policies:
    concurrency: forbid
    misfire: fire_once
    misfire_grace: 30s
    retry: {{max_attempts: 3, backoff: 10s}}
    jitter: 30s
    timeout: 10m
  quiet_hours: {{start: "22:00", end: "07:00", timezone: Europe/Prague}}
  delivery:
    mode: specific_channel
    channel: sre-reports
    silent_policy: noisy
"""


CHANNEL = """apiVersion: palyra/v1
kind: Channel
metadata: {name: sre-reports}
spec:
  type: webhook
  url: https://hooks.example.invalid/sre
  headers: {Authorization: {env: SRE_HOOK_TOKEN}}
"""


def generate(root: Path, files: int, per_file: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        docs = [routine(f * per_file + i) for i in range(per_file)]
        if f == 0:
            docs.append(CHANNEL)
        (root / f"team-{f:03d}.yaml").write_text("---\n".join(docs))


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--per-file", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="palyra-bench-") as tmp:
        root = Path(tmp) / "routines.d"
        cache = Path(tmp) / "cache"
        generate(root, args.files, args.per_file)
        paths = sorted(root.glob("*.yaml"))
        size = sum(p.stat().st_size for p in paths)

        def bare() -> None:
            for p in paths:
                list(yaml.load_all(p.read_text(), Loader=yaml.CSafeLoader))

        t0 = time.perf_counter()
        first = load_directory(root)  # includes compiling the fast validator once per process
        first_call = time.perf_counter() - t0
        assert first.ok, [d.format() for d in first.diagnostics[:5]]
        n_docs = len(first.documents)
        baseline = best(bare, args.repeat)
        cold = best(lambda: load_directory(root), args.repeat)
        load_directory(root, cache_dir=cache)  # fill the cache
        target = paths[len(paths) // 2]

        def edit_and_load() -> None:
            target.write_text(target.read_text().replace("Summarize", "Summarise", 1))
            load_directory(root, cache_dir=cache)
            target.write_text(target.read_text().replace("Summarise", "Summarize", 1))
            load_directory(root, cache_dir=cache)

        # each round edits one file and reverts it: two warm loads, each parsing one file
        warm = best(edit_and_load, args.repeat) / 2
        unchanged = best(lambda: load_directory(root, cache_dir=cache), args.repeat)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"tree: {len(paths)} files, {n_docs} documents, {size / 1e6:.1f} MB")
    print(f"bare libyaml parse (CSafeLoader):   {baseline:.3f} s")
    print(f"cold load_directory:                {cold:.3f} s  ({cold / baseline:.2f}x bare parse; first call incl. validator compile {first_call:.3f} s)")
    print(f"warm, one file edited (cache):      {warm:.3f} s")
    print(f"warm, nothing changed (cache):      {unchanged:.3f} s")
    print(f"peak RSS:                           {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
