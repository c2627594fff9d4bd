"""Memory benchmark: backfill throughput with the default embedder, hnswlib recall@10 and latency.

    .venv/bin/python bench/bench_memory.py [--items 100000] [--queries 500] [--json]

Builds a real journal in a temp dir through `MemoryService` (add_item, backfill), then compares the
hnswlib answers with exact brute-force cosine search over the very same stored vectors. Targets
(task D): recall@10 >= 0.95, query p50 <= 1 ms at 100,000 items. Texts are synthetic operations
notes drawn from a Zipf-distributed vocabulary, so common words are shared as in real logs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from palyra_ops.clock import FakeClock  # noqa: E402
from palyra_ops.memory import HashingEmbedder, MemoryService  # noqa: E402
from palyra_ops.memory.index import IndexParams  # noqa: E402

SEED_WORDS = (
    "deploy rollback incident latency error timeout disk cpu memory quota cert dns backup restore queue "
    "worker cron job alert page oncall database replica primary failover cache redis postgres kafka "
    "network packet loss region zone cluster node pod container image build pipeline test flaky retry "
    "budget cost spend invoice customer ticket escalation review migration schema index vacuum storage"
).split()


def make_vocab(rng: random.Random, n: int = 4000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    extra = {"".join(rng.choice(letters) for _ in range(rng.randint(3, 10))) for _ in range(n)}
    return SEED_WORDS + sorted(extra)


def make_texts(rng: random.Random, vocab: list[str], n: int) -> list[str]:
    weights = [1.0 / (i + 1) ** 1.05 for i in range(len(vocab))]
    out = []
    for i in range(n):
        words = rng.choices(vocab, weights=weights, k=rng.randint(8, 30))
        out.append(f"run {i}: " + " ".join(words))
    return out


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--ef", type=int, default=IndexParams().ef_search)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = random.Random(42)
    vocab = make_vocab(rng)
    texts = make_texts(rng, vocab, args.items)
    report: dict[str, object] = {"items": args.items, "queries": args.queries}

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.sqlite3"
        clock = FakeClock(1_767_225_600_000)
        emb = HashingEmbedder()
        svc = MemoryService(path, emb, clock, index_params=IndexParams(ef_search=args.ef))

        t = time.perf_counter()
        for i, text in enumerate(texts):
            svc.add_item(text, routine_id=f"r{i % 20}", run_id=f"run-{i}", source="delivery:local_only")
            clock.advance(1000)
        report["add_items_per_s"] = round(args.items / (time.perf_counter() - t))

        t = time.perf_counter()
        emb.embed(texts[: min(20_000, args.items)])
        report["embed_only_items_per_s"] = round(min(20_000, args.items) / (time.perf_counter() - t))

        res = svc.backfill()
        assert res.error is None and res.embedded == args.items, res
        report["backfill_items_per_s"] = round(res.items_per_s)
        report["backfill_s"] = round(res.duration_ms / 1000, 1)
        report["backfill_batches"] = res.batches
        report["index_file_bytes"] = svc.index_path.stat().st_size
        report["journal_file_bytes"] = path.stat().st_size

        # ground truth over exactly the stored vectors
        key = emb.key
        labels: list[int] = []
        mats = []
        for ls, m in svc.store.iter_vectors(key):
            labels.extend(ls)
            mats.append(m)
        all_labels = np.asarray(labels)
        matrix = np.vstack(mats)

        qtexts = make_texts(random.Random(7), vocab, args.queries)
        qvecs = emb.embed(qtexts)
        exact_top = []
        for q in qvecs:
            sims = matrix @ q
            top = np.argpartition(-sims, 10)[:10]
            exact_top.append(set(all_labels[top].tolist()))

        idx = svc._index
        assert idx is not None
        lat = []
        hits = 0
        for q, truth in zip(qvecs, exact_top, strict=True):
            t = time.perf_counter()
            got = idx.query(q, 10)
            lat.append((time.perf_counter() - t) * 1000)
            assert got is not None
            hits += len(truth & {label for label, _ in got})
        report["recall_at_10"] = round(hits / (10 * args.queries), 4)
        report["query_p50_ms"] = round(statistics.median(lat), 3)
        report["query_p99_ms"] = round(percentile(lat, 99), 3)

        full = []
        for qt in qtexts[:100]:
            t = time.perf_counter()
            svc.search(qt, k=10)
            full.append((time.perf_counter() - t) * 1000)
        report["service_search_p50_ms"] = round(statistics.median(full), 3)

        fresh = MemoryService(path, HashingEmbedder(), clock)
        t = time.perf_counter()
        fresh.search("disk latency", k=10)
        report["cold_load_and_search_ms"] = round((time.perf_counter() - t) * 1000, 1)
        fresh.close()
        svc.close()

    report["ok"] = report["recall_at_10"] >= 0.95 and report["query_p50_ms"] <= 1.0  # type: ignore[operator]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:28} {v}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
