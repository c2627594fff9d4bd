"""Memory across daemons on one PostgreSQL journal (SPEC §9, §11; issue 10 point 5): the items live in
the journal, each daemon keeps its own hnswlib index current.

Two real daemons, each with its own state root (its own index file). Only daemon A embeds (B's
backfill interval is an hour), so an item added on A can only reach B's index through the change
feed B follows — and a search on B answers from its index (`method: hnsw`), not from a file of A's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import DaemonHandle

MEM = "/console/v1/memory"
A_CONFIG = {"memory": {"intervals": {"backfill": "1s"}}}
B_CONFIG = {"memory": {"intervals": {"backfill": "1h"}}}


def _search(d: DaemonHandle, q: str, k: int = 5) -> dict[str, Any]:
    r = d.client().get(f"{MEM}/search", params={"q": q, "k": k})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _found(d: DaemonHandle, q: str, item_id: str) -> dict[str, Any] | None:
    res = _search(d, q)
    hit = any(h["id"] == item_id for h in res["results"])
    return res if hit and res["method"] == "hnsw" else None


def test_an_item_added_on_one_daemon_is_found_on_the_other(
        daemon_factory: Callable[..., DaemonHandle], pg_url: str) -> None:
    a = daemon_factory(journal=pg_url, config=A_CONFIG)
    b = daemon_factory(journal=pg_url, config=B_CONFIG)
    ca = a.client()
    assert _search(b, "anything")["results"] == []
    t0 = time.monotonic()
    r = ca.post(f"{MEM}/items", json={"text": "The payments gateway certificate expires in 3 days"})
    assert r.status_code == 201, r.text
    item = r.json()
    assert b.client().get(f"{MEM}/items").json()["items"][0]["id"] == item["id"]  # the journal's, at once
    res = b.wait_for(lambda: _found(b, "payments certificate expires", item["id"]), timeout=30, interval=0.1,
                     what="the item in a search on daemon B")
    took = time.monotonic() - t0
    assert res["pending"] == 0 and res["results"][0]["id"] == item["id"]
    assert took < 15, f"found on B after {took:.1f} s (A's backfill every 1 s, then B's follower)"
    print(f"added on A, found on B after {took * 1000:.0f} ms")
    follow = b.client().get("/console/v1/system/status").json()["tasks"]["memory.follow"]
    assert follow["outcome"] == "ok" and follow["enabled"] and follow["runs"] >= 1, follow
    assert follow["detail"]["index_count"] == 1 and follow["detail"]["applied"] >= 1, follow
    assert follow["detail"]["error"] is None and follow["detail"]["builds"] == 1, follow

    # a second item, and the first one deleted through A: B's search drops it, keeps the other
    other = ca.post(f"{MEM}/items", json={"text": "Disk usage on build runners is at 71 percent"}).json()
    b.wait_for(lambda: _found(b, "disk usage build runners", other["id"]), timeout=30, interval=0.1,
               what="the second item on daemon B")
    r = ca.delete(f"{MEM}/items/{item['id']}")
    assert (r.status_code, r.json()) == (200, {"id": item["id"], "deleted": True}), r.text
    assert b.client().delete(f"{MEM}/items/{item['id']}").status_code == 404  # the journal's: gone for B too
    for d in (a, b):
        d.wait_for(lambda d=d: item["id"] not in {h["id"] for h in _search(d, "payments certificate")["results"]},
                   timeout=20, what="the deleted item gone from the search")
        assert [h["id"] for h in _search(d, "payments certificate disk usage")["results"]] == [other["id"]]

    # B restarted without its index file: it builds its index from the journal, and answers from it
    b.stop()
    for f in Path(b.paths.state_root).glob("*.memory.hnsw*"):
        f.unlink()
    b.restart()
    t1 = time.monotonic()
    b.wait_for(lambda: _found(b, "disk usage build runners", other["id"]), timeout=30, interval=0.1,
               what="daemon B's rebuilt index answering")
    print(f"B restarted, answering from its rebuilt index after {(time.monotonic() - t1) * 1000:.0f} ms")
    assert time.monotonic() - t1 < 10
    assert "memory index rebuilt (missing) from the journal: 1 item(s)" in b.log()
    for d in (a, b):
        assert "Traceback" not in d.log(), d.log()[-3000:]


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")  # a zombie nobody reaped (PID 1 in a container) is gone too


def test_a_daemon_killed_mid_backfill_takes_its_child_along(
        daemon_factory: Callable[..., DaemonHandle], pg_url: str) -> None:
    """Its maintenance lock dies with it, so a peer may start the next backfill at once: the orphaned
    child must stop at its next batch instead of embedding beside the peer's."""
    import psycopg

    d = daemon_factory(journal=pg_url, config=A_CONFIG)
    text = " ".join(f"word{i}" for i in range(200))  # long texts: the backfill takes seconds
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO journal_memory_items (id, source, text, created_at_ms, bytes)"
                     " SELECT 'bulk' || i, 'api', i || ' ' || %s, 1700000000000 + i, length(%s)"
                     " FROM generate_series(1, 20000) AS i", (text, text))

    def child() -> int | None:
        for task in Path(f"/proc/{d.proc.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes():  # the spawned child
                    return int(pid)
        return None

    def embedding() -> int | None:
        pending = _search(d, "word7")["pending"]
        return child() if 0 < pending < 20_000 else None

    pid = d.wait_for(embedding, timeout=30, interval=0.2, what="the backfill child embedding")
    d.kill()
    t0 = time.monotonic()
    while not _gone(pid):  # (the daemon is dead: its wait_for would give up at once)
        assert time.monotonic() - t0 < 15, "the orphaned backfill child is still embedding"
        time.sleep(0.1)
    print(f"orphaned backfill child stopped {(time.monotonic() - t0) * 1000:.0f} ms after the kill -9")
