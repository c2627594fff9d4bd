"""Backfill: batches of 64, items added mid-run wait for the next run, model changes re-embed
everything, a damaged index file is rebuilt from the journal's stored vectors."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import numpy as np

from palyra_ops.clock import FakeClock
from palyra_ops.journal.memory import MemoryStore
from palyra_ops.memory import BACKFILL_EVENT, HashingEmbedder, MemoryService
from palyra_ops.memory.index import index_path_for, sidecar_path_for

T0 = 1_767_225_600_000


class CountingEmbedder(HashingEmbedder):
    """The real hashing embedder, recording each call's batch size (and optionally acting mid-run)."""

    def __init__(self, dim: int = 384, on_call=None) -> None:
        super().__init__(dim)
        self.calls: list[int] = []
        self.on_call = on_call

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        if self.on_call is not None:
            self.on_call(len(self.calls))
        return super().embed(texts)


WORDS = ["disk", "deploy", "latency", "cert", "backup", "queue", "dns", "cpu", "memory", "quota"]


def _text(i: int) -> str:
    return f"item {i} {WORDS[i % 10]} {WORDS[(i * 7) % 10]} alert"


def _fill(svc: MemoryService, n: int) -> list[str]:
    return [svc.add_item(_text(i)).id for i in range(n)]


def _stored_models(path: Path) -> set[tuple]:
    with sqlite3.connect(path) as c:
        return set(c.execute("SELECT embedding_model, embedding_dim, embedding_version FROM journal_memory_items"))


