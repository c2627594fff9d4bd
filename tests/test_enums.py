"""Each StrEnum of `palyra_ops.enums` against the JSON Schema that publishes the same vocabulary.

The schemas are what users and API clients read; the enums are what the code compares. Read from
the schema files themselves (not from the code), so a value added on one side only fails here.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

from palyra_ops import enums
from palyra_ops.model import Routine

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def _at(doc: dict[str, Any], path: str) -> list[str]:
    node: Any = doc
    for part in path.split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return list(node["enum"])


ROUTINE = "routine.schema.json"
SPEC = "$defs/routineSpec/properties"
CASES: list[tuple[type[StrEnum], str, str]] = [
    (enums.TriggerKind, ROUTINE, f"{SPEC}/trigger/properties/kind"),
    (enums.RunTrigger, "api/Run.json", "properties/trigger_kind"),
    (enums.TriggerKind, "api/Routine.json", "properties/trigger_kind"),
    (enums.Concurrency, ROUTINE, f"{SPEC}/policies/properties/concurrency"),
    (enums.Misfire, ROUTINE, f"{SPEC}/policies/properties/misfire"),
    (enums.QuietAction, ROUTINE, f"{SPEC}/quiet_hours/properties/action"),
    (enums.ApprovalMode, ROUTINE, f"{SPEC}/approval"),
    (enums.DeliveryMode, ROUTINE, f"{SPEC}/delivery/properties/mode"),
    (enums.DeliveryMode, ROUTINE, f"{SPEC}/delivery/properties/failure_mode"),
    (enums.SilentPolicy, ROUTINE, f"{SPEC}/delivery/properties/silent_policy"),
    (enums.RunStatus, "api/Run.json", "properties/status"),
    (enums.ApprovalState, "api/Approval.json", "properties/state"),
]


@pytest.mark.parametrize(("enum", "schema", "path"), CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_enum_matches_its_schema(enum: type[StrEnum], schema: str, path: str) -> None:
    published = _at(json.loads((SCHEMAS / schema).read_text()), path)
    assert [m.value for m in enum] == published


def test_a_run_is_started_by_a_routine_trigger_or_a_backfill() -> None:
    assert [m.value for m in enums.RunTrigger] == [*(m.value for m in enums.TriggerKind), "backfill"]


def test_run_statuses_split_into_active_final_and_parked() -> None:
    assert set(enums.ACTIVE_STATUSES) | set(enums.FINAL_STATUSES) == set(enums.RunStatus) - {
        enums.RunStatus.AWAITING_APPROVAL}
    assert not set(enums.ACTIVE_STATUSES) & set(enums.FINAL_STATUSES)


def test_a_routine_read_from_the_journal_carries_enum_members() -> None:
    class Res:
        name = "r"
        body = {"metadata": {"name": "r"}, "spec": {"prompt": "p", "trigger": {"kind": "manual"},
                                                    "policies": {"concurrency": "queue_one", "misfire": "catch_up"},
                                                    "delivery": {"mode": "local_only"}}}

    r = Routine.from_resource(Res())  # type: ignore[arg-type]
    assert r.policies.concurrency is enums.Concurrency.QUEUE_ONE
    assert r.policies.misfire is enums.Misfire.CATCH_UP
    assert r.delivery.mode is enums.DeliveryMode.LOCAL_ONLY
    assert r.policies.concurrency == "queue_one"  # members are the strings the journal stores
