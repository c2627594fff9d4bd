"""reconcile: the one code path that writes desired state (apply, the watcher, the console API).

Library-level tests on a real journal: what each write leaves in the journal (jobs' next runs,
serial, apply log, approvals), that a second apply converges to a no-op, and that a stale plan or a
failure changes nothing. The `store` fixture opens the journal through `open_journal`, so these
run on each store the contract suite runs on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gitops_helpers import routine_yaml, write

from palyra_ops.clock import FakeClock
from palyra_ops.errors import NotFound, StalePlan
from palyra_ops.journal import JournalStore, open_journal
from palyra_ops.model import Resource
from palyra_ops.reconcile import (
    apply_directory,
    apply_plan,
    delete_resource,
    plan_directory,
    set_enabled,
    upsert_resource,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000
HOUR = 60 * MIN


@pytest.fixture(params=["sqlite"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., JournalStore]]:
    location = str(tmp_path / "state" / "journal.sqlite3")
    opened: list[JournalStore] = []

    def open_(**kw: Any) -> JournalStore:
        j = open_journal(location, **kw)
        opened.append(j)
        return j

    yield open_
    for j in opened:
        j.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(opener: Callable[..., JournalStore], clock: FakeClock) -> JournalStore:
    return opener(clock=clock)


def plan(store: JournalStore, d: Path, clock: FakeClock, **kw: Any) -> Any:
    return plan_directory(d, store.path, clock=clock, **kw)[0]


def test_apply_creates_jobs_from_now_and_logs_the_apply(store: JournalStore, tmp_path: Path, clock: FakeClock) -> None:
    d = tmp_path / "routines"
    write(d, "a.yaml", routine_yaml("daily", cron="0 9 * * *"))
    result = apply_plan(store, plan(store, d, clock), directory=d, origin="test")
    assert (result.added, result.changed, result.deleted, result.serial) == (1, 0, 0, 1)
    job = store.get_job("daily")
    assert job is not None
    assert (job["trigger_kind"], job["enabled"], job["anchor_ms"], job["next_run_at_unix_ms"]) == (
        "schedule", 1, T0, T0 + 9 * HOUR)
    res = store.get_resource("Routine", "daily")
    assert res is not None and res.managed and res.applied_hash == res.hash and res.source_file == "a.yaml"
    log = store.last_apply()
    assert log is not None and (log["serial"], log["added"], log["origin"], log["source_dir"]) == (1, 1, "test", str(d))


def test_a_second_apply_is_a_no_op(store: JournalStore, tmp_path: Path, clock: FakeClock) -> None:
    d = tmp_path / "routines"
    write(d, "a.yaml", routine_yaml("daily"))
    apply_directory(store, d, origin="test")
    again = plan(store, d, clock)
    assert not again.has_changes
    result = apply_plan(store, again, directory=d)
    assert (result.total, result.serial) == (0, 1)
    assert len(store.apply_log()) == 1


def test_only_a_changed_schedule_moves_the_next_run(store: JournalStore, tmp_path: Path, clock: FakeClock) -> None:
    d = tmp_path / "routines"
    write(d, "a.yaml", routine_yaml("tick", cron="*/10 * * * *"))
    apply_directory(store, d)
    clock.advance(25 * MIN)
    write(d, "a.yaml", routine_yaml("tick", cron="*/10 * * * *", prompt="a new prompt"))
    assert apply_directory(store, d)[1].changed == 1
    job = store.get_job("tick")
    assert job is not None and job["next_run_at_unix_ms"] == T0 + 10 * MIN  # kept: no replay, no skip
    write(d, "a.yaml", routine_yaml("tick", cron="*/7 * * * *", prompt="a new prompt"))
    apply_directory(store, d)
    job = store.get_job("tick")
    assert job is not None and (job["next_run_at_unix_ms"], job["anchor_ms"]) == (T0 + 28 * MIN, T0 + 25 * MIN)


def test_a_stale_plan_is_refused_and_writes_nothing(store: JournalStore, opener: Callable[..., JournalStore],
                                                    tmp_path: Path, clock: FakeClock) -> None:
    d = tmp_path / "routines"
    write(d, "a.yaml", routine_yaml("one"))
    stale = plan(store, d, clock)
    other = tmp_path / "other"
    write(other, "b.yaml", routine_yaml("two"))
    apply_directory(opener(clock=clock), other)  # someone else applied meanwhile
    with pytest.raises(StalePlan, match=r"serial 0 → 1"):
        apply_plan(store, stale, directory=d)
    assert store.get_resource("Routine", "one") is None and store.serial() == 1


def test_a_plan_of_another_journal_is_refused(store: JournalStore, tmp_path: Path, clock: FakeClock) -> None:
    d = tmp_path / "routines"
    write(d, "a.yaml", routine_yaml("one"))
    elsewhere = open_journal(tmp_path / "elsewhere.sqlite3", clock=clock)
    foreign = plan_directory(d, elsewhere.path, clock=clock)[0]
    elsewhere.close()
    with pytest.raises(StalePlan, match="different journal"):
        apply_plan(store, foreign, directory=d)
    assert store.serial() == 0


def test_api_edits_are_unmanaged_or_drift(store: JournalStore, tmp_path: Path, clock: FakeClock) -> None:
    d = tmp_path / "routines"
    write(d, "a.yaml", routine_yaml("managed"))
    apply_directory(store, d)
    adhoc = Resource.from_document({"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "adhoc"},
                                    "spec": {"prompt": "p", "trigger": {"kind": "manual"}}})
    stored, created = upsert_resource(store, adhoc)
    assert created and not stored.managed and store.serial() == 2
    job = store.get_job("adhoc")
    assert job is not None and (job["trigger_kind"], job["next_run_at_unix_ms"]) == ("manual", None)
    drifted = set_enabled(store, "managed", False)
    assert drifted.managed and drifted.drifted and store.serial() == 3
    job = store.get_job("managed")
    assert job is not None and job["enabled"] == 0
    back = plan(store, d, clock)
    [change] = [c for c in back.changes if c.is_change]
    assert (change.name, change.drift) == ("managed", True)


def test_re_enabling_recomputes_from_now(store: JournalStore, tmp_path: Path, clock: FakeClock) -> None:
    d = tmp_path / "routines"
    write(d, "a.yaml", routine_yaml("tick", cron="*/10 * * * *"))
    apply_directory(store, d)
    set_enabled(store, "tick", False)
    clock.advance(3 * HOUR + 1)
    set_enabled(store, "tick", True)
    job = store.get_job("tick")
    assert job is not None and (job["enabled"], job["next_run_at_unix_ms"]) == (1, T0 + 3 * HOUR + 10 * MIN)


def test_before_enable_stores_the_routine_disabled_with_a_pending_approval(store: JournalStore, tmp_path: Path,
                                                                           clock: FakeClock) -> None:
    d = tmp_path / "routines"
    write(d, "a.yaml", routine_yaml("guarded", extra_spec="approval: before_enable\n"))
    apply_directory(store, d)
    job = store.get_job("guarded")
    assert job is not None and (job["enabled"], job["approval_state"]) == (0, "pending")
    [approval] = store.list_approvals()
    assert (approval["routine_id"], approval["kind"], approval["state"]) == ("guarded", "before_enable", "pending")
    # dropping the requirement cancels the approval and enables the routine
    write(d, "a.yaml", routine_yaml("guarded"))
    apply_directory(store, d)
    job = store.get_job("guarded")
    assert job is not None and (job["enabled"], job["approval_state"]) == (1, "none")
    assert store.list_approvals() == []


def test_pruning_and_api_delete(store: JournalStore, tmp_path: Path, clock: FakeClock) -> None:
    d = tmp_path / "routines"
    write(d, "a.yaml", routine_yaml("a"))
    write(d, "b.yaml", routine_yaml("b"))
    apply_directory(store, d)
    (d / "b.yaml").unlink()
    assert apply_directory(store, d)[1].deleted == 1
    assert store.get_job("b") is None and store.get_resource("Routine", "b") is None
    with pytest.raises(NotFound, match="routine 'nope' does not exist"):
        delete_resource(store, "Routine", "nope")
    serial = store.serial()
    delete_resource(store, "Routine", "a")
    assert store.get_resource("Routine", "a") is None and store.serial() == serial + 1


def test_a_planned_routine_schedules_from_its_kept_core_as_from_its_whole_body() -> None:
    """Plan keeps of a compact routine only what scheduling reads (`Resource.core`); the job fields,
    next fires and forecast read from it what the typed view and the body give."""
    from palyra_ops.forecast import Timing
    from palyra_ops.model import Routine
    from palyra_ops.plan import schedule_of
    from palyra_ops.reconcile import _scheduling

    docs = [
        {"kind": "Routine", "metadata": {"name": "a"}, "spec": {"prompt": "p", "trigger": {"kind": "manual"}}},
        {"kind": "Routine", "metadata": {"name": "b"}, "spec": {
            "prompt": "p", "enabled": False, "approval": "before_enable",
            "trigger": {"kind": "schedule", "schedule": {"cron": "30 2 * * *", "timezone": "Europe/Prague"}},
            "policies": {"dst": {"gap": "skip"}, "jitter": "5m", "retry": {"max_attempts": 3}},
            "quiet_hours": {"start": "22:00", "end": "06:00", "action": "defer"}}},
        {"kind": "Routine", "metadata": {"name": "c"}, "spec": {
            "prompt": "p", "trigger": {"kind": "schedule", "schedule": {"every": "15m"}}}},
        {"kind": "Routine", "metadata": {"name": "d"}, "spec": {
            "prompt": "p", "trigger": {"kind": "webhook", "webhook": {"integration": "gh"}}}},
    ]
    for doc in docs:
        compact = Resource.from_document(doc, source_file="a.yaml").compact()
        whole = Resource.from_document(doc, source_file="a.yaml")
        assert compact.kept_core is not None and whole.kept_core is None
        r = Routine.from_resource(whole)
        assert _scheduling(compact) == (r.trigger_kind, r.approval, r.enabled, r.schedule, r.policies.dst)
        assert _scheduling(compact) == _scheduling(whole)
        assert schedule_of(compact.core) == schedule_of(whole.body)
        assert Timing.of_body("x", compact.core) == Timing.of_body("x", whole.body)
        assert compact.core["spec"].get("quiet_hours") == whole.body["spec"].get("quiet_hours")
    # equal cores are one value: a directory of 100,000 routines holds a few dozen
    twins = [Resource.from_document({**docs[2], "metadata": {"name": n}}).compact() for n in ("x", "y")]
    assert twins[0].core is twins[1].core
