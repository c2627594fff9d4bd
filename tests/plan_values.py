"""In-memory desired and journal values for the plan tests: no directory, no journal file.

Bodies are small on purpose (no schema defaults filled in): `compute_plan` and the views only look
at what is there, and a golden string should not change when the schema gains a default.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from palyra_ops.clock import FakeClock, to_ms
from palyra_ops.journal import Snapshot, StoredResource
from palyra_ops.model import Resource, canonical_json, content_hash
from palyra_ops.plan import Plan, compute_plan

#: Friday 2026-03-27 12:00 UTC: the Sunday after, Europe/Prague skips 02:00-03:00 (CET → CEST)
T0 = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)


def routine(name: str, *, cron: str = "0 9 * * *", timezone: str = "utc", prompt: str = "say hello",
            file: str = "a.yaml", **spec: Any) -> Resource:
    body = {"metadata": {}, "spec": {"prompt": prompt,
                                     "trigger": {"kind": "schedule", "schedule": {"cron": cron, "timezone": timezone}},
                                     **spec}}
    return Resource("Routine", name, body, file)


def channel(name: str, *, file: str = "a.yaml", path: str = "out.jsonl") -> Resource:
    return Resource("Channel", name, {"metadata": {}, "spec": {"type": "file", "path": path}}, file)


def stored(res: Resource, *, managed: bool = True, source_file: str | None = "same", body: dict[str, Any] | None = None,
           applied: bool = True) -> StoredResource:
    """`res` as the journal holds it. `body`: what the journal holds instead (an edit through the API:
    drift when managed, since apply last wrote `res`); `applied=False`: never written by apply."""
    held = res.body if body is None else body
    return StoredResource(
        res.kind, res.name, canonical_json(held), content_hash(held),
        res.hash if managed and applied else None, managed,
        res.source_file if source_file == "same" else source_file, 0, 0,
    )


def snapshot(*resources: StoredResource, jobs: dict[str, dict[str, Any]] | None = None) -> Snapshot:
    return Snapshot("lineage-1", 3, {(r.kind, r.name): r for r in resources}, jobs or {})


def plan_of(desired: list[Resource], snap: Snapshot, *, at: datetime = T0, **options: Any) -> Plan:
    return compute_plan(desired, snap, dir="routines.d", journal_path="j.sqlite3", clock=FakeClock(to_ms(at)),
                        **options)
