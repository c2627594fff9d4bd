"""The journal contract, continued (tests/journal_contract.py): runs handed between daemons (SPEC §11)
— the fencing token, peers' cancel requests, `queue_one`'s journal-wide mark and parked runs.

Collected by tests/test_journal_contract.py against every store, like the first part.
"""

from __future__ import annotations

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
