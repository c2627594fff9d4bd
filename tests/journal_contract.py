"""The journal contract: what every `JournalStore` must do, written once, run against each store.

`tests/test_journal_contract.py` parametrizes the `journal_factory` fixture over the stores (SQLite
file, PostgreSQL database) and imports these tests; a new store passes when this whole module does.
Each test gets a fresh journal; `journal_factory(clock=...)` opens another handle on the *same*
journal (another process, in effect), which is how the cross-handle tests (claims racing, serial seen
by a second reader) are written.

Everything here is behaviour a caller relies on: exact return values, what a failed transaction
leaves behind, which of two claimers wins — never an engine detail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from palyra_ops.clock import FakeClock
from palyra_ops.errors import Conflict, NotFound
from palyra_ops.journal import JournalStore, ResourceWrite, Txn, new_id

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

Factory = Callable[..., JournalStore]


def _routine(j: JournalStore, c: Txn, name: str, **job: Any) -> None:
    j.put_resource(c, kind="Routine", name=name, body={"metadata": {"name": name}, "spec": {"prompt": "p"}},
                   hash=f"h-{name}", managed=True, applied_hash=f"h-{name}", source_file=f"{name}.yaml")
    j.put_job(c, name, **{"trigger_kind": "schedule", **job})


def _run(routine: str, nominal: int | None = None, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"routine_id": routine, "trigger_kind": "schedule", "status": "accepted", "attempt": 1,
                           "created_at_ms": T0}
    if nominal is not None:
        row.update(occurrence_key=f"{routine}|{nominal}", scheduled_at_ms=nominal)
    row.update(extra)
    return row


# -- identity and transactions --------------------------------------------------------------------


def test_new_journal_has_a_lineage_and_serial_zero(journal_factory: Factory) -> None:
    j = journal_factory()
    assert len(j.lineage()) == 36 and j.serial() == 0
    assert j.migrations_applied()[:2] == ["0001_core", "0002_daemon_runtime"]
    lineage = j.lineage()
    j.close()
    with journal_factory() as again:  # reopening migrates nothing and keeps the identity
        assert again.lineage() == lineage and again.serial() == 0


def test_bump_serial_in_a_transaction_is_seen_by_another_handle(journal_factory: Factory) -> None:
    j, other = journal_factory(), journal_factory()
    with j.transaction() as c:
        assert j.bump_serial(c) == 1
        assert j.identity(c) == (j.lineage(), 1)
    assert other.serial() == 1 and other.lineage() == j.lineage()


def test_a_failed_transaction_leaves_nothing(journal_factory: Factory) -> None:
    j = journal_factory()
    with pytest.raises(RuntimeError, match="boom"), j.transaction() as c:
        _routine(j, c, "a", next_run_at_unix_ms=T0)
        j.bump_serial(c)
        raise RuntimeError("boom")
    assert j.get_resource("Routine", "a") is None and j.get_job("a") is None and j.serial() == 0
    # and the store is usable afterwards (no transaction left open)
    with j.transaction() as c:
        _routine(j, c, "a")
    assert j.get_job("a") is not None


def test_nested_transactions_join_the_outer_one(journal_factory: Factory) -> None:
    j = journal_factory()
    with pytest.raises(RuntimeError), j.transaction():
        with j.transaction() as inner:
            _routine(j, inner, "a")
        assert j.get_job("a") is not None  # visible inside the outer transaction
        raise RuntimeError("outer fails")
    assert j.get_job("a") is None


def test_a_transaction_of_another_store_is_refused(journal_factory: Factory) -> None:
    j = journal_factory()

    class Foreign(Txn):
        pass

    with pytest.raises(TypeError, match="Foreign"):
        j.bump_serial(Foreign())
    assert j.serial() == 0


# -- desired state --------------------------------------------------------------------------------


def test_resources_round_trip_and_snapshot(journal_factory: Factory) -> None:
    j = journal_factory(clock=FakeClock(T0))
    with j.transaction() as c:
        _routine(j, c, "b", next_run_at_unix_ms=T0 + 5)
        _routine(j, c, "a")
        j.put_resource(c, kind="Channel", name="ops", body='{"spec":{"type":"file"}}', hash="hc", managed=False,
                       applied_hash=None, source_file=None)
    a = j.get_resource("Routine", "a")
    assert a is not None and a.body == {"metadata": {"name": "a"}, "spec": {"prompt": "p"}}
    assert (a.hash, a.applied_hash, a.managed, a.source_file, a.created_at_ms) == ("h-a", "h-a", True, "a.yaml", T0)
    assert not a.drifted
    assert [r.name for r in j.list_resources("Routine")] == ["a", "b"]
    assert j.resource_hash("Channel", "ops") == "hc" and j.resource_hash("Channel", "nope") is None
    snap = j.snapshot()
    assert set(snap.resources) == {("Routine", "a"), ("Routine", "b"), ("Channel", "ops")}
    assert snap.jobs["b"]["next_run_at_unix_ms"] == T0 + 5 and snap.lineage == j.lineage()
    # an update keeps created_at and changes the hash: drift when applied_hash differs
    with j.transaction() as c:
        j.put_resource(c, kind="Routine", name="a", body={"spec": {}}, hash="h2", managed=True, applied_hash="h-a",
                       source_file="a.yaml")
    a2 = j.get_resource("Routine", "a")
    assert a2 is not None and a2.drifted and a2.created_at_ms == T0 and a2.body == {"spec": {}}


def test_deleting_a_routine_drops_its_job_and_cancels_its_pending_approvals(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a")
        aid = j.add_approval(c, routine_id="a", kind="before_enable")
    with j.transaction() as c:
        j.delete_resource(c, "Routine", "a")
    assert j.get_resource("Routine", "a") is None and j.get_job("a") is None
    appr = j.get_approval(aid)
    assert appr is not None and appr["state"] == "cancelled" and j.list_approvals() == []


def test_renaming_a_routine_takes_its_job_runs_and_approvals_along(journal_factory: Factory) -> None:
    j = journal_factory(clock=FakeClock(T0))
    with j.transaction() as c:
        _routine(j, c, "old.name", next_run_at_unix_ms=T0 + 60_000, anchor_ms=T0, next_nominal_ms=T0 + 60_000,
                 schedule_fingerprint="fp")
        _routine(j, c, "other")
        aid = j.add_approval(c, routine_id="old.name", kind="before_enable")
    runs = [j.insert_run(**_run("old.name", T0 + i, run_id=new_id(), dedupe_key=f"k{i}")) for i in range(3)]
    manual = j.insert_run(**_run("old.name"))
    mine = j.insert_run(**_run("other", T0))
    with j.transaction() as c:
        j.rename_routine(c, "old.name", "new-name")
    assert j.get_resource("Routine", "old.name") is None and j.get_job("old.name") is None
    moved = j.get_resource("Routine", "new-name")
    assert moved is not None and (moved.hash, moved.source_file, moved.created_at_ms) == ("h-old.name", "old.name.yaml", T0)
    job = j.get_job("new-name")
    assert job is not None and (job["next_run_at_unix_ms"], job["anchor_ms"], job["next_nominal_ms"],
                                job["schedule_fingerprint"]) == (T0 + 60_000, T0, T0 + 60_000, "fp")
    got = j.runs_with_occurrences("new-name")
    assert [r["run_id"] for r in got] == runs
    assert [r["occurrence_key"] for r in got] == [f"new-name|{T0 + i}" for i in range(3)]
    assert [r["run_id"] for r in j.runs_in_order("new-name")] == [*runs, manual]
    assert j.runs_in_order("old.name") == [] and [r["run_id"] for r in j.runs_in_order("other")] == [mine]
    appr = j.get_approval(aid)
    assert appr is not None and appr["routine_id"] == "new-name"
    # the occurrence stays claimed under its new name
    assert j.insert_run(**_run("new-name", T0 + 1)) is None
    assert j.insert_run(**_run("old.name", T0 + 1)) is not None  # the old name is free


def test_a_rename_onto_a_taken_name_or_repeated_occurrences_is_refused(journal_factory: Factory) -> None:
    j = journal_factory(clock=FakeClock(T0))
    with j.transaction() as c:
        _routine(j, c, "a")
        _routine(j, c, "b")
    j.insert_run(**_run("a", T0))
    j.insert_run(**_run("c", T0))  # a run of an earlier routine "c", since deleted
    with pytest.raises(Conflict, match="cannot rename routine 'a' to 'b': a routine 'b' exists"), j.transaction() as c:
        j.rename_routine(c, "a", "b")
    with pytest.raises(NotFound, match="routine 'zz' does not exist"), j.transaction() as c:
        j.rename_routine(c, "zz", "y")
    with pytest.raises(Conflict, match="runs of an earlier routine named 'c'"), j.transaction() as c:
        j.rename_routine(c, "a", "c")
    # nothing moved
    assert j.get_resource("Routine", "a") is not None and j.get_job("a") is not None
    assert [r["occurrence_key"] for r in j.runs_with_occurrences("a")] == [f"a|{T0}"]


def test_apply_log(journal_factory: Factory) -> None:
    j = journal_factory()
    assert j.last_apply() is None
    with j.transaction() as c:
        for serial in (1, 2):
            j.add_apply_log(c, applied_at_ms=T0 + serial, serial=serial, source_dir="d", added=serial, changed=0,
                            deleted=0, git_commit=None, git_dirty=None, origin="test")
    last = j.last_apply()
    assert last is not None and (last["serial"], last["added"], last["origin"]) == (2, 2, "test")
    assert [r["serial"] for r in j.apply_log()] == [2, 1]


# -- jobs -------------------------------------------------------------------------------------------


def test_due_jobs_oldest_first_enabled_only_in_batches(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "late", next_run_at_unix_ms=T0 + 30)
        _routine(j, c, "early", next_run_at_unix_ms=T0 + 10)
        _routine(j, c, "mid", next_run_at_unix_ms=T0 + 20)
        _routine(j, c, "off", next_run_at_unix_ms=T0, enabled=0)
        _routine(j, c, "future", next_run_at_unix_ms=T0 + 1000)
        _routine(j, c, "manual", trigger_kind="manual")
    assert [r["routine_id"] for r in j.due_jobs(T0 + 30)] == ["early", "mid", "late"]
    assert [r["routine_id"] for r in j.due_jobs(T0 + 30, limit=2)] == ["early", "mid"]
    assert j.count_due(T0 + 30) == 3 and j.count_due(T0) == 0
    assert j.next_due_ms() == T0 + 10
    assert [r["routine_id"] for r in j.upcoming_jobs(limit=2)] == ["early", "mid"]
    assert [r["routine_id"] for r in j.jobs_by_trigger(("manual",))] == ["manual"]
    assert [r["routine_id"] for r in j.list_jobs()] == ["early", "future", "late", "manual", "mid", "off"]
    job = j.get_job("early")
    assert job is not None and (job["enabled"], job["approval_state"], job["last_run_id"]) == (1, "none", None)


def test_put_job_updates_only_the_given_fields(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a", next_run_at_unix_ms=T0, anchor_ms=T0 - 1)
    j.update_job("a", last_status="succeeded")
    job = j.get_job("a")
    assert job is not None
    assert (job["next_run_at_unix_ms"], job["anchor_ms"], job["last_status"]) == (T0, T0 - 1, "succeeded")


def test_batched_writes_do_what_the_single_ones_do(journal_factory: Factory) -> None:
    """apply's batches (issue 14): many objects and jobs per call, inside the caller's transaction."""
    j = journal_factory(clock=FakeClock(T0))
    with j.transaction() as c:
        _routine(j, c, "kept", next_run_at_unix_ms=T0, anchor_ms=T0 - 1, last_status="succeeded")
        _routine(j, c, "gone")
        aid = j.add_approval(c, routine_id="gone", kind="before_enable")
    with j.transaction() as c:
        assert sorted(j.jobs_for(c, ["kept", "gone", "new"])) == ["gone", "kept"]
        j.put_resources(c, [ResourceWrite("Routine", n, f'{{"spec":{{"n":"{n}"}}}}', f"h2-{n}", True, f"h2-{n}", "b.yaml")
                            for n in ("kept", "new")])
        j.put_jobs(c, [("kept", {"enabled": 0}), ("new", {"trigger_kind": "schedule", "next_run_at_unix_ms": T0 + 5})],
                   existing={"kept"})
        j.delete_resources(c, [("Routine", "gone")])
    kept, new = j.get_resource("Routine", "kept"), j.get_resource("Routine", "new")
    assert kept is not None and (kept.hash, kept.body, kept.created_at_ms) == ("h2-kept", {"spec": {"n": "kept"}}, T0)
    assert new is not None and (new.managed, new.applied_hash, new.source_file) == (True, "h2-new", "b.yaml")
    kept_job, new_job = j.get_job("kept"), j.get_job("new")
    assert kept_job is not None and (kept_job["enabled"], kept_job["next_run_at_unix_ms"], kept_job["last_status"]) == (
        0, T0, "succeeded")  # only the given field changed
    assert new_job is not None and (new_job["trigger_kind"], new_job["next_run_at_unix_ms"]) == ("schedule", T0 + 5)
    assert j.get_resource("Routine", "gone") is None and j.get_job("gone") is None
    appr = j.get_approval(aid)
    assert appr is not None and appr["state"] == "cancelled"


# -- claims -----------------------------------------------------------------------------------------


def test_claim_inserts_runs_and_advances_the_job(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a", next_run_at_unix_ms=T0)
    [ids] = j.claim_occurrences([("a", T0, [_run("a", T0), _run("a", T0 + 1)],
                                  {"next_run_at_unix_ms": T0 + 2, "next_nominal_ms": T0 + 2, "last_nominal_ms": T0 + 1})])
    assert ids is not None and len(ids) == 2 and all(ids)
    job = j.get_job("a")
    assert job is not None and (job["next_run_at_unix_ms"], job["last_nominal_ms"]) == (T0 + 2, T0 + 1)
    assert [r["occurrence_key"] for r in j.runs_with_occurrences("a")] == [f"a|{T0}", f"a|{T0 + 1}"]


def test_a_stale_or_disabled_claim_gets_nothing(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a", next_run_at_unix_ms=T0)
        _routine(j, c, "off", next_run_at_unix_ms=T0, enabled=0)
    out = j.claim_occurrences([
        ("a", T0 - 1, [_run("a", T0 - 1)], {"next_run_at_unix_ms": T0 + 1}),  # expected a stale instant
        ("off", T0, [_run("off", T0)], {"next_run_at_unix_ms": T0 + 1}),
        ("gone", T0, [_run("gone", T0)], {}),
    ])
    assert out == [None, None, None]
    assert j.runs_in_order() == []
    job = j.get_job("a")
    assert job is not None and job["next_run_at_unix_ms"] == T0


def test_an_occurrence_is_claimed_once(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a", next_run_at_unix_ms=T0)
    assert j.insert_run(**_run("a", T0)) is not None
    [ids] = j.claim_occurrences([("a", T0, [_run("a", T0), _run("a", T0 + 1)], {"next_run_at_unix_ms": T0 + 2})])
    assert ids is not None and ids[0] is None and ids[1] is not None  # the first was claimed before
    assert len(j.runs_with_occurrences("a")) == 2


def test_claimed_instants_are_the_occurrences_in_a_range(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a")
        _routine(j, c, "b")
    for n in (T0, T0 + 60_000, T0 + 120_000):
        j.insert_run(**_run("a", n))
    j.insert_run(**_run("b", T0 + 60_000))
    j.insert_run(**_run("a"))  # a manual run: no occurrence, never counts
    assert j.claimed_instants("a", T0, T0 + 60_000) == {T0, T0 + 60_000}
    assert j.claimed_instants("a", T0 + 1, T0 + 200_000) == {T0 + 60_000, T0 + 120_000}
    assert j.claimed_instants("b", T0, T0 + 200_000) == {T0 + 60_000}
    assert j.claimed_instants("zz", T0, T0 + 200_000) == set()


def test_pause_state_is_job_state_that_put_job_leaves_alone(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a", next_run_at_unix_ms=T0)
    job = j.get_job("a")
    assert job is not None and (job["paused"], job["pause_note"], job["consecutive_failures"]) == (0, None, 0)
    j.update_job("a", paused=1, pause_note="db migration", paused_by="user:ops", paused_at_ms=T0, consecutive_failures=2)
    with j.transaction() as c:  # what apply writes for an edited routine
        j.put_job(c, "a", next_run_at_unix_ms=T0 + 60_000, anchor_ms=T0)
    job = j.get_job("a")
    assert job is not None
    assert (job["paused"], job["pause_note"], job["paused_by"], job["paused_at_ms"], job["consecutive_failures"]) == (
        1, "db migration", "user:ops", T0, 2)


def test_one_occurrence_twice_in_one_claim_is_claimed_once(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a", next_run_at_unix_ms=T0)
    [ids] = j.claim_occurrences([("a", T0, [_run("a", T0), _run("a", T0)], {"next_run_at_unix_ms": T0 + 1})])
    assert ids is not None and ids[0] is not None and ids[1] is None
    assert len(j.runs_with_occurrences("a")) == 1


def test_a_claim_that_only_advances_the_job_inserts_nothing(journal_factory: Factory) -> None:
    """What a misfire `skip` without a record, or jitter moving the due time, claims."""
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a", next_run_at_unix_ms=T0, next_nominal_ms=T0)
    assert j.claim_occurrences([("a", T0, [], {"next_run_at_unix_ms": T0 + 7, "next_nominal_ms": T0})]) == [[]]
    job = j.get_job("a")
    assert job is not None and job["next_run_at_unix_ms"] == T0 + 7 and j.runs_in_order() == []
    assert j.claim_occurrences([]) == []


def test_the_journal_never_judges_now_later_than_the_caller(journal_factory: Factory) -> None:
    """`judged_now_ms` may hold a caller back (a database clock behind it), never push it ahead."""
    j = journal_factory(clock=FakeClock(T0))
    assert j.judged_now_ms(T0) == T0  # a clock in the past (the tests'): its own reading stands
    assert j.judged_now_ms(T0 + 5) == T0 + 5


def test_two_handles_racing_for_the_same_batch_claim_each_occurrence_once(journal_factory: Factory) -> None:
    """Two schedulers on one journal (two processes in production): each reads the due jobs, then
    both claim. The compare-and-set and the occurrence key leave every occurrence with one owner."""
    setup = journal_factory()
    with setup.transaction() as c:
        for i in range(40):
            _routine(setup, c, f"r{i:02}", next_run_at_unix_ms=T0 + i)
    handles = [journal_factory(), journal_factory()]
    plans = [h.due_jobs(T0 + 100, limit=64) for h in handles]
    assert all(len(p) == 40 for p in plans)
    won: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def claim(k: int) -> None:
        barrier.wait()
        claims = [(job["routine_id"], job["next_run_at_unix_ms"], [_run(job["routine_id"], job["next_run_at_unix_ms"])],
                   {"next_run_at_unix_ms": T0 + 10_000}) for job in plans[k]]
        for job, ids in zip(plans[k], handles[k].claim_occurrences(claims), strict=True):
            if ids and ids[0] is not None:
                won[k].append(job["routine_id"])

    threads = [threading.Thread(target=claim, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(won[0] + won[1]) == [f"r{i:02}" for i in range(40)]
    assert not set(won[0]) & set(won[1])
    assert len(setup.runs_in_order()) == 40


# -- runs -------------------------------------------------------------------------------------------


def test_runs_update_page_and_count(journal_factory: Factory) -> None:
    j = journal_factory(clock=FakeClock(T0))
    with j.transaction() as c:
        _routine(j, c, "a")
    ids = [j.insert_run(**_run("a", T0 + i, run_id=new_id())) for i in range(5)]
    assert all(ids)
    assert j.insert_run(**_run("a", T0 + 1)) is None  # same occurrence key
    j.update_run(ids[0], status="running", started_at_ms=T0 + 1)
    j.update_run_and_job(ids[1], {"status": "succeeded", "finished_at_ms": T0 + 2}, "a",
                         {"last_run_id": ids[1], "last_status": "succeeded"})
    r1 = j.get_run(ids[1])
    assert r1 is not None and (r1["status"], r1["finished_at_ms"], r1["attempt"]) == ("succeeded", T0 + 2, 1)
    job = j.get_job("a")
    assert job is not None and (job["last_run_id"], job["last_status"]) == (ids[1], "succeeded")
    assert j.get_run("nope") is None
    newest = j.list_runs("a", limit=2)
    assert [r["run_id"] for r in newest] == [ids[4], ids[3]]
    assert [r["run_id"] for r in j.list_runs("a", limit=10, before_run_id=ids[3])] == [ids[2], ids[1], ids[0]]
    assert [r["run_id"] for r in j.list_runs(status="succeeded")] == [ids[1]]
    assert [r["run_id"] for r in j.active_runs("a")] == [ids[0], ids[2], ids[3], ids[4]]
    assert j.count_runs_by_status() == {"accepted": 3, "running": 1, "succeeded": 1}
    assert [r["run_id"] for r in j.runs_in_order("a")] == ids


def test_a_non_text_payload_is_stored_as_json_text(journal_factory: Factory) -> None:
    j = journal_factory()
    rid = j.insert_run(**_run("a", trigger_payload=12345678901234567890123))
    assert rid is not None
    row = j.get_run(rid)
    assert row is not None and row["trigger_payload"] == "12345678901234567890123"
    j.update_run(rid, trigger_payload={"k": [1, 2]})
    row = j.get_run(rid)
    assert row is not None and row["trigger_payload"] == '{"k": [1, 2]}'


def test_dedupe_key_is_held_by_one_first_attempt(journal_factory: Factory) -> None:
    j = journal_factory()
    first, second = j.insert_run(**_run("a")), j.insert_run(**_run("a"))
    assert first and second
    assert j.set_dedupe_key(first, "k1") is None
    assert j.set_dedupe_key(second, "k1") == first
    other = j.insert_run(**_run("b"))
    assert other and j.set_dedupe_key(other, "k1") is None  # per routine


def test_finalize_orphans_spares_the_given_daemon(journal_factory: Factory) -> None:
    j = journal_factory()
    mine = j.insert_run(**_run("a", daemon_id="me"))
    old = j.insert_run(**_run("a", daemon_id="old", status="running"))
    anon = j.insert_run(**_run("a"))
    done = j.insert_run(**_run("a", daemon_id="old", status="succeeded"))
    rows = j.finalize_orphans("daemon_restart", T0 + 9, daemon_id="me")
    assert sorted(r["run_id"] for r in rows) == sorted([old, anon])
    for rid in (old, anon):
        r = j.get_run(rid)
        assert r is not None and (r["status"], r["reason"], r["finished_at_ms"]) == ("failed", "daemon_restart", T0 + 9)
    for rid, status in ((mine, "accepted"), (done, "succeeded")):
        r = j.get_run(rid)
        assert r is not None and r["status"] == status


# -- approvals and events -----------------------------------------------------------------------------


def test_approvals_lifecycle(journal_factory: Factory) -> None:
    j = journal_factory(clock=FakeClock(T0))
    with j.transaction() as c:
        a1 = j.add_approval(c, routine_id="a", kind="before_enable")
        a2 = j.add_approval(c, routine_id="a", kind="before_first_run", run_id="01RUN")
    pending = j.pending_approval("a", "before_first_run")
    assert pending is not None and (pending["approval_id"], pending["run_id"]) == (a2, "01RUN")
    assert [a["approval_id"] for a in j.list_approvals()] == [a1, a2]
    with j.transaction() as c:
        j.decide_approval(c, a1, "approved", "alice")
        j.cancel_pending_approvals(c, "a", "before_first_run")
    got = j.get_approval(a1)
    assert got is not None and (got["state"], got["decided_by"], got["decided_at_ms"]) == ("approved", "alice", T0)
    assert j.list_approvals() == [] and j.pending_approval("a", "before_first_run") is None
    assert {a["state"] for a in j.list_approvals(None)} == {"approved", "cancelled"}


def test_events(journal_factory: Factory) -> None:
    j = journal_factory(clock=FakeClock(T0))
    j.add_event("daemon.started", {"pid": 1})
    j.add_event("routine.failed")
    events = j.list_events()
    assert [(e["name"], e["payload"], e["created_at_ms"]) for e in events] == [
        ("routine.failed", "{}", T0), ("daemon.started", '{"pid": 1}', T0)]
    assert [e["name"] for e in j.list_events(limit=1)] == ["routine.failed"]


def test_health_is_clear_after_a_successful_probe(journal_factory: Factory) -> None:
    j = journal_factory()
    j.probe_write()
    assert j.fault is None and j.write_fault is None and j.fault_since_ms() is None


def test_data_version_moves_when_another_handle_commits(journal_factory: Factory) -> None:
    j, other = journal_factory(), journal_factory()
    before = j.data_version()
    with other.transaction() as c:
        other.bump_serial(c)
    assert j.data_version() != before


# -- the daemon registry (SPEC §11) ---------------------------------------------------------------


def _register(j: JournalStore, daemon_id: str, lease_ms: int = 5000) -> None:
    j.register_daemon(daemon_id, lease_ms=lease_ms, host="h1", pid=42, address=None, version="1.0")


def test_a_daemon_registers_heartbeats_and_deregisters(journal_factory: Factory) -> None:
    j, other = journal_factory(), journal_factory()
    assert j.list_daemons() == []
    _register(j, "d1")
    _register(other, "d2", lease_ms=7000)
    assert j.heartbeat("d1", address="127.0.0.1:7142") is True
    got = {d["daemon_id"]: d for d in other.list_daemons()}
    assert set(got) == {"d1", "d2"} and j.live_daemon_ids() == {"d1", "d2"}
    d1 = got["d1"]
    assert (d1["host"], d1["pid"], d1["address"], d1["version"], d1["lease_ms"], d1["alive"]) == (
        "h1", 42, "127.0.0.1:7142", "1.0", 5000, True)
    assert 0 <= d1["heartbeat_age_ms"] < 5000 and d1["started_at_ms"] <= d1["heartbeat_at_ms"]
    assert got["d2"]["lease_ms"] == 7000
    j.deregister_daemon("d1")
    assert [d["daemon_id"] for d in other.list_daemons()] == ["d2"]
    assert j.heartbeat("d1") is False  # gone: the caller registers again
    _register(j, "d1")
    assert j.live_daemon_ids() == {"d1", "d2"}


def test_a_daemon_is_gone_once_its_heartbeat_is_older_than_its_lease(journal_factory: Factory) -> None:
    j = journal_factory()
    _register(j, "short", lease_ms=200)
    _register(j, "long", lease_ms=60_000)
    deadline = time.monotonic() + 20
    while j.live_daemon_ids() != {"long"}:
        assert time.monotonic() < deadline, j.list_daemons()
        time.sleep(0.05)
    short = next(d for d in j.list_daemons() if d["daemon_id"] == "short")
    assert short["alive"] is False and short["heartbeat_age_ms"] > 200
    assert j.heartbeat("short") is True  # a heartbeat brings it back
    assert j.live_daemon_ids() == {"short", "long"}


def test_the_reaper_fails_the_runs_of_gone_daemons_once_and_drops_them(journal_factory: Factory) -> None:
    j, peer = journal_factory(), journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a")
    _register(j, "dead", lease_ms=100)
    _register(j, "live")
    dead_runs = [j.insert_run(**_run("a", T0 + i, daemon_id="dead", status=s)) for i, s in
                 enumerate(("accepted", "running"))]
    done = j.insert_run(**_run("a", T0 + 5, daemon_id="dead", status="succeeded"))
    live = j.insert_run(**_run("a", T0 + 6, daemon_id="live", status="running"))
    j.update_run_and_job(dead_runs[1] or "", {}, "a", {"last_run_id": dead_runs[1], "last_status": "running"})
    deadline = time.monotonic() + 20
    while "dead" in j.live_daemon_ids():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def reap(h: JournalStore) -> None:
        barrier.wait()
        results.append(h.reap_lost_daemons(T0 + 99, spare="live"))

    threads = [threading.Thread(target=reap, args=(h,)) for h in (j, peer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    lost = [x for r in results for x in r]
    assert len(lost) == 1, lost  # one reaper won; the other found nothing left
    daemon, runs, released = lost[0]
    assert list(released) == []  # no parked runs among them
    assert daemon["daemon_id"] == "dead" and daemon["alive"] is False
    assert sorted(r["run_id"] for r in runs) == sorted(dead_runs)
    for rid in dead_runs:
        r = j.get_run(rid or "")
        assert r is not None and (r["status"], r["finished_at_ms"]) == ("failed", T0 + 99)
        assert (r["reason"] or "").startswith("daemon_lost: daemon dead (h1 pid 42) stopped heartbeating")
    for rid, status in ((done, "succeeded"), (live, "running")):
        r = j.get_run(rid or "")
        assert r is not None and r["status"] == status
    job = j.get_job("a")
    assert job is not None and (job["last_status"], job["last_finished_at_ms"]) == ("failed", T0 + 99)
    assert [d["daemon_id"] for d in j.list_daemons()] == ["live"]
    assert j.reap_lost_daemons(T0 + 100) == []


def test_the_reaper_spares_its_caller_and_live_daemons(journal_factory: Factory) -> None:
    j = journal_factory()
    _register(j, "me", lease_ms=100)
    _register(j, "peer")
    mine = j.insert_run(**_run("a", daemon_id="me"))
    deadline = time.monotonic() + 20
    while "me" in j.live_daemon_ids():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert j.reap_lost_daemons(T0, spare="me") == []
    r = j.get_run(mine or "")
    assert r is not None and r["status"] == "accepted"


def test_a_run_reaped_meanwhile_is_not_overwritten_by_its_owner(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a")
    rid = j.insert_run(**_run("a", T0, daemon_id="d1", status="running"))
    assert rid is not None
    j.update_run(rid, status="failed", reason="daemon_lost: gone", finished_at_ms=T0 + 1)
    assert j.update_run_and_job(rid, {"status": "succeeded", "finished_at_ms": T0 + 2}, "a",
                                {"last_run_id": rid, "last_status": "succeeded"}) is False
    r = j.get_run(rid)
    assert r is not None and (r["status"], r["reason"], r["finished_at_ms"]) == ("failed", "daemon_lost: gone", T0 + 1)
    job = j.get_job("a")
    assert job is not None and job["last_status"] is None  # the job summary is the reaper's, not the owner's
    other = j.insert_run(**_run("a", T0 + 1, daemon_id="d1"))
    assert other is not None
    assert j.update_run_and_job(other, {"status": "running"}, "a", {"last_status": "running"}) is True
    assert j.update_run_and_job(other, {"status": "succeeded"}, "a", {"last_status": "succeeded"}) is True
    r = j.get_run(other)
    assert r is not None and r["status"] == "succeeded"


def test_start_up_recovery_can_spare_the_runs_of_live_daemons(journal_factory: Factory) -> None:
    j = journal_factory()
    _register(j, "live")
    live = j.insert_run(**_run("a", daemon_id="live", status="running"))
    gone = j.insert_run(**_run("a", daemon_id="never-registered", status="running"))
    anon = j.insert_run(**_run("a"))
    rows = j.finalize_orphans("daemon_restart", T0 + 9, daemon_id="me", spare_live=True)
    assert sorted(r["run_id"] for r in rows) == sorted([gone, anon])
    r = j.get_run(live or "")
    assert r is not None and r["status"] == "running"
    rows = j.finalize_orphans("daemon_restart", T0 + 9, daemon_id="me")  # one daemon per journal: all others
    assert [r["run_id"] for r in rows] == [live]


def test_start_exclusive_starts_one_run_of_a_routine_at_a_time(journal_factory: Factory) -> None:
    j = journal_factory()
    first, second = (j.insert_run(**_run("a", T0 + i, daemon_id=f"d{i}")) for i in range(2))
    other = j.insert_run(**_run("b", T0, daemon_id="d1"))
    assert first and second and other
    assert j.start_exclusive(first, "a", T0 + 5) is None
    r = j.get_run(first)
    assert r is not None and (r["status"], r["started_at_ms"]) == ("running", T0 + 5)
    assert j.start_exclusive(second, "a", T0 + 6) == first  # forbidden, left as it was
    r = j.get_run(second)
    assert r is not None and (r["status"], r["started_at_ms"]) == ("accepted", None)
    assert j.start_exclusive(other, "b", T0 + 6) is None  # per routine
    assert j.start_exclusive(first, "a", T0 + 7) is None  # its own run does not forbid it
    j.update_run_and_job(first, {"status": "succeeded", "finished_at_ms": T0 + 8}, None, None)
    assert j.start_exclusive(second, "a", T0 + 9) is None


def test_start_exclusive_racing_handles_start_one(journal_factory: Factory) -> None:
    handles = [journal_factory() for _ in range(4)]
    ids = [handles[0].insert_run(**_run("a", T0 + i, daemon_id=f"d{i}")) for i in range(4)]
    barrier = threading.Barrier(4)
    won: list[str] = []

    def start(h: JournalStore, rid: str) -> None:
        barrier.wait()
        if h.start_exclusive(rid, "a", T0 + 1) is None:
            won.append(rid)

    threads = [threading.Thread(target=start, args=(h, rid)) for h, rid in zip(handles, ids, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1, won
    assert [r["run_id"] for r in handles[0].active_runs("a") if r["status"] == "running"] == won