def test_backfill_1000_items_in_batches_of_64(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    path = tmp_path / "j.sqlite3"
    svc = MemoryService(path, emb, FakeClock(T0))
    _fill(svc, 1000)
    res = svc.backfill()
    assert res.error is None
    assert res.embedded == 1000 and res.batches == 16
    assert emb.calls == [64] * 15 + [40]
    assert res.pending_after == 0 and res.index_count == 1000 and res.index_saved
    assert res.index_action == "rebuilt (missing)"
    name, payload = res.to_event()
    assert name == BACKFILL_EVENT and payload["embedded"] == 1000
    side = json.loads(sidecar_path_for(index_path_for(path)).read_text())
    assert (side["model"], side["dim"], side["version"], side["count"]) == ("palyra-hashing-ngram", 384, "1", 1000)
    # nothing left: a second run embeds nothing and does not rewrite the index
    again = svc.backfill()
    assert (again.embedded, again.batches, again.index_saved, emb.calls[-1]) == (0, 0, False, 40)


def test_items_added_during_a_backfill_wait_for_the_next_run(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    added: list[str] = []
    svc: MemoryService

    def add_some(call: int) -> None:
        if call == 2:  # a delivery lands while the run is busy
            added.extend(svc.add_item(f"late arrival {i}").id for i in range(10))

    emb = CountingEmbedder(on_call=add_some)
    svc = MemoryService(path, emb, FakeClock(T0))
    _fill(svc, 200)
    first = svc.backfill()
    assert first.embedded == 200 and first.pending_after == 10
    assert emb.calls == [64, 64, 64, 8]
    second = svc.backfill()
    assert second.embedded == 10 and second.pending_after == 0
    assert svc.search("late arrival 3", k=1).hits[0].item.id == added[3]


def test_items_deleted_during_a_backfill_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    svc: MemoryService
    ids: list[str] = []

    def delete_some(call: int) -> None:
        if call == 1:
            svc.delete(ids[:5])  # the first batch is already selected and being embedded

    svc = MemoryService(path, CountingEmbedder(on_call=delete_some), FakeClock(T0))
    ids.extend(_fill(svc, 70))
    res = svc.backfill()
    assert (res.embedded, res.skipped_deleted, res.index_count) == (65, 5, 65)
    assert not {h.item.id for h in svc.search(_text(1), k=70).hits} & set(ids[:5])


def test_limit_stops_early(tmp_path: Path) -> None:
    svc = MemoryService(tmp_path / "j.sqlite3", CountingEmbedder(), FakeClock(T0))
    _fill(svc, 100)
    res = svc.backfill(limit=70, batch_size=32)
    assert (res.embedded, res.batches, res.pending_after) == (70, 3, 30)


def test_changing_the_model_re_embeds_everything(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    svc = MemoryService(path, HashingEmbedder(384), FakeClock(T0))
    ids = _fill(svc, 150)
    assert svc.backfill().embedded == 150
    svc.close()

    other = MemoryService(path, HashingEmbedder(256), FakeClock(T0))
    assert other.stats()["pending"] == 150
    res = other.backfill()
    assert res.index_action.startswith("rebuilt (dimension mismatch: index has 384, embedder makes 256")
    assert res.embedded == 150 and res.index_count == 150
    assert _stored_models(path) == {("palyra-hashing-ngram", 256, "1")}
    hit = other.search(_text(42), k=1).hits[0]
    assert hit.item.id == ids[42] and hit.item.embedding["dim"] == 256


def test_version_change_also_re_embeds(tmp_path: Path) -> None:
    class V2(HashingEmbedder):
        VERSION = "2"

    path = tmp_path / "j.sqlite3"
    svc = MemoryService(path, HashingEmbedder(), FakeClock(T0))
    _fill(svc, 10)
    svc.backfill()
    res = MemoryService(path, V2(), FakeClock(T0)).backfill()
    assert res.embedded == 10
    assert res.index_action.startswith("rebuilt (model mismatch: index has palyra-hashing-ngram@1")


def _corrupt_and_check(tmp_path: Path, damage) -> None:
    path = tmp_path / "j.sqlite3"
    emb = CountingEmbedder()
    svc = MemoryService(path, emb, FakeClock(T0))
    ids = _fill(svc, 300)
    svc.backfill()
    svc.close()
    damage(index_path_for(path))
    emb2 = CountingEmbedder()
    fresh = MemoryService(path, emb2, FakeClock(T0))
    # reads never rewrite the file; they answer exactly instead
    res = fresh.search(_text(7), k=1)
    assert res.method == "exact" and res.hits[0].item.id == ids[7]
    assert emb2.calls == [1]  # only the query was embedded
    bf = fresh.backfill()
    assert bf.index_action.startswith("rebuilt (")
    assert bf.embedded == 0 and bf.index_count == 300 and bf.index_saved
    assert emb2.calls == [1]  # rebuilt from stored vectors, no re-embedding
    res = fresh.search(_text(7), k=1)
    assert res.method == "hnsw" and res.hits[0].item.id == ids[7]


def test_corrupted_index_bytes_are_rebuilt(tmp_path: Path) -> None:
    def flip(p: Path) -> None:
        data = bytearray(p.read_bytes())
        for i in range(100, len(data), 997):
            data[i] ^= 0xFF
        p.write_bytes(bytes(data))

    _corrupt_and_check(tmp_path, flip)


def test_truncated_index_is_rebuilt(tmp_path: Path) -> None:
    _corrupt_and_check(tmp_path, lambda p: p.write_bytes(p.read_bytes()[:1000]))


def test_garbage_index_and_sidecar_are_rebuilt(tmp_path: Path) -> None:
    def garbage(p: Path) -> None:
        p.write_bytes(b"not an index")
        sidecar_path_for(p).write_text("{oops")

    _corrupt_and_check(tmp_path, garbage)


def test_missing_index_is_rebuilt(tmp_path: Path) -> None:
    _corrupt_and_check(tmp_path, lambda p: p.unlink())


def test_index_missing_vectors_after_a_crash_is_reconciled(tmp_path: Path) -> None:
    """Vectors committed to the journal but never saved to the index file are added on load."""
    path = tmp_path / "j.sqlite3"
    svc = MemoryService(path, HashingEmbedder(), FakeClock(T0))
    ids = _fill(svc, 20)
    svc.backfill()
    svc.close()
    # simulate a daemon that stored vectors for 5 more items and died before saving the index
    more = MemoryService(path, HashingEmbedder(), FakeClock(T0))
    new = [more.add_item(f"unsaved {i}").id for i in range(5)]
    key = more.embedder.key
    store = MemoryStore(sqlite3.connect(path))
    rows = store.pending_batch(key, after_label=0, upto_label=10**9, limit=10)
    store.store_vectors(key, [r[0] for r in rows], more.embedder.embed([r[1] for r in rows]), T0)
    store.conn.close()
    res = more.search("unsaved 3", k=1)
    assert res.method == "hnsw" and res.hits[0].item.id == new[3]
    assert more.search(_text(4), k=1).hits[0].item.id == ids[4]


def test_async_wrappers_run_off_the_event_loop(tmp_path: Path) -> None:
    svc = MemoryService(tmp_path / "j.sqlite3", HashingEmbedder(), FakeClock(T0))

    async def main() -> tuple:
        await svc.aadd_item("from the event loop", routine_id="r1")
        bf = await svc.abackfill()
        mt = await svc.amaintain()
        sr = await svc.asearch("event loop")
        return bf, mt, sr

    bf, mt, sr = asyncio.run(main())
    assert bf.embedded == 1 and mt.error is None
    assert sr.hits[0].item.routine_id == "r1"
    svc.close()


def test_remembered_embedder_spec_is_used_by_default(tmp_path: Path) -> None:
    from palyra_ops.memory import EmbedderSpec

    path = tmp_path / "j.sqlite3"
    daemon = MemoryService(path, EmbedderSpec(kind="hashing", dim=128), FakeClock(T0))
    daemon.add_item("remember me")
    daemon.backfill()
    daemon.close()
    cli = MemoryService(path, None, FakeClock(T0))
    assert cli.embedder.key.dim == 128
    res = cli.search("remember")
    assert res.method == "hnsw" and res.hits[0].item.text == "remember me"


def test_two_services_on_one_journal_see_each_others_index(tmp_path: Path) -> None:
    """A daemon-held service picks up an index another process (the CLI) saved since."""
    path = tmp_path / "j.sqlite3"
    daemon = MemoryService(path, HashingEmbedder(), FakeClock(T0))
    ids = _fill(daemon, 50)
    daemon.backfill()
    assert daemon.search(_text(3), k=1).hits[0].item.id == ids[3]
    cli = MemoryService(path, HashingEmbedder(), FakeClock(T0))
    late = cli.add_item("added and embedded by the CLI").id
    assert cli.backfill().embedded == 1
    cli.close()
    res = daemon.search("added and embedded by the CLI", k=1)
    assert res.method == "hnsw" and res.hits[0].item.id == late
    # and the daemon's next write keeps everything
    daemon.add_item("one more")
    assert daemon.backfill().index_count == 52


def test_search_while_backfilling_in_another_thread(tmp_path: Path) -> None:
    import threading

    svc = MemoryService(tmp_path / "j.sqlite3", HashingEmbedder(), FakeClock(T0))
    ids = _fill(svc, 640)
    svc.backfill(limit=64)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            svc.backfill()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    while t.is_alive():
        svc.search(_text(5), k=3)
    t.join()
    assert not errors
    assert svc.search(_text(600), k=1).hits[0].item.id == ids[600]
