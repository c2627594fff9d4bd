"""Memory on a PostgreSQL journal: how fast a peer's index follows, and what a daemon's start costs.

Two `MemoryService`s on one database (the tests' throwaway cluster, tests/pgcluster.py), each with a
state root of its own as two daemons on two machines would have:

- **propagation**: A adds one item and backfills it (the vector committed with its change row and
  NOTIFY); the time until the label is in B's in-memory index (B follows with a 30 s poll, so only
  the notification explains a quick pick-up). p50/p90/max over `--rounds`.
- **start-up**: with `--items` embedded items in the journal, a follower's first build without an
  index file (every vector read from the journal into a fresh hnswlib index) and with one (verify,
  load, reconcile), the time until it is ready.
- the SQLite store's rebuild of the same items, for comparison.

    .venv/bin/python bench/bench_memory_pg.py --items 10000 --rounds 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from pgcluster import PgCluster, find_bindir  # type: ignore[import-not-found]  # noqa: E402

from palyra_ops.memory.embedders import HashingEmbedder  # noqa: E402
from palyra_ops.memory.index import MemoryIndex  # noqa: E402
from palyra_ops.memory.service import MemoryService  # noqa: E402


def _texts(n: int) -> list[str]:
    words = ["deploy", "disk", "certificate", "latency", "queue", "backup", "cache", "error", "payments", "dns"]
    return [f"note {i}: {words[i % 10]} {words[(i * 7) % 10]} on service {i % 97} after {i % 13} retries"
            for i in range(n)]


def _ready(svc: MemoryService) -> float:
    t0 = time.perf_counter()
    follower = svc.follow(poll_s=30)
    assert follower.ready.wait(600), follower.last_error
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=10_000, help="embedded items in the journal for the start-up part")
    ap.add_argument("--rounds", type=int, default=50, help="single-item propagation rounds")
    args = ap.parse_args()
    bindir = find_bindir()
    if bindir is None:
        print("PostgreSQL server binaries are not installed (tools/system-deps.sh)", file=sys.stderr)
        return 1
    cluster = PgCluster(bindir)
    cluster.start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-pg-"))
    try:
        url = cluster.create_database()
        a = MemoryService(url, HashingEmbedder(), state_root=tmp / "a")
        b = MemoryService(url, HashingEmbedder(), state_root=tmp / "b")
        _ready(b)
        time.sleep(1.0)  # the listener connected
        lags = []
        for i in range(args.rounds):
            item = a.add_item(f"propagation round {i}: certificate of gateway {i} rotated")
            label = a.store.get(item.id).label  # type: ignore[union-attr]
            vec = a.embedder.embed([item.text])
            a.store.store_vectors(a.embedder.key, [label], vec, 0)  # what a backfill batch commits
            t0 = time.perf_counter()
            while b._index is None or label not in b._index.live:
                time.sleep(0.001)
            lags.append((time.perf_counter() - t0) * 1000)
        b.close()
        lags.sort()
        print(f"propagation (vector committed on A -> in B's index), {len(lags)} rounds: p50 "
              f"{statistics.median(lags):.1f} ms, p90 {lags[int(len(lags) * 0.9) - 1]:.1f} ms, max {lags[-1]:.1f} ms")

        for text in _texts(args.items):
            a.add_item(text)
        t0 = time.perf_counter()
        done = a.backfill().embedded
        print(f"backfill of {done} items on PostgreSQL: {done / (time.perf_counter() - t0):,.0f} items/s")
        a.close()
        total = args.items + args.rounds
        cold = MemoryService(url, HashingEmbedder(), state_root=tmp / "c")
        print(f"start without an index file ({total} items, rebuilt from the journal): {_ready(cold):.2f} s")
        cold.close()  # saves its index file
        warm = MemoryService(url, HashingEmbedder(), state_root=tmp / "c")
        print(f"start with its index file (verify, load, reconcile): {_ready(warm):.2f} s")
        warm.close()

        lite = MemoryService(tmp / "j.sqlite3", HashingEmbedder())
        for text in _texts(total):
            lite.add_item(text)
        lite.backfill()
        t0 = time.perf_counter()
        MemoryIndex(lite.index_path, lite.embedder.key, lite.index_params).rebuild(lite.store)
        print(f"SQLite rebuild of the same {total} items, for comparison: {time.perf_counter() - t0:.2f} s")
        lite.close()
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
