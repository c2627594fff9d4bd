"""Memory items in a PostgreSQL journal (SPEC §9, §11): the store answers as SQLite's does, and each
service's in-memory hnswlib index follows what its peers write (the change feed + NOTIFY).

Real PostgreSQL (tests/pgcluster.py); every service has a state root of its own, as daemons on two
machines would (the index file is per state root, the items are the journal's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock

from palyra_ops.errors import NotFound
from palyra_ops.journal import open_journal
from palyra_ops.journal.postgres_memory import CHANGES, PgMemoryStore
from palyra_ops.memory.embedders import HashingEmbedder
from palyra_ops.memory.maintenance import MemoryConfig, RetentionConfig
from palyra_ops.memory.service import MemoryService

T0 = 1_760_000_000_000


def _svc(url: str, root: Path, clock: FakeClock | None = None, config: MemoryConfig | None = None) -> MemoryService:
    return MemoryService(url, HashingEmbedder(), clock or FakeClock(T0), config, state_root=root)


def _poll(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_items_retention_and_search_behave_as_on_sqlite(pg_url: str, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    cfg = MemoryConfig(retention=RetentionConfig(max_items=3))
    with _svc(pg_url, tmp_path / "a", clock, cfg) as svc:
        ids = []
        for i, text in enumerate(["payments certificate expires", "disk usage at 71 percent",
                                  "backup finished", "rotated the TLS certificate", "cache warmed"]):
            clock.advance(1000)
            ids.append(svc.add_item(text, routine_id=f"r{i % 2}", run_id=f"run{i}", source="delivery:local_only").id)
        again = svc.add_item("other text", run_id="run0", source="delivery:local_only")
        assert again.id == ids[0] and again.text == "payments certificate expires"  # once per run
        page = svc.list(limit=2)
        assert [i.id for i in page.items] == ids[::-1][:2] and page.next_cursor
        assert [i.id for i in svc.list(limit=2, cursor=page.next_cursor).items] == ids[::-1][2:4]
        assert svc.backfill().embedded == 5
        res = svc.search("certificate expiry", k=2)
        assert res.method == "hnsw" and res.pending == 0
        assert {h.item.id for h in res.hits} == {ids[0], ids[3]}
        assert [h.item.id for h in svc.search("certificate", k=5, routine_id="r1").hits] == [ids[3], ids[1]]
        m = svc.maintain()
        assert (m.deleted_max_items, m.error, m.vacuum and m.vacuum.ran) == (2, None, False)
        assert {i.id for i in svc.list().items} == set(ids[2:])
        assert svc.delete([ids[4], "nope"]) == 1
        st = svc.stats()
        assert (st["items"], st["embedded"], st["pending"]) == (2, 2, 0)
        assert st["journal"]["location"] == pg_url and st["journal"]["table_bytes"] > 0
        with pytest.raises(NotFound):
            svc.get(ids[0])
    # three deletes by retention, one by hand; five vectors stored: the feed every index follows
    with open_journal(pg_url) as j:
        ops = [(r["op"]) for r in j._all(f"SELECT op FROM {CHANGES} ORDER BY seq")]  # type: ignore[attr-defined]
    assert sorted(ops) == ["delete"] * 3 + ["vector"] * 5


def test_a_peer_s_vectors_and_deletes_reach_a_following_index(pg_url: str, tmp_path: Path) -> None:
    with _svc(pg_url, tmp_path / "a") as a, _svc(pg_url, tmp_path / "b") as b:
        old = a.add_item("nightly digest of the payments cluster")
        a.backfill()
        follower = b.follow(poll_s=30)  # a long poll: only NOTIFY can explain a quick pick-up
        assert follower.ready.wait(20) and b._index is not None and b._index.count == 1
        label = a.store.get(old.id).label  # type: ignore[union-attr]
        assert label in b._index.live and b.index_path.exists() and not a.index_path.samefile(b.index_path)
        time.sleep(0.6)  # the listener has connected (it calls back once then: that round is done)
        item = a.add_item("certificate of the gateway expires in 3 days")
        a.backfill()
        t0 = time.monotonic()
        _poll("the peer's vector in b's index",
              lambda: b.store.get(item.id).label in b._index.live)  # type: ignore[union-attr]
        assert time.monotonic() - t0 < 5, "no notification: the 30 s poll found it"
        hits = b.search("gateway certificate expires", k=1)
        assert hits.method == "hnsw" and [h.item.id for h in hits.hits] == [item.id]
        assert a.delete([old.id]) == 1
        _poll("the peer's delete out of b's index", lambda: label not in b._index.live)  # type: ignore[union-attr]
        assert [h.item.id for h in b.search("payments digest", k=5).hits] == [item.id]
        assert follower.last_error is None and follower.applied >= 2


def test_a_follower_behind_the_pruned_feed_reconciles(pg_url: str, tmp_path: Path) -> None:
    with _svc(pg_url, tmp_path / "a") as a, _svc(pg_url, tmp_path / "b") as b:
        keep = a.add_item("kept item about databases")
        gone = a.add_item("deleted item about queues")
        a.backfill()
        follower = b.follow(poll_s=0.2)
        assert follower.ready.wait(20)
        follower.close()  # b stops following (as if offline); a deletes and the feed is pruned
        a.delete([gone.id])
        store = a.store
        assert isinstance(store, PgMemoryStore)
        with store.journal.transaction() as t:
            t.execute(f"UPDATE {CHANGES} SET at_ms = 0")
            store._prune_changes(t)
        assert store.changes_after(0) == [] and store.pruned_through() > 0
        assert follower.sync() == 0
        assert b._index is not None and b._index.live == {store.get(keep.id).label}  # type: ignore[union-attr]
        assert follower.cursor == store.change_head()


def test_a_restarted_follower_builds_from_the_journal(pg_url: str, tmp_path: Path) -> None:
    with _svc(pg_url, tmp_path / "a") as a:
        items = [a.add_item(f"operations note number {i} about service {i % 7}") for i in range(50)]
        a.backfill()
    root = tmp_path / "b"
    with _svc(pg_url, root) as b:
        assert b.follow().ready.wait(20)
        assert b._index is not None and b._index.count == 50
    index = root.glob("*.memory.hnsw")
    for f in index:  # a lost index file: the next start rebuilds it from the vectors in the journal
        f.unlink()
    with _svc(pg_url, root) as b2:
        assert b2.follow().ready.wait(20)
        assert b2._index is not None and b2._index.count == 50
        assert b2.search("service 3", k=1).method == "hnsw"
        assert b2.get(items[0].id).embedding is not None


#: test_memory_retention's tests that build their service with its `_service` helper: run here on
#: PostgreSQL unchanged (the SQLite-file ones — VACUUM, a second service on the same path — are not)
SHARED_RETENTION_TESTS = [
    "test_ttl_deletes_only_expired_items", "test_max_age_deletes_strictly_older_items",
    "test_max_items_keeps_newest", "test_max_items_breaks_same_millisecond_ties_by_insertion",
    "test_max_bytes_deletes_oldest_until_under_limit", "test_limits_combine_and_each_counts_what_it_named",
    "test_no_limits_delete_nothing", "test_run_outputs_are_stored_once_per_run",
    "test_list_pages_with_a_stable_cursor", "test_get_and_delete",
]


@pytest.mark.parametrize("name", SHARED_RETENTION_TESTS)
def test_the_retention_suite_passes_on_postgresql(name: str, pg_url: str, tmp_path: Path, monkeypatch) -> None:
    import test_memory_retention as suite

    opened: list[MemoryService] = []

    def service(tmp: Path, **retention: int | None) -> tuple[MemoryService, FakeClock]:
        clock = FakeClock(suite.T0)
        svc = MemoryService(pg_url, clock=clock, config=MemoryConfig(retention=RetentionConfig(**retention)),
                            state_root=tmp / "state")
        opened.append(svc)
        return svc, clock

    monkeypatch.setattr(suite, "_service", service)
    try:
        getattr(suite, name)(tmp_path)
    finally:
        for svc in opened:
            svc.close()


SHARED_SEARCH_TESTS = ["test_hnsw_and_exact_agree_on_the_corpus", "test_filters_by_routine_and_time",
                       "test_filtered_search_through_the_index", "test_k_larger_than_corpus_returns_everything",
                       "test_bad_queries", "test_pending_items_are_reported"]


@pytest.mark.parametrize("name", SHARED_SEARCH_TESTS)
def test_the_search_suite_passes_on_postgresql(name: str, pg_url: str, tmp_path: Path, monkeypatch) -> None:
    """test_memory_search's corpus tests, on a corpus in PostgreSQL; and every known answer first."""
    import inspect

    import test_memory_search as suite

    clock = FakeClock(suite.T0)
    with MemoryService(pg_url, HashingEmbedder(), clock, state_root=tmp_path) as svc:
        ids = []
        for i, (routine, text) in enumerate(suite.CORPUS):
            ids.append(svc.add_item(text, routine_id=routine, run_id=f"run-{i}", source="delivery:local_only").id)
            clock.advance(suite.HOUR)
        assert svc.backfill().embedded == len(suite.CORPUS)
        test = getattr(suite, name)
        test(**{"corpus": (svc, ids), "monkeypatch": monkeypatch}
             if "monkeypatch" in inspect.signature(test).parameters else {"corpus": (svc, ids)})
        if name == SHARED_SEARCH_TESTS[0]:
            for query in sorted(suite.KNOWN):
                suite.test_known_answers_come_first((svc, ids), query)


