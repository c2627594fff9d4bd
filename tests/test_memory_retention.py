"""Retention deletes exactly what each limit names; the index forgets deleted items; VACUUM shrinks."""

from __future__ import annotations

from pathlib import Path

import pytest

from palyra_ops.clock import FakeClock
from palyra_ops.errors import NotFound, PalyraError
from palyra_ops.memory import MemoryConfig, MemoryService, RetentionConfig
from palyra_ops.memory.maintenance import MAINTENANCE_EVENT, parse_size_bytes

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000


def _service(tmp_path: Path, **retention: int | None) -> tuple[MemoryService, FakeClock]:
    clock = FakeClock(T0)
    cfg = MemoryConfig(retention=RetentionConfig(**retention))
    return MemoryService(tmp_path / "journal.sqlite3", clock=clock, config=cfg), clock


def _add(svc: MemoryService, clock: FakeClock, texts: list[str], step_ms: int = MIN, **kw: object) -> list[str]:
    ids = []
    for t in texts:
        ids.append(svc.add_item(t, **kw).id)  # type: ignore[arg-type]
        clock.advance(step_ms)
    return ids


def _ids(svc: MemoryService) -> list[str]:
    return [i.id for i in svc.list(limit=1000).items]


def test_ttl_deletes_only_expired_items(tmp_path: Path) -> None:
    svc, clock = _service(tmp_path)
    short = svc.add_item("short lived", ttl_ms=5 * MIN).id
    longer = svc.add_item("longer lived", ttl_ms=60 * MIN).id
    keep = svc.add_item("kept forever").id
    clock.advance(5 * MIN)  # exactly at expiry: expired
    res = svc.maintain()
    assert (res.deleted_ttl, res.deleted_max_age, res.deleted_max_items, res.deleted_max_bytes) == (1, 0, 0, 0)
    assert set(_ids(svc)) == {longer, keep}
    assert short not in _ids(svc)
    assert res.freed_text_bytes == len("short lived")


