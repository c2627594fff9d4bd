"""The journal contract, continued (tests/journal_contract.py): the run path's combined reads and
writes — what the daemon asks per claimed run and per claimed batch, in one look each (one round trip
on PostgreSQL) — must answer exactly what the single reads and writes they replace answer.

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
    j.put_job(c, name, trigger_kind="schedule", next_run_at_unix_ms=T0)


def _run(routine: str, nominal: int, **extra: Any) -> dict[str, Any]:
    return {"routine_id": routine, "trigger_kind": "schedule", "status": "accepted", "attempt": 1,
            "created_at_ms": T0, "occurrence_key": f"{routine}|{nominal}", "scheduled_at_ms": nominal, **extra}


def test_run_context_is_the_four_reads_it_replaces(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a")
        j.bump_serial(c)
        j.bump_serial(c)
    rid = j.insert_run(**_run("a", T0, daemon_id="d1", trigger_payload={"x": 1}))
    assert rid is not None
    ctx = j.run_context(rid, "a")
    assert ctx.run == j.get_run(rid) and ctx.job == j.get_job("a")
    assert ctx.run is not None and list(ctx.run) == list(j.get_run(rid) or {})  # same columns, same order
    assert (ctx.routine_hash, ctx.serial) == ("h-a", 2) == (j.resource_hash("Routine", "a"), j.serial())
    gone = j.run_context("no-such-run", "b")
    assert (gone.run, gone.job, gone.routine_hash, gone.serial) == (None, None, None, 2)


def test_run_contexts_are_a_batch_of_run_context(journal_factory: Factory) -> None:
    """A claimed batch's arrivals read at once: each entry is what `run_context` answers for its
    pair, including a run, a job or a routine that does not exist."""
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a")
        _routine(j, c, "b")
        j.bump_serial(c)
    ra = j.insert_run(**_run("a", T0, daemon_id="d1", trigger_payload={"x": 1}))
    rb = j.insert_run(**_run("b", T0 + 1, daemon_id="d1"))
    assert ra is not None and rb is not None
    pairs = [(ra, "a"), (rb, "b"), ("no-such-run", "a")]
    got = j.run_contexts(pairs)
    assert set(got) == {ra, rb, "no-such-run"}
    for rid, routine in pairs:
        assert got[rid] == j.run_context(rid, routine)
        assert got[rid].serial == 1
    assert got[ra].run is not None and list(got[ra].run) == list(j.get_run(ra) or {})  # the columns in order
    assert (got["no-such-run"].run, got["no-such-run"].routine_hash) == (None, "h-a")
    assert j.run_contexts([]) == {}
    missing = j.run_contexts([(rb, "zz")])[rb]
    assert (missing.job, missing.routine_hash) == (None, None) and missing.run == j.get_run(rb)


def test_resource_hashes_and_resources_named_answer_for_those_that_exist(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        for name in ("a", "b", "c"):
            _routine(j, c, name)
    assert j.resource_hashes("Routine", ["c", "a", "zz"]) == {"a": "h-a", "c": "h-c"}
    assert j.resource_hashes("Routine", []) == {} and j.resource_hashes("Policy", ["a"]) == {}
    got = j.resources_named("Routine", ["c", "zz", "a"])
    assert [r.name for r in got] == ["a", "c"]
    single = j.get_resource("Routine", "a")
    assert single is not None and (got[0].hash, got[0].body, got[0].source_file) == (single.hash, single.body,
                                                                                     single.source_file)
    assert j.resources_named("Routine", []) == []


def test_update_run_and_job_in_every_shape(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        _routine(j, c, "a")
    rid = j.insert_run(**_run("a", T0, daemon_id="d1"))
    assert rid is not None
    # run and job together; the fence written with the start is required from then on
    assert j.update_run_and_job(rid, {"status": "running", "fence": "f1", "started_at_ms": T0 + 1}, "a",
                                {"last_run_id": rid, "last_status": "running"}) is True
    assert j.update_run_and_job(rid, {"status": "succeeded"}, "a", {"last_status": "succeeded"}, fence="f2") is False
    r, job = j.get_run(rid), j.get_job("a")
    assert r is not None and job is not None and (r["status"], job["last_status"]) == ("running", "running")
    # the run alone, then the job alone
    assert j.update_run_and_job(rid, {"output": "o"}, None, None, fence="f1") is True
    assert j.update_run_and_job(rid, {}, "a", {"last_status": "x"}) is True
    r, job = j.get_run(rid), j.get_job("a")
    assert r is not None and job is not None and (r["output"], job["last_status"]) == ("o", "x")
    # a run the journal does not have: its job summary is still written (as before)
    assert j.update_run_and_job("no-such-run", {"status": "failed"}, "a", {"last_status": "failed"}) is True
    job = j.get_job("a")
    assert job is not None and job["last_status"] == "failed"
    # final stays final, whatever the fence
    assert j.update_run_and_job(rid, {"status": "succeeded", "finished_at_ms": T0 + 2}, "a",
                                {"last_status": "succeeded"}, fence="f1") is True
    assert j.update_run_and_job(rid, {"status": "cancelled"}, "a", {"last_status": "cancelled"}, fence="f1") is False
    r, job = j.get_run(rid), j.get_job("a")
    assert r is not None and job is not None and (r["status"], job["last_status"]) == ("succeeded", "succeeded")
    assert j.update_run_and_job(rid, {}, None, None) is True


def _claims(jobs: list[Any], skip: str | None = None) -> list[Any]:
    return [(job["routine_id"], job["next_run_at_unix_ms"], [_run(job["routine_id"], job["next_run_at_unix_ms"])],
             {"next_run_at_unix_ms": T0 + 10_000_000}) for job in jobs if job["routine_id"] != skip]


def test_claim_due_reads_plans_and_claims_in_one_go(journal_factory: Factory) -> None:
    j = journal_factory()
    with j.transaction() as c:
        for i in range(5):
            _routine(j, c, f"r{i}")
            j.put_job(c, f"r{i}", next_run_at_unix_ms=T0 + i)
        _routine(j, c, "later")
        j.put_job(c, "later", next_run_at_unix_ms=T0 + 5_000)
        _routine(j, c, "off")
        j.put_job(c, "off", next_run_at_unix_ms=T0, enabled=0)
    seen: list[list[str]] = []

    def plan(jobs: list[Any]) -> list[Any]:
        seen.append([job["routine_id"] for job in jobs])
        assert j.resource_hashes("Routine", [job["routine_id"] for job in jobs])  # the plan may read
        return _claims(jobs, skip="r1")

    due, results = j.claim_due(T0 + 100, 3, plan)
    assert (due, seen) == (3, [["r0", "r1", "r2"]])  # oldest first, at most the limit; not later, not off
    assert [r is not None and r[0] is not None for r in results] == [True, True]
    assert sorted(r["routine_id"] for r in j.runs_in_order()) == ["r0", "r2"]
    job = j.get_job("r0")
    assert job is not None and job["next_run_at_unix_ms"] == T0 + 10_000_000
    skipped = j.get_job("r1")  # the plan left it out: still due, nothing claimed
    assert skipped is not None and skipped["next_run_at_unix_ms"] == T0 + 1
    due, results = j.claim_due(T0 + 100, 64, _claims)
    assert due == 3 and all(r is not None and r[0] is not None for r in results)
    assert j.claim_due(T0 + 100, 64, _claims) == (0, [])
    assert len(j.runs_in_order()) == 5


def test_claim_due_racing_handles_claim_each_job_once(journal_factory: Factory) -> None:
    """Two schedulers claiming at once, one of them slow to plan: every due job is claimed by one."""
    setup = journal_factory()
    with setup.transaction() as c:
        for i in range(40):
            _routine(setup, c, f"r{i:02}")
            setup.put_job(c, f"r{i:02}", next_run_at_unix_ms=T0 + i)
    slow, fast = journal_factory(), journal_factory()
    won: dict[str, list[str]] = {"slow": [], "fast": []}
    planning = threading.Event()

    def claimer(name: str, j: JournalStore, limit: int) -> None:
        def plan(jobs: list[Any]) -> list[Any]:
            if name == "slow":
                planning.set()
                time.sleep(0.3)  # holds its batch while the other claims
            return _claims(jobs)
        while True:
            due, results = j.claim_due(T0 + 100, limit, plan)
            if not due:
                return
            won[name] += [str(ids[0]) for ids in results if ids and ids[0]]

    t = threading.Thread(target=claimer, args=("slow", slow, 10))
    t.start()
    assert planning.wait(10)
    claimer("fast", fast, 64)
    t.join(30)
    runs = setup.runs_in_order()
    assert sorted(r["routine_id"] for r in runs) == [f"r{i:02}" for i in range(40)]  # each once
    assert sorted(won["slow"] + won["fast"]) == sorted(r["run_id"] for r in runs)