def test_the_memory_cli_works_on_a_postgresql_journal(pg_url: str, tmp_path: Path, capsys, monkeypatch) -> None:
    import json

    from test_memory_search import _cli

    monkeypatch.setenv("PALYRA_STATE_ROOT", str(tmp_path / "state"))
    code, _, err = _cli(capsys, "memory", "search", "x", "--journal", pg_url)
    assert code == 1 and err == f"palyra-ops: no journal at {pg_url} (run `palyra-ops apply` or pass --journal)\n"
    code, out, _ = _cli(capsys, "memory", "add", "Disk usage on db-primary reached 91%", "--routine", "sre",
                        "--journal", pg_url, "-o", "json")
    item = json.loads(out)
    assert code == 0 and item["source"] == "cli" and item["embedding"] is None
    code, out, _ = _cli(capsys, "memory", "backfill", "--journal", pg_url, "-o", "json")
    assert code == 0 and json.loads(out)["embedded"] == 1
    code, out, _ = _cli(capsys, "memory", "search", "disk usage", "-k", "1", "--journal", pg_url, "-o", "json")
    body = json.loads(out)
    assert (code, body["method"], [r["id"] for r in body["results"]]) == (0, "hnsw", [item["id"]])
    code, out, _ = _cli(capsys, "memory", "stats", "--journal", pg_url, "-o", "json")
    stats = json.loads(out)
    assert (stats["items"], stats["embedded"], stats["index"]["count"]) == (1, 1, 1)
    assert stats["index"]["path"].startswith(str(tmp_path / "state" / "postgres-"))
    code, out, _ = _cli(capsys, "memory", "stats", "--journal", pg_url)
    assert code == 0 and f"journal:   {pg_url}: items table " in out and "1 embedded, 0 pending" in out
    for argv in (["list"], ["search", "disk"], ["backfill"], ["vacuum", "--max-items", "5"], ["add", "more"]):
        code, out, err = _cli(capsys, "memory", *argv, "--journal", pg_url)  # every text output
        assert (code, err) == (0, ""), (argv, err)
    assert "vacuum skipped: PostgreSQL: autovacuum reclaims space" in _cli(
        capsys, "memory", "vacuum", "--journal", pg_url)[1]
    code, out, _ = _cli(capsys, "memory", "delete", item["id"], "--journal", pg_url)
    assert (code, out) == (0, "deleted 1 item(s)\n")
    assert not list(Path.cwd().glob("postgres*")), "nothing created for the URL itself"


