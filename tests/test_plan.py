"""compute_plan on in-memory values: what each object's action is, and why (docs/gitops.md).

No directory and no journal file: the desired objects and the journal snapshot are built directly
(tests/plan_values.py), so each case states exactly what differs. Next fire times are checked
against zoneinfo, not against the schedule code that produced them.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from plan_values import T0, channel, plan_of, routine, snapshot, stored

from palyra_ops.errors import PalyraError
from palyra_ops.model import flatten
from palyra_ops.plan import DRIFT_ONLY, FieldChange, Plan, PlanAction

PRAGUE = ZoneInfo("Europe/Prague")


def only(plan: Plan, name: str):
    (change,) = [c for c in plan.changes if c.name == name]
    return change


def daily_local(hour: int, minute: int, zone: ZoneInfo, after: datetime, n: int) -> list[str]:
    """The next `n` daily HH:MM wall times after `after`, an hour later when HH:MM does not exist
    (Vixie cron's DST gap rule), as RFC 3339 in `zone`: computed with zoneinfo alone."""
    out: list[str] = []
    day = after.astimezone(zone).date()
    while len(out) < n:
        wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        real = wall.astimezone(ZoneInfo("UTC")).astimezone(zone)
        if real.replace(tzinfo=None) != wall.replace(tzinfo=None):  # in the gap: the clock jumped over it
            real = datetime(day.year, day.month, day.day, hour + 1, 0, tzinfo=zone)
        if real > after:
            out.append(real.isoformat())
        day += timedelta(days=1)
    return out


def test_create_lists_the_whole_object_and_its_next_fires_in_its_zone() -> None:
    new = routine("backup", cron="30 2 * * *", timezone="Europe/Prague", file="ops.yaml")
    plan = plan_of([new], snapshot())
    c = only(plan, "backup")
    assert (c.action, c.reason, c.source_file) == (PlanAction.CREATE, "new in ops.yaml", "ops.yaml")
    assert c.before is None and c.after == new.body and c.fields == []
    assert c.is_change and not c.kept and not c.drift
    assert c.schedule is not None and c.schedule.timezone == "Europe/Prague" and c.schedule.before == []
    # 2026-03-29 has no 02:30 in Prague: that fire moves to 03:00 CEST
    assert c.schedule.after == daily_local(2, 30, PRAGUE, T0, 3) == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    assert "2026-03-29: 02:30 does not exist in Europe/Prague (DST gap); fires at 03:00+02:00" in c.schedule.notes
    assert plan.summary == {"add": 1, "change": 0, "delete": 0, "unchanged": 0, "unmanaged": 0}
    assert plan.has_changes and plan.lineage == "lineage-1" and plan.serial == 3


def test_identical_managed_object_is_a_no_op_that_decodes_nothing() -> None:
    same = routine("same")
    held = stored(same)
    plan = plan_of([same], snapshot(held))
    c = only(plan, "same")
    assert (c.action, c.reason, c.before, c.after, c.schedule) == (PlanAction.NO_OP, "up to date", None, None, None)
    assert c.managed_before is True and not c.is_change
    assert held._body is None, "an unchanged object's stored body is never decoded"
    assert not plan.has_changes


def test_update_lists_each_changed_field_old_to_new_and_the_next_fires_before_and_after() -> None:
    old = routine("report", prompt="old", timezone="Europe/Prague")
    new = routine("report", prompt="new", cron="0 10 * * *", timezone="Europe/Prague")
    plan = plan_of([new], snapshot(stored(old), jobs={"report": {"anchor_ms": None}}))
    c = only(plan, "report")
    assert (c.action, c.reason) == (PlanAction.UPDATE, "changed in a.yaml")
    assert c.fields == [FieldChange("spec.prompt", "old", "new"),
                        FieldChange("spec.trigger.schedule.cron", "0 9 * * *", "0 10 * * *")]
    assert c.unchanged_fields == len(flatten(new.body)) - 2
    assert (c.before, c.after) == (old.body, new.body)
    assert c.schedule.before == [f.replace("T10:", "T09:") for f in daily_local(10, 0, PRAGUE, T0, 3)]
    assert c.schedule.after == daily_local(10, 0, PRAGUE, T0, 3) == [
        "2026-03-28T10:00:00+01:00", "2026-03-29T10:00:00+02:00", "2026-03-30T10:00:00+02:00"]


def test_update_without_a_schedule_change_shows_no_fire_times() -> None:
    plan = plan_of([routine("r", prompt="new")], snapshot(stored(routine("r", prompt="old"))))
    c = only(plan, "r")
    assert c.action is PlanAction.UPDATE and c.schedule is None
    assert c.fields == [FieldChange("spec.prompt", "old", "new")]


def test_a_field_that_appears_or_disappears_is_none_on_the_missing_side() -> None:
    plan = plan_of([routine("r", description_note="x")], snapshot(stored(routine("r"))))
    assert only(plan, "r").fields == [FieldChange("spec.description_note", None, "x")]


def test_moved_file_is_an_update_with_no_fields_and_keeps_its_schedule() -> None:
    plan = plan_of([routine("r", file="b.yaml")], snapshot(stored(routine("r", file="a.yaml"))))
    c = only(plan, "r")
    assert (c.action, c.reason, c.fields, c.schedule) == (PlanAction.UPDATE, "moved from a.yaml to b.yaml", [], None)


def test_managed_object_missing_from_the_directory_is_deleted() -> None:
    gone = routine("gone", file="old.yaml")
    plan = plan_of([routine("r")], snapshot(stored(routine("r")), stored(gone)))
    c = only(plan, "gone")
    assert (c.action, c.reason) == (PlanAction.DELETE, "removed from the directory (was in old.yaml)")
    assert (c.before, c.after, c.managed_before) == (gone.body, None, True)
    assert plan.summary["delete"] == 1


def test_unmanaged_objects_are_listed_and_left_alone_unless_prune_unmanaged() -> None:
    api = stored(routine("api-made", file=None), managed=False, source_file=None)
    snap = snapshot(stored(routine("r")), api)
    c = only(plan_of([routine("r")], snap), "api-made")
    assert (c.action, c.reason, c.managed_before) == (
        PlanAction.UNMANAGED, "created through the API; not in the directory, left alone", False)
    assert not c.is_change
    pruned = plan_of([routine("r")], snap, prune_unmanaged=True)
    c = only(pruned, "api-made")
    assert (c.action, c.reason) == (PlanAction.DELETE, "unmanaged and --prune-unmanaged given")
    assert pruned.options == {"prune_unmanaged": True, "allow_empty": False}


def test_an_unmanaged_object_the_directory_defines_is_adopted() -> None:
    mine = routine("r", prompt="from git")
    plan = plan_of([mine], snapshot(stored(routine("r", prompt="from the API"), managed=False)))
    c = only(plan, "r")
    assert (c.action, c.managed_before) == (PlanAction.UPDATE, False)
    assert c.reason == "adopted: exists unmanaged (created through the API); apply makes it managed"


def test_drift_alone_is_drift_only_and_drift_with_a_git_change_is_not() -> None:
    mine = routine("r", prompt="git")
    edited = routine("r", prompt="edited through the API").body
    c = only(plan_of([mine], snapshot(stored(mine, body=edited))), "r")
    assert (c.action, c.drift, c.drift_only, c.reason) == (PlanAction.UPDATE, True, True, DRIFT_ONLY)
    assert c.fields == [FieldChange("spec.prompt", "edited through the API", "git")]

    changed_in_git = routine("r", prompt="git, changed")
    c = only(plan_of([changed_in_git], snapshot(stored(mine, body=edited))), "r")
    assert (c.drift, c.drift_only) == (True, False)
    assert c.reason == "changed in a.yaml, and drifted outside git since the last apply"


def test_objects_of_a_protected_file_are_kept_not_deleted() -> None:
    good = routine("good", file="good.yaml")
    plan = plan_of([good], snapshot(stored(good), stored(routine("kept-one", file="bad.yaml"))),
                   protected_files={"bad.yaml"})
    c = only(plan, "kept-one")
    assert (c.action, c.kept, c.managed_before) == (PlanAction.NO_OP, True, True)
    assert c.reason == "kept: bad.yaml is invalid (last good version stays)"
    assert not plan.has_changes and not only(plan, "good").kept


def test_an_empty_directory_never_deletes_every_managed_object_by_accident() -> None:
    snap = snapshot(stored(routine("a")), stored(routine("b")))
    with pytest.raises(PalyraError) as err:
        plan_of([], snap)
    assert err.value.message == ("refusing to delete all 2 managed object(s): the directory routines.d is empty "
                                 "(pass --allow-empty if that is really what you want)")
    with pytest.raises(PalyraError, match="the directory routines.d is missing"):
        plan_of([], snap, dir_exists=False)
    assert [c.action for c in plan_of([], snap, allow_empty=True).changes] == [PlanAction.DELETE] * 2
    # a directory whose only file is invalid is not "empty": its objects are kept
    kept = plan_of([], snapshot(stored(routine("a", file="bad.yaml"))), protected_files={"bad.yaml"})
    assert [(c.action, c.kept) for c in kept.changes] == [(PlanAction.NO_OP, True)]


def test_deleting_a_channel_a_remaining_routine_delivers_to_is_warned() -> None:
    uses = routine("report", delivery={"channel": "reports", "failure_channel": "alerts"})
    plan = plan_of([uses], snapshot(stored(uses), stored(channel("reports")), stored(channel("alerts"))))
    assert plan.warnings == ["routine 'report' delivers to channel 'reports', which this plan deletes",
                             "routine 'report' delivers to channel 'alerts', which this plan deletes"]


def test_changes_are_ordered_desired_first_then_journal_only_by_kind_and_name() -> None:
    plan = plan_of([routine("b"), channel("z"), routine("a")],
                   snapshot(stored(routine("y", file="o.yaml")), stored(channel("c", file="o.yaml"))))
    assert [(c.kind, c.name) for c in plan.changes] == [
        ("Channel", "z"), ("Routine", "a"), ("Routine", "b"), ("Channel", "c"), ("Routine", "y")]


def test_plan_json_round_trip_keeps_every_field_including_kept(tmp_path) -> None:
    good = routine("good", file="good.yaml")
    plan = plan_of([good, routine("new", cron="30 2 * * *", timezone="Europe/Prague")],
                   snapshot(stored(good), stored(routine("kept-one", file="bad.yaml"))), protected_files={"bad.yaml"})
    doc = plan.to_json()
    assert [c.get("kept") for c in doc["changes"]] == [None, None, True]  # only ever added, only when true
    assert [c["action"] for c in doc["changes"]] == ["no-op", "create", "no-op"]
    assert type(json.loads(json.dumps(doc))["changes"][1]["action"]) is str
    assert Plan.from_json(doc) == plan
    plan.save(tmp_path / "p.json")
    loaded = Plan.load(tmp_path / "p.json")
    assert loaded == plan and loaded.changes[2].kept and loaded.changes[1].action is PlanAction.CREATE


def test_a_plan_file_with_an_unknown_action_is_refused() -> None:
    doc = plan_of([routine("r")], snapshot()).to_json()
    doc["changes"][0]["action"] = "explode"
    with pytest.raises(PalyraError, match="malformed plan file"):
        Plan.from_json(doc)


def test_plan_actions_are_the_documented_strings() -> None:
    assert [a.value for a in PlanAction] == ["create", "update", "delete", "no-op", "unmanaged", "move"]
    assert [a for a in PlanAction if a.is_change] == [PlanAction.CREATE, PlanAction.UPDATE, PlanAction.DELETE,
                                                      PlanAction.MOVE]
    assert PlanAction.NO_OP == "no-op" and f"{PlanAction.UPDATE}" == "update"
