"""Where a daemon's CPU went, from py-spy's raw (collapsed) stacks: `bench_dispatch.py` writes them
with PALYRA_BENCH_PYSPY=FILE. Each sample is charged to one part, by the first rule that its stack
matches (the client that made an HTTP call owns its httpx/httpcore frames), so the shares add to 100.

    .venv/bin/python bench/spy_breakdown.py FILE [--runs N]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

#: (part, substrings any of which puts a stack in it), first match wins
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("idle (selector wait)", ("select (selectors.py", "_run_once (asyncio/base_events.py:1898)", "run_once (uvloop")),
    ("idle (threads waiting)", ("Condition.wait", "Event.wait", "SkillRunner._tick_loop")),
    ("delivery client (webhook POST)", ("Deliverer._post", "Deliverer._request")),
    ("loopback client (dispatch POST)", ("Loopback.post",)),
    ("journal (SQLite)", ("palyra_ops/journal/",)),
    ("WAL checkpoint thread", ("checkpoint",)),
    ("JSON", ("json/encoder", "json/decoder", "json/__init__")),
    ("gateway logic", ("palyra_ops/gateway/", "palyra_ops/policy", "palyra_ops/backends", "palyra_ops/delivery",
                       "palyra_ops/model")),
    ("uvicorn/Starlette (server)", ("uvicorn/", "starlette/", "httptools")),
    ("scheduler", ("palyra_ops/scheduler", "palyra_ops/schedule/")),
    ("asyncio/uvloop event loop", ("asyncio/", "uvloop")),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", help="py-spy record --format raw output")
    ap.add_argument("--runs", type=int, default=0, help="runs in the sample, to print ms of CPU per run")
    ap.add_argument("--rate", type=int, default=200, help="py-spy's sampling rate (Hz)")
    args = ap.parse_args()
    parts: Counter[str] = Counter()
    for line in open(args.file, encoding="utf-8"):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not n.isdigit():
            continue
        if stack.endswith("_worker (concurrent/futures/thread.py:81)"):  # a pool thread waiting for work
            part = "idle (threads waiting)"
        elif stack.endswith("Runner.run (asyncio/runners.py:118)"):  # inside uvloop's C loop: I/O and waits
            part = "uvloop native (I/O, waits)"
        else:
            part = next((name for name, keys in RULES if any(k in stack for k in keys)), "other")
        parts[part] += int(n)
    busy = sum(n for p, n in parts.items() if not p.startswith("idle"))
    print(f"{sum(parts.values())} samples, {busy} busy ({busy / args.rate:.1f} s of CPU at {args.rate} Hz)")
    for part, n in parts.most_common():
        if part.startswith("idle"):
            continue
        per = f", {n / args.rate * 1000 / args.runs:.2f} ms/run" if args.runs else ""
        print(f"  {100 * n / busy:5.1f} %  {part}{per}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