def test_a_follower_rides_out_a_postgresql_restart(pg_cluster, pg_url: str, tmp_path: Path) -> None:
    """Down for a few seconds: the follower reports the error and retries; back up, the listener
    reconnects and what a peer wrote meanwhile and after reaches the index (its poll is 30 s)."""
    with _svc(pg_url, tmp_path / "a") as a, _svc(pg_url, tmp_path / "b") as b:
        before = a.add_item("written before the outage")
        a.backfill()
        follower = b.follow(poll_s=30)
        assert follower.ready.wait(20)
        pg_cluster.stop_server()
        try:
            with pytest.raises(Exception):  # noqa: B017 - whichever journal error: the server is down
                b.search("outage")
            follower._wake.set()
            _poll("the follower reporting the outage", lambda: follower.last_error is not None)
        finally:
            pg_cluster.start_server()
        after = _poll("a write once the server is back", lambda: _try_add(a, "written after the restart"))
        a.backfill()
        _poll("the item written after the restart in b's index",  # b's pool may still be reconnecting
              lambda: _try(lambda: b.store.get(after.id).label in b._index.live))  # type: ignore[union-attr]
        assert b.store.get(before.id).label in b._index.live  # type: ignore[union-attr]
        _poll("the follower healthy again", lambda: follower.last_error is None)
        assert [h.item.id for h in b.search("written after the restart", k=1).hits] == [after.id]


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - the pool is still reconnecting
        return None