def test_default_ttl_applies_when_item_has_none(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    cfg = MemoryConfig(retention=RetentionConfig(default_ttl_ms=10 * MIN))
    svc = MemoryService(tmp_path / "j.sqlite3", clock=clock, config=cfg)
    item = svc.add_item("defaults")
    assert item.expires_at_ms == T0 + 10 * MIN
    assert svc.add_item("explicit", ttl_ms=MIN).expires_at_ms == T0 + MIN


def test_max_age_deletes_strictly_older_items(tmp_path: Path) -> None:
    svc, clock = _service(tmp_path, max_age_ms=3 * MIN)
    ids = _add(svc, clock, [f"item {i}" for i in range(6)])  # created at T0 + 0..5 min
    # now = T0 + 6 min; cutoff T0 + 3 min: items at 0, 1, 2 min are older; the one at 3 min stays
    res = svc.maintain()
    assert res.deleted_max_age == 3
    assert res.deleted == 3
    assert sorted(_ids(svc)) == sorted(ids[3:])


def test_max_items_keeps_newest(tmp_path: Path) -> None:
    svc, clock = _service(tmp_path, max_items=4)
    ids = _add(svc, clock, [f"item {i}" for i in range(10)])
    res = svc.maintain()
    assert res.deleted_max_items == 6
    assert _ids(svc) == list(reversed(ids[6:]))


def test_max_items_breaks_same_millisecond_ties_by_insertion(tmp_path: Path) -> None:
    svc, clock = _service(tmp_path, max_items=2)
    ids = _add(svc, clock, ["a", "b", "c"], step_ms=0)
    svc.maintain()
    assert _ids(svc) == [ids[2], ids[1]]


def test_max_bytes_deletes_oldest_until_under_limit(tmp_path: Path) -> None:
    svc, clock = _service(tmp_path, max_bytes=25)
    ids = _add(svc, clock, ["x" * 10, "y" * 10, "z" * 10, "w" * 10])
    res = svc.maintain()
    # newest first: 10, 20 (<= 25 kept), 30 (> 25) -> the two oldest go
    assert res.deleted_max_bytes == 2
    assert res.freed_text_bytes == 20
    assert _ids(svc) == [ids[3], ids[2]]


def test_limits_combine_and_each_counts_what_it_named(tmp_path: Path) -> None:
    svc, clock = _service(tmp_path, max_age_ms=100 * MIN, max_items=5, max_bytes=30)
    old = _add(svc, clock, ["old one", "old two"], step_ms=MIN)  # T0, T0+1m
    clock.set(T0 + 200 * MIN)
    expiring = svc.add_item("expiring", ttl_ms=MIN).id
    clock.advance(2 * MIN)
    recent = _add(svc, clock, [f"r{i:02d}-abcdefgh" for i in range(7)])  # 12 bytes each
    res = svc.maintain()
    assert res.deleted_ttl == 1
    assert res.deleted_max_age == 2
    assert res.deleted_max_items == 2  # 7 recent -> 5
    assert res.deleted_max_bytes == 3  # 5 * 12 = 60 > 30 -> keep 2 (24 bytes)
    assert res.deleted == 8
    remaining = _ids(svc)
    assert remaining == [recent[6], recent[5]]
    assert expiring not in remaining and not set(old) & set(remaining)
    name, payload = res.to_event()
    assert name == MAINTENANCE_EVENT == "memory.maintenance.run"
    assert payload["deleted"] == 8 and payload["vacuum"]["ran"] is False


def test_no_limits_delete_nothing(tmp_path: Path) -> None:
    svc, clock = _service(tmp_path)
    ids = _add(svc, clock, [f"item {i}" for i in range(5)])
    clock.advance(10_000 * 24 * 60 * MIN)
    assert svc.maintain().deleted == 0
    assert sorted(_ids(svc)) == sorted(ids)


def test_index_no_longer_returns_deleted_items(tmp_path: Path) -> None:
    svc, clock = _service(tmp_path, max_items=3)
    texts = ["alpha incident report", "beta incident report", "gamma incident report", "delta incident report",
             "epsilon incident report"]
    ids = _add(svc, clock, texts)
    assert svc.backfill().embedded == 5
    before = svc.search("alpha incident", k=5)
    assert before.method == "hnsw" and before.hits[0].item.id == ids[0]
    res = svc.maintain()
    assert res.deleted_max_items == 2 and res.index_removed == 2
    after = svc.search("alpha incident", k=5)
    assert after.method == "hnsw"
    assert {h.item.id for h in after.hits} == set(ids[2:])
    # and in a fresh process, loading the saved index
    svc.close()
    fresh = MemoryService(tmp_path / "journal.sqlite3", clock=clock)
    again = fresh.search("alpha incident", k=5)
    assert again.method == "hnsw"
    assert {h.item.id for h in again.hits} == set(ids[2:])


def test_deletion_while_index_not_loaded_is_reconciled(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    clock = FakeClock(T0)
    svc = MemoryService(path, clock=clock)
    ids = _add(svc, clock, [f"note number {i}" for i in range(4)])
    svc.backfill()
    svc.close()
    cfg = MemoryConfig(retention=RetentionConfig(max_items=1))
    other = MemoryService(path, clock=clock, config=cfg)  # index not in memory yet
    res = other.maintain()
    assert res.deleted_max_items == 3 and res.index_removed == 3
    other.close()
    third = MemoryService(path, clock=clock)
    hits = third.search("note number", k=4).hits
    assert [h.item.id for h in hits] == [ids[3]]


def test_vacuum_shrinks_the_file_after_a_large_delete(tmp_path: Path) -> None:
    svc, clock = _service(tmp_path, max_items=10)
    path = tmp_path / "journal.sqlite3"
    for i in range(1500):
        svc.add_item(f"item {i} " + "lorem ipsum dolor sit amet " * 40)
    clock.advance(MIN)
    res = svc.maintain()
    assert res.deleted_max_items == 1490
    v = res.vacuum
    assert v is not None and v.ran, v
    assert v.file_bytes_after < v.file_bytes_before / 3
    assert v.freed_bytes == v.file_bytes_before - v.file_bytes_after
    size = path.stat().st_size + (Path(str(path) + "-wal").stat().st_size if Path(str(path) + "-wal").exists() else 0)
    assert size == v.file_bytes_after
    # nothing left to free: the next pass decides it is not worthwhile
    again = svc.maintain()
    assert again.vacuum is not None and not again.vacuum.ran
    assert again.vacuum.reason.startswith("not worthwhile")
    assert len(_ids(svc)) == 10


def test_run_outputs_are_stored_once_per_run(tmp_path: Path) -> None:
    svc, _ = _service(tmp_path)
    a = svc.add_item("digest", routine_id="r1", run_id="run-1", source="delivery:local_only")
    b = svc.add_item("digest again", routine_id="r1", run_id="run-1", source="delivery:local_only")
    c = svc.add_item("audit", routine_id="r1", run_id="run-1", source="delivery:audit_only")
    assert a.id == b.id and b.text == "digest"
    assert c.id != a.id
    assert len(_ids(svc)) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "  "}, "memory item text must not be empty"),
        ({"text": "x", "source": "email"}, "unknown memory source 'email' (expected one of delivery:local_only, "
         "delivery:audit_only, api, cli)"),
        ({"text": "x", "ttl_ms": 0}, "memory item ttl must be longer than 0s"),
        ({"text": "x" * (1024 * 1024 + 1)}, "memory item text is 1048577 bytes; the limit is 1048576"),
    ],
)
def test_bad_items_are_refused_and_change_nothing(tmp_path: Path, kwargs: dict, message: str) -> None:
    svc, _ = _service(tmp_path)
    text = kwargs.pop("text")
    with pytest.raises(PalyraError) as exc:
        svc.add_item(text, **kwargs)
    assert exc.value.message == message
    assert _ids(svc) == []


