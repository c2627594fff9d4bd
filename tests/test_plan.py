"""`plan.compute_plan` on in-memory values: desired resources against a journal snapshot.

No directory, no SQLite: the plan is a value computed from two values (SPEC §3), so every rule of
ownership, drift, last-good isolation and schedule preview is checked here directly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from palyra_ops.clock import FakeClock
from palyra_ops.errors import PalyraError
from palyra_ops.journal import Snapshot, StoredResource
from palyra_ops.model import Resource, canonical_json, content_hash
from palyra_ops.plan import Change, FieldChange, Plan, PlanAction, compute_plan

NOW = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)


def routine(name: str, *, prompt: str = "say hello", cron: str = "0 9 * * *", tz: str = "utc",
            file: str = "a.yaml", **spec: Any) -> Resource:
    body = {"metadata": {}, "spec": {"prompt": prompt, "trigger": {"kind": "schedule", "schedule": {"cron": cron, "timezone": tz}},
                                     **spec}}
    return Resource("Routine", name, body, file)


def channel(name: str, file: str = "c.yaml") -> Resource:
    return Resource("Channel", name, {"metadata": {}, "spec": {"type": "file", "path": "out.jsonl"}}, file)


def stored(res: Resource, *, managed: bool = True, file: str | None = "same", applied: Resource | None = None) -> StoredResource:
    """`res` as the journal holds it; `applied` is what apply last wrote (drift when it differs)."""
    source = res.source_file if file == "same" else file
    applied_hash = (applied or res).hash if managed else None
    return StoredResource(res.kind, res.name, canonical_json(res.body), content_hash(res.body), applied_hash,
                          managed, source, 0, 0)


def snapshot(*items: StoredResource, jobs: dict[str, dict[str, Any]] | None = None) -> Snapshot:
    return Snapshot(lineage="L1", serial=7, resources={(s.kind, s.name): s for s in items}, jobs=jobs or {})


def plan_of(desired: list[Resource], snap: Snapshot, **options: Any) -> Plan:
    return compute_plan(desired, snap, dir="routines.d", journal_path="j.sqlite3", clock=FakeClock(NOW), **options)


def only(plan: Plan) -> Change:
    (change,) = plan.changes
    return change


def test_create_shows_the_whole_object_and_its_next_fires() -> None:
    c = only(plan_of([routine("alpha")], snapshot()))
    assert (c.action, c.reason, c.source_file) == (PlanAction.CREATE, "new in a.yaml", "a.yaml")
    assert c.before is None and c.after == routine("alpha").body and c.fields == []
    assert c.schedule is not None
    assert (c.schedule.timezone, c.schedule.before) == ("utc", [])
    assert c.schedule.after == ["2026-03-28T09:00:00+00:00", "2026-03-29T09:00:00+00:00", "2026-03-30T09:00:00+00:00"]


def test_unchanged_object_is_a_no_op_without_decoding_anything() -> None:
    c = only(plan_of([routine("alpha")], snapshot(stored(routine("alpha")))))
    assert (c.action, c.reason, c.before, c.after, c.schedule) == (PlanAction.NO_OP, "up to date", None, None, None)
    assert c.managed_before is True and not c.kept and not c.is_change


def test_update_lists_each_changed_field_old_to_new() -> None:
    old = routine("alpha", prompt="old words", enabled=True)
    new = routine("alpha", prompt="new words", enabled=True)
    c = only(plan_of([new], snapshot(stored(old))))
    assert (c.action, c.reason) == (PlanAction.UPDATE, "changed in a.yaml")
    assert c.fields == [FieldChange("spec.prompt", "old words", "new words")]
    # metadata (an empty mapping is a leaf), spec.enabled, spec.trigger.kind, .schedule.cron, .schedule.timezone
    assert c.unchanged_fields == 5
    assert c.schedule is None  # the schedule did not change: its next fires do not move


def test_a_field_added_or_removed_shows_as_missing_on_one_side() -> None:
    c = only(plan_of([routine("alpha", owner="ops")], snapshot(stored(routine("alpha")))))
    assert c.fields == [FieldChange("spec.owner", None, "ops")]
    c = only(plan_of([routine("alpha")], snapshot(stored(routine("alpha", owner="ops")))))
    assert c.fields == [FieldChange("spec.owner", "ops", None)]


def test_changed_schedule_shows_next_fires_before_and_after_in_each_zone() -> None:
    old = routine("alpha", cron="0 9 * * *", tz="utc")
    new = routine("alpha", cron="30 10 * * *", tz="Europe/Prague")
    c = only(plan_of([new], snapshot(stored(old), jobs={"alpha": {"anchor_ms": None}})))
    assert c.action == PlanAction.UPDATE
    assert c.schedule is not None and c.schedule.timezone == "Europe/Prague"
    assert c.schedule.before == ["2026-03-28T09:00:00+00:00", "2026-03-29T09:00:00+00:00", "2026-03-30T09:00:00+00:00"]
    prague = ZoneInfo("Europe/Prague")  # the zone changes to summer time on 2026-03-29: the offset moves
    assert c.schedule.after == [datetime(2026, 3, d, 10, 30, tzinfo=prague).isoformat() for d in (28, 29, 30)]
    assert c.schedule.after[0].endswith("+01:00") and c.schedule.after[1].endswith("+02:00")
    assert c.schedule.notes == []


def test_schedule_removed_shows_the_fires_that_stop() -> None:
    old = routine("alpha")
    new = Resource("Routine", "alpha", {"metadata": {}, "spec": {"prompt": "say hello", "trigger": {"kind": "manual"}}}, "a.yaml")
    c = only(plan_of([new], snapshot(stored(old))))
    assert c.schedule is not None and c.schedule.after == [] and len(c.schedule.before) == 3


def test_schedule_meeting_a_dst_gap_is_warned_about() -> None:
    c = only(plan_of([routine("night", cron="30 2 * * *", tz="Europe/Prague")], snapshot()))
    assert c.schedule is not None
    assert any("2026-03-29" in n for n in c.schedule.notes), c.schedule.notes


def test_moved_file_is_an_update_of_the_source_file_only() -> None:
    c = only(plan_of([routine("alpha", file="b.yaml")], snapshot(stored(routine("alpha", file="a.yaml")))))
    assert (c.action, c.reason, c.fields, c.schedule) == (PlanAction.UPDATE, "moved from a.yaml to b.yaml", [], None)


def test_managed_object_missing_from_the_directory_is_pruned() -> None:
    gone = routine("gone", file="old.yaml")
    plan = plan_of([routine("alpha")], snapshot(stored(routine("alpha")), stored(gone)))
    c = plan.changes[1]
    assert (c.name, c.action, c.reason) == ("gone", PlanAction.DELETE, "removed from the directory (was in old.yaml)")
    assert (c.before, c.after, c.managed_before) == (gone.body, None, True)
    assert plan.summary == {"add": 0, "change": 0, "delete": 1, "unchanged": 1, "unmanaged": 0}
    assert plan.has_changes


def test_unmanaged_objects_are_listed_and_left_alone_unless_prune_unmanaged() -> None:
    api = routine("from-api")
    snap = snapshot(stored(routine("alpha")), stored(api, managed=False, file=None))
    c = plan_of([routine("alpha")], snap).changes[1]
    assert (c.action, c.reason, c.managed_before) == (
        PlanAction.UNMANAGED, "created through the API; not in the directory, left alone", False)
    assert not plan_of([routine("alpha")], snap).has_changes
    c = plan_of([routine("alpha")], snap, prune_unmanaged=True).changes[1]
    assert (c.action, c.reason, c.before) == (PlanAction.DELETE, "unmanaged and --prune-unmanaged given", api.body)


def test_an_unmanaged_object_in_the_directory_is_adopted() -> None:
    c = only(plan_of([routine("alpha")], snapshot(stored(routine("alpha"), managed=False, file=None))))
    assert (c.action, c.managed_before, c.drift) == (PlanAction.UPDATE, False, False)
    assert c.reason == "adopted: exists unmanaged (created through the API); apply makes it managed"


def test_drift_outside_git_is_put_back_to_the_git_version() -> None:
    git = routine("alpha", prompt="from git")
    edited = routine("alpha", prompt="edited in the console")
    c = only(plan_of([git], snapshot(stored(edited, applied=git))))
    assert (c.action, c.drift) == (PlanAction.UPDATE, True)
    assert c.reason == "drift: changed outside git since the last apply; apply restores the git version"
    assert c.fields == [FieldChange("spec.prompt", "edited in the console", "from git")]
    c = only(plan_of([routine("alpha", prompt="newer in git")], snapshot(stored(edited, applied=git))))
    assert c.reason == "changed in a.yaml, and drifted outside git since the last apply"


def test_objects_of_a_protected_file_are_kept_not_pruned() -> None:
    """The watcher's last-good isolation: an invalid file's objects stay as last applied."""
    plan = plan_of([routine("alpha")], snapshot(stored(routine("alpha")), stored(routine("beta", file="bad.yaml"))),
                   protected_files={"bad.yaml"})
    c = plan.changes[1]
    assert (c.name, c.action, c.kept, c.managed_before) == ("beta", PlanAction.NO_OP, True, True)
    assert c.reason == "kept: bad.yaml is invalid (last good version stays)"
    assert not plan.has_changes and not plan.changes[0].kept
    # the only file invalid: kept, and the empty-directory guard does not fire
    assert only(plan_of([], snapshot(stored(routine("beta", file="bad.yaml"))), protected_files={"bad.yaml"})).kept


def test_emptying_the_directory_is_refused_unless_allow_empty() -> None:
    snap = snapshot(stored(routine("alpha")))
    with pytest.raises(PalyraError, match=r"refusing to delete all 1 managed object\(s\): the directory routines.d is empty"):
        plan_of([], snap)
    with pytest.raises(PalyraError, match="the directory routines.d is missing"):
        plan_of([], snap, dir_exists=False)
    assert only(plan_of([], snap, allow_empty=True)).action == PlanAction.DELETE


def test_deleting_a_channel_a_routine_still_delivers_to_warns() -> None:
    r = routine("alpha", delivery={"mode": "specific_channel", "channel": "team"})
    plan = plan_of([r], snapshot(stored(r), stored(channel("team"))))
    assert plan.warnings == ["routine 'alpha' delivers to channel 'team', which this plan deletes"]


def test_plan_records_the_journal_identity_and_options() -> None:
    plan = plan_of([routine("alpha")], snapshot(), prune_unmanaged=True)
    assert (plan.lineage, plan.serial, plan.dir, plan.journal_path) == ("L1", 7, "routines.d", "j.sqlite3")
    assert plan.options == {"prune_unmanaged": True, "allow_empty": False}
    assert plan.created_at == "2026-03-27T12:00:00+00:00"


def test_actions_are_a_str_enum_with_the_json_values() -> None:
    assert [a.value for a in PlanAction] == ["create", "update", "delete", "no-op", "unmanaged"]
    assert [a for a in PlanAction if a.is_change] == [PlanAction.CREATE, PlanAction.UPDATE, PlanAction.DELETE]
    assert PlanAction.NO_OP == "no-op" and json.dumps(PlanAction.NO_OP) == '"no-op"'


def test_json_round_trip_keeps_every_field_and_the_kept_flag(tmp_path) -> None:
    plan = plan_of([routine("alpha", prompt="new"), routine("night", cron="30 2 * * *", tz="Europe/Prague", file="n.yaml")],
                   snapshot(stored(routine("alpha", prompt="old")), stored(routine("beta", file="bad.yaml"))),
                   protected_files={"bad.yaml"})
    plan.save(tmp_path / "p.json")
    back = Plan.load(tmp_path / "p.json")
    assert back == plan
    assert [(c.name, c.action) for c in back.changes] == [
        ("alpha", PlanAction.UPDATE), ("night", PlanAction.CREATE), ("beta", PlanAction.NO_OP)]
    assert all(isinstance(c.action, PlanAction) for c in back.changes)
    assert [c.kept for c in back.changes] == [False, False, True]
    doc = plan.to_json()
    assert doc["changes"][2]["kept"] is True
    assert "kept" not in doc["changes"][0] and "kept" not in doc["changes"][1]  # unchanged JSON for every other change


def test_a_plan_file_with_an_unknown_action_is_refused() -> None:
    doc = plan_of([routine("alpha")], snapshot()).to_json()
    doc["changes"][0]["action"] = "replace"
    with pytest.raises(PalyraError, match="malformed plan file"):
        Plan.from_json(doc)
    with pytest.raises(PalyraError, match="unsupported plan file format_version 2"):
        Plan.from_json({**doc, "format_version": 2})