def _try_add(svc: MemoryService, text: str) -> Any:
    return _try(lambda: svc.add_item(text))


def test_a_failing_follower_backs_off_instead_of_retrying_at_every_notification(pg_url: str, tmp_path: Path) -> None:
    """An embedder whose endpoint is down cannot name its model (the dimension probe): the follower
    retries 0.1, 0.2, 0.4 … s apart (at most 5 s), not at each of its peers' writes."""
    from palyra_ops.errors import PalyraError

    calls: list[float] = []

    class Down(HashingEmbedder):
        @property
        def key(self):  # type: ignore[override]
            calls.append(time.monotonic())
            raise PalyraError("embedding endpoint unreachable")

    with MemoryService(pg_url, Down(), FakeClock(T0), state_root=tmp_path) as svc:
        follower = svc.follow(poll_s=0.1)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            follower._wake.set()  # a peer writing all the time
            time.sleep(0.01)
        assert follower.last_error == "PalyraError: embedding endpoint unreachable"
        assert 3 <= len(calls) <= 6, calls
        gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
        assert all(later >= earlier * 1.5 for earlier, later in zip(gaps, gaps[1:], strict=False)), gaps


def test_a_follower_warns_when_its_embedder_is_not_the_journal_s(pg_url: str, tmp_path: Path, caplog) -> None:
    from palyra_ops.memory.embedders import EmbedderSpec

    with MemoryService(pg_url, EmbedderSpec(kind="hashing", dim=256), FakeClock(T0), state_root=tmp_path / "a") as a:
        a.add_item("embedded with 256 dimensions")
        a.backfill()  # the journal remembers this spec
    caplog.set_level("WARNING", logger="palyra_ops.memory")
    with MemoryService(pg_url, EmbedderSpec(), FakeClock(T0), state_root=tmp_path / "b") as b:
        assert b.follow().ready.wait(20)
    warned = [r.getMessage() for r in caplog.records if "re-embed each other's items" in r.getMessage()]
    assert len(warned) == 1 and "'dim': 256" in warned[0], warned
    caplog.clear()
    with MemoryService(pg_url, EmbedderSpec(kind="hashing", dim=256), FakeClock(T0), state_root=tmp_path / "c") as c:
        assert c.follow().ready.wait(20)
    assert not [r for r in caplog.records if "re-embed" in r.getMessage()]


def test_a_large_missing_index_is_rebuilt_in_a_child_process(pg_url: str, tmp_path: Path, caplog,
                                                             monkeypatch) -> None:
    """Past IN_PROCESS_BUILD_MAX items the follower's first build runs in a spawned child (its
    hnswlib inserts would hold the daemon's event loop up); the daemon loads the file it saved."""
    import palyra_ops.memory.follower as follower_mod

    with _svc(pg_url, tmp_path / "a") as a:
        items = [a.add_item(f"note {i} about service {i % 5}") for i in range(30)]
        a.backfill()
    monkeypatch.setattr(follower_mod, "IN_PROCESS_BUILD_MAX", 10)
    caplog.set_level("INFO", logger="palyra_ops.memory")
    with MemoryService(pg_url, None, FakeClock(T0), state_root=tmp_path / "b") as b:
        assert b.follow().ready.wait(60)
        assert b._index is not None and b._index.count == 30 and b._index.generation is not None
        assert b.index_path.exists()
        assert [h.item.id for h in b.search("note 7 about service 2", k=1).hits] == [items[7].id]
    assert any("rebuilt in a child process (missing)" in r.getMessage() for r in caplog.records), caplog.text