def test_list_pages_with_a_stable_cursor(tmp_path: Path) -> None:
    svc, clock = _service(tmp_path)
    ids = _add(svc, clock, [f"i{n}" for n in range(7)], routine_id="r")
    p1 = svc.list(limit=3)
    assert [i.id for i in p1.items] == ids[::-1][:3] and p1.next_cursor
    svc.add_item("newer, not on later pages")
    p2 = svc.list(limit=3, cursor=p1.next_cursor)
    p3 = svc.list(limit=3, cursor=p2.next_cursor)
    assert [i.id for i in p2.items + p3.items] == ids[::-1][3:]
    assert p3.next_cursor is None
    with pytest.raises(PalyraError, match="invalid cursor 'zzz'"):
        svc.list(cursor="zzz")


def test_get_and_delete(tmp_path: Path) -> None:
    svc, clock = _service(tmp_path)
    ids = _add(svc, clock, ["one", "two"])
    assert svc.get(ids[0]).text == "one"
    assert svc.delete([ids[0], "nope"]) == 1
    with pytest.raises(NotFound, match=f"memory item {ids[0]} not found"):
        svc.get(ids[0])


def test_config_from_dict() -> None:
    cfg = MemoryConfig.from_dict(
        {
            "retention": {"max_age": "30d", "max_items": 1000, "max_bytes": "256MiB", "default_ttl": "7d"},
            "intervals": {"maintenance": "1m"},
            "vacuum": {"min_free_bytes": "4MB", "min_free_ratio": 0.2},
            "embedder": {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1", "dim": 8},
        }
    )
    assert cfg.retention == RetentionConfig(30 * 86_400_000, 1000, 256 * 1024 * 1024, 7 * 86_400_000)
    assert (cfg.maintenance_interval_ms, cfg.backfill_interval_ms, cfg.batch_size) == (60_000, 600_000, 64)
    assert (cfg.vacuum_min_free_bytes, cfg.vacuum_min_free_ratio) == (4_000_000, 0.2)
    assert cfg.embedder.kind == "openai" and cfg.embedder.dim == 8
    assert MemoryConfig.from_dict(None) == MemoryConfig()
    assert parse_size_bytes("1GiB") == 1 << 30


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"retention": {"max_age": "soon"}}, "memory.retention.max_age: invalid duration 'soon': expected e.g. "
         "500ms, 30s, 5m, 2h, 1d or 1h30m"),
        ({"retention": {"max_items": -1}}, "memory.retention.max_items must be a non-negative integer, got -1"),
        ({"retention": {"max_bytes": "lots"}}, "memory.retention.max_bytes: invalid size 'lots': expected bytes "
         "or e.g. 512KiB, 256MB, 1GiB"),
        ({"retention": {"maxage": "1d"}}, "memory.retention: unknown field(s) maxage (expected default_ttl, "
         "max_age, max_bytes, max_items)"),
        ({"batch": 0}, "memory.batch must be an integer between 1 and 2048, got 0"),
        ({"embedder": {"kind": "bert"}}, "memory.embedder.kind must be 'hashing' or 'openai', got 'bert'"),
        ({"embedder": {"kind": "openai"}}, "memory.embedder: kind 'openai' needs model and base_url"),
    ],
)
def test_config_errors(data: dict, message: str) -> None:
    with pytest.raises(PalyraError) as exc:
        MemoryConfig.from_dict(data)
    assert exc.value.message == message
