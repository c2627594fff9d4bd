"""The journal contract, continued (tests/journal_contract.py): runs handed between daemons (SPEC §11)
— the fencing token, peers' cancel requests, `queue_one`'s journal-wide mark and parked runs.

Collected by tests/test_journal_contract.py against every store, like the first part.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from palyra_ops.journal import JournalStore, Txn

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

Factory = Callable[..., JournalStore]


def _routine(j: JournalStore, c: Txn, name: str) -> None:
    j.put_resource(c, kind="Routine", name=name, body={"metadata": {"name": name}, "spec": {"prompt": "p"}},
                   hash=f"h-{name}", managed=True, applied_hash=f"h-{name}", source_file=f"{name}.yaml")
    j.put_job(c, name, trigger_kind="schedule")


def _run(routine: str, nominal: int | None = None, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"routine_id": routine, "trigger_kind": "schedule", "status": "accepted", "attempt": 1,
                           "created_at_ms": T0}
    if nominal is not None:
        row.update(occurrence_key=f"{routine}|{nominal}", scheduled_at_ms=nominal)
    row.update(extra)
    return row


def test_a_run_s_writes_need_its_fencing_token(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a")
    rid = j.insert_run(**_run("a", T0, daemon_id="d1"))
    assert rid is not None
    assert j.fence_holds(rid, None) is True  # no token yet: written without one
    # the holder starts it, writing its token (from no token to "tok-1")
    assert j.update_run_and_job(rid, {"status": "running", "fence": "tok-1"}, "a", {"last_status": "running"}) is True
    assert j.fence_holds(rid, "tok-1") is True and j.fence_holds(rid, None) is False
    assert j.fence_holds(rid, "tok-2") is False
    # a write without the token, or with another one, is refused and leaves run and job as they were
    assert j.update_run_and_job(rid, {"status": "succeeded"}, "a", {"last_status": "succeeded"}) is False
    assert j.update_run_and_job(rid, {"status": "succeeded"}, "a", {"last_status": "succeeded"},
                                fence="tok-2") is False
    r, job = j.get_run(rid), j.get_job("a")
    assert r is not None and (r["status"], r["fence"]) == ("running", "tok-1")
    assert job is not None and job["last_status"] == "running"
    assert j.update_run_and_job(rid, {"status": "succeeded", "finished_at_ms": T0 + 1}, "a",
                                {"last_status": "succeeded"}, fence="tok-1") is True
    r = j.get_run(rid)
    assert r is not None and r["status"] == "succeeded"
    assert j.fence_holds(rid, "tok-1") is False  # final: held by nobody
    # a peer reaping a held run (final status) refuses the holder's late finish, token or not
    other = j.insert_run(**_run("a", T0 + 1, daemon_id="d1", status="running", fence="tok-3"))
    assert other is not None
    j.update_run(other, status="failed", reason="daemon_lost: gone", finished_at_ms=T0 + 2)
    assert j.fence_holds(other, "tok-3") is False
    assert j.update_run_and_job(other, {"status": "succeeded"}, "a", {"last_status": "succeeded"},
                                fence="tok-3") is False
    r = j.get_run(other)
    assert r is not None and (r["status"], r["reason"]) == ("failed", "daemon_lost: gone")
    assert j.fence_holds("no-such-run", None) is False


def _register(j: JournalStore, daemon_id: str, lease_ms: int = 5000) -> None:
    j.register_daemon(daemon_id, lease_ms=lease_ms, host="h1", pid=42, address=None, version="1.0")


def test_a_peer_s_cancel_request_reaches_the_holder_of_the_routine_s_busy_runs(journal_factory: Factory) -> None:
    j, peer = journal_factory(), journal_factory()
    running = j.insert_run(**_run("a", T0, daemon_id="d1", status="running"))
    waiting = j.insert_run(**_run("a", attempt=2, not_before_ms=T0 + 9, daemon_id="d1"))  # between retries
    queued = j.insert_run(**_run("a", T0 + 1, daemon_id="d1"))  # accepted, not busy
    mine = j.insert_run(**_run("a", T0 + 2, daemon_id="d2", status="running"))
    other = j.insert_run(**_run("b", T0, daemon_id="d1", status="running"))
    assert running and waiting and queued and mine and other
    assert peer.request_cancel("a", "replaced: superseded by run X", daemon_id="d2") == sorted([running, waiting])
    assert peer.request_cancel("a", "again", daemon_id="d2") == []  # asked once
    assert j.cancel_requests("d1") == sorted([(running, "replaced: superseded by run X"),
                                              (waiting, "replaced: superseded by run X")])
    assert j.cancel_requests("d2") == []
    j.update_run(running, status="cancelled")
    assert j.cancel_requests("d1") == [(waiting, "replaced: superseded by run X")]  # final: no longer asked


def test_queue_exclusive_keeps_one_queued_run_across_daemons(journal_factory: Factory) -> None:
    j, peer = journal_factory(), journal_factory()
    first, second, third, fourth = (j.insert_run(**_run("a", T0 + i, daemon_id=f"d{i}")) for i in range(4))
    assert first and second and third and fourth
    assert j.queue_exclusive(first, "a", T0 + 5) == ("started", None)
    r = j.get_run(first)
    assert r is not None and (r["status"], r["started_at_ms"], r["queued_at_ms"]) == ("running", T0 + 5, None)
    assert peer.queue_exclusive(second, "a", T0 + 6) == ("queued", first)
    r = j.get_run(second)
    assert r is not None and (r["status"], r["queued_at_ms"]) == ("accepted", T0 + 6)
    assert j.queue_exclusive(third, "a", T0 + 7) == ("skipped", second)  # one queued, whichever daemon
    r = j.get_run(third)
    assert r is not None and (r["status"], r["queued_at_ms"]) == ("accepted", None)
    j.update_run(first, status="succeeded")
    assert j.queue_exclusive(fourth, "a", T0 + 8) == ("skipped", second)  # the queued one goes first
    j.update_run(second, status="running", queued_at_ms=None)
    other = j.insert_run(**_run("b", T0, daemon_id="d1"))
    assert other and j.queue_exclusive(other, "b", T0 + 9) == ("started", None)  # per routine
    again = j.insert_run(**_run("c", T0, daemon_id="d1"))
    assert again and j.queue_exclusive(again, "c", T0 + 9, busy=True) == ("queued", None)  # busy in process


def test_the_reaper_hands_parked_runs_to_any_daemon_that_takes_each_once(journal_factory: Factory) -> None:
    j, peer = journal_factory(), journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a")
    _register(j, "dead", lease_ms=100)
    _register(j, "live")
    retry = j.insert_run(**_run("a", T0, attempt=2, not_before_ms=T0 + 50, daemon_id="dead", fence="old-1"))
    deferred = j.insert_run(**_run("a", T0 + 1, not_before_ms=T0 + 20, daemon_id="dead", fence="old-2",
                                   received_at_ms=T0))
    running = j.insert_run(**_run("a", T0 + 2, daemon_id="dead", status="running", fence="old-3"))
    later = j.insert_run(**_run("a", T0 + 3, attempt=2, not_before_ms=T0 + 10_000, daemon_id="dead"))
    assert retry and deferred and running and later
    assert j.next_parked_ms() is None  # held by a daemon: not anyone's to take
    deadline = time.monotonic() + 20
    while "dead" in j.live_daemon_ids():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (lost,) = j.reap_lost_daemons(T0 + 99, spare="live")
    assert [r["run_id"] for r in lost.runs] == [running]
    assert sorted(r["run_id"] for r in lost.released) == sorted([retry, deferred, later])
    for rid in (retry, deferred, later):
        r = j.get_run(rid)
        assert r is not None and (r["status"], r["daemon_id"], r["fence"]) == ("accepted", None, None)
    assert j.fence_holds(retry, "old-1") is False  # the dead holder's token is broken
    assert j.next_parked_ms() == T0 + 20
    assert j.take_parked("live", T0 + 5) == []  # none due yet
    results: dict[str, list[Any]] = {}
    barrier = threading.Barrier(2)

    def take(h: JournalStore, who: str) -> None:
        barrier.wait()
        results[who] = h.take_parked(who, T0 + 100)

    threads = [threading.Thread(target=take, args=(h, w)) for h, w in ((j, "live"), (peer, "other"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    taken = [r for rs in results.values() for r in rs]
    assert sorted(r["run_id"] for r in taken) == sorted([retry, deferred])  # due ones, each once
    for who, rs in results.items():
        for r in rs:
            stored = j.get_run(r["run_id"])
            assert stored is not None and (stored["daemon_id"], stored["fence"]) == (who, r["fence"])
            assert r["fence"] and r["fence"] not in ("old-1", "old-2") and j.fence_holds(r["run_id"], r["fence"])
            assert j.update_run_and_job(r["run_id"], {"status": "running"}, None, None, fence="old-1") is False
    both = [r["run_id"] for rs in results.values() for r in rs if r["run_id"] in (retry, deferred)]
    assert len(both) == 2 and j.take_parked("live", T0 + 100) == []
    assert j.next_parked_ms() == T0 + 10_000


def test_start_up_recovery_can_hand_parked_runs_over_instead_of_failing_them(journal_factory: Factory) -> None:
    j = journal_factory()
    parked = j.insert_run(**_run("a", T0, attempt=2, not_before_ms=T0 + 5, daemon_id="gone", fence="f"))
    stuck = j.insert_run(**_run("a", T0 + 1, daemon_id="gone", status="running"))
    assert parked and stuck
    rows = j.finalize_orphans("daemon_restart", T0 + 9, daemon_id="me", release_parked=True)
    assert [r["run_id"] for r in rows] == [stuck]
    r = j.get_run(parked)
    assert r is not None and (r["status"], r["daemon_id"], r["fence"]) == ("accepted", None, None)
    (taken,) = j.take_parked("me", T0 + 9)
    assert taken["run_id"] == parked and taken["daemon_id"] == "me"
    # without release_parked (the default) a parked run fails like any other
    again = j.insert_run(**_run("a", T0 + 2, attempt=2, not_before_ms=T0 + 5, daemon_id="gone"))
    assert [r["run_id"] for r in j.finalize_orphans("daemon_restart", T0 + 9, daemon_id="x")] == sorted(
        [parked, again])


def test_defer_exclusive_parks_one_run_per_window_end_across_daemons(journal_factory: Factory) -> None:
    j, peer = journal_factory(), journal_factory()
    first, second, third = (j.insert_run(**_run("a", T0 + i, daemon_id=f"d{i}")) for i in range(3))
    other = j.insert_run(**_run("b", T0, daemon_id="d1"))
    assert first and second and third and other
    assert j.defer_exclusive(first, "a", T0 + 100, fence="f1", received_at_ms=T0 + 1) is None
    r = j.get_run(first)
    assert r is not None and (r["status"], r["not_before_ms"], r["fence"], r["received_at_ms"]) == (
        "accepted", T0 + 100, "f1", T0 + 1)
    assert peer.defer_exclusive(second, "a", T0 + 100, fence="f2") == first  # the same window: one run
    r = peer.get_run(second)
    assert r is not None and (r["not_before_ms"], r["fence"]) == (None, None)
    assert peer.defer_exclusive(other, "b", T0 + 100, fence="f3") is None  # per routine
    assert j.defer_exclusive(third, "a", T0 + 200, fence="f4") is None  # another window's end
    j.update_run(first, status="succeeded")
    assert peer.defer_exclusive(second, "a", T0 + 100, fence="f2") is None  # it ran: no longer deferred


def test_a_retry_waiting_on_another_daemon_forbids_a_start_as_a_running_run_does(journal_factory: Factory) -> None:
    j, peer = journal_factory(), journal_factory()
    waiting = j.insert_run(**_run("a", attempt=2, not_before_ms=T0 + 50, daemon_id="d1", status="accepted"))
    new = peer.insert_run(**_run("a", T0 + 1, daemon_id="d2"))
    assert waiting and new
    assert peer.start_exclusive(new, "a", T0 + 2) == waiting
    j.update_run(waiting, status="succeeded")
    assert peer.start_exclusive(new, "a", T0 + 3) is None
