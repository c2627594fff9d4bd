"""A fixed plan scenario whose rendered output is pinned by golden files (tests/golden/plan_fixture/).

The goldens were written by the code *before* the streaming/compact rework of the GitOps path
(issue 14, "Scale of the GitOps path"), so `test_gitops_scale.py` proves the plan still reads the
same: creates, updates (a field, a schedule across DST, a move, drift, adoption), deletes, an
unmanaged object, channel references, quiet hours and approvals, in text (plain and verbose) and
JSON. Regenerate only for an intended change of the output:

    PYTHONPATH=. .venv/bin/python tests/plan_fixture.py tests/golden/plan_fixture
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from gitops_helpers import channel_yaml, routine_yaml, write

from palyra_ops.clock import FakeClock
from palyra_ops.journal import open_journal
from palyra_ops.model import Resource
from palyra_ops.reconcile import apply_plan, plan_directory, set_enabled, upsert_resource
from palyra_ops.views.plan_text import render_text

#: 2026-03-27 12:00 UTC: two days before Europe's spring-forward gap (DST notes show up)
START_MS = 1_774_612_800_000

QUIET = """\
quiet_hours: {start: "22:00", end: "07:00", timezone: Europe/Prague}
delivery: {mode: specific_channel, channel: reports, failure_mode: specific_channel, failure_channel: pager}
"""


def _before(d: Path) -> None:
    write(d, "team/a.yaml",
          routine_yaml("daily", cron="30 2 * * *", timezone="Europe/Prague"),
          routine_yaml("edited", prompt="old prompt"),
          routine_yaml("moved"),
          routine_yaml("drifting", every="5m"),
          routine_yaml("doomed"))
    write(d, "channels.yaml", channel_yaml("reports"), channel_yaml("pager", "pager.jsonl"),
          channel_yaml("retired", "old.jsonl"))


def _after(d: Path) -> None:
    (d / "team" / "a.yaml").unlink()
    write(d, "team/a.yaml",
          routine_yaml("daily", cron="30 2 * * *", timezone="Europe/Berlin"),
          routine_yaml("edited", prompt="new prompt", extra_spec="policies: {concurrency: replace, jitter: 30s}\n"),
          routine_yaml("drifting", every="5m"))
    write(d, "team/b.yaml",
          routine_yaml("moved"),
          routine_yaml("quiet", cron="0 23 * * *", timezone="Europe/Prague", extra_spec=QUIET),
          routine_yaml("gated", every="1h", extra_spec="approval: before_enable\n"),
          routine_yaml("adopted", prompt="from git"),
          routine_yaml("unicode", prompt='"Zusammenfassung — état ✓"', timezone="America/New_York"))
    write(d, "channels.yaml", channel_yaml("reports"), channel_yaml("pager", "pager.jsonl"))


def scenario(tmp: Path) -> tuple[Path, Path, FakeClock]:
    """A journal applied from the "before" tree, changed through the API, and the "after" tree."""
    d, j = tmp / "routines.d", tmp / "state" / "journal.sqlite3"
    clock = FakeClock(START_MS)
    _before(d)
    with open_journal(j, clock=clock) as journal:
        plan, _ = plan_directory(d, j, clock=clock, display_root="routines.d")
        apply_plan(journal, plan)
        clock.advance(60_000)
        set_enabled(journal, "drifting", False)  # drift
        upsert_resource(journal, Resource.from_spec("Routine", "adopted", {
            "prompt": "from the api", "trigger": {"kind": "schedule", "schedule": {"every": "10m"}}}))
        upsert_resource(journal, Resource.from_spec("Routine", "api-only", {
            "prompt": "left alone", "trigger": {"kind": "manual"}}))
    clock.advance(60_000)
    _after(d)
    return d, j, clock


def journal_rows(j: Path, tmp: Path) -> dict[str, list[list[Any]]]:
    """Every row apply writes (approval and apply-log ids left out: ULIDs and rowids), tmp paths masked."""
    with open_journal(j) as journal:
        conn = journal.conn
        tables = {
            "resources": "SELECT * FROM journal_resources ORDER BY kind, name",
            "jobs": "SELECT * FROM journal_cron_jobs ORDER BY routine_id",
            "approvals": "SELECT * FROM journal_approvals ORDER BY routine_id, created_at_ms",
            "log": "SELECT * FROM journal_apply_log ORDER BY applied_at_ms, serial",
        }
        rows = {name: [list(r) for r in conn.execute(sql)] for name, sql in tables.items()}
    for row in rows["approvals"]:
        row[0] = "<id>"
    return {name: [[str(v).replace(str(tmp), "<tmp>") if isinstance(v, str) else v for v in row] for row in table]
            for name, table in rows.items()}


def applied(tmp: Path) -> str:
    """The journal after applying the scenario's plan, as JSON text."""
    d, j, clock = scenario(tmp)
    plan, _ = plan_directory(d, j, clock=clock, display_root="routines.d")
    with open_journal(j, clock=clock) as journal:
        apply_plan(journal, plan)
    return json.dumps(journal_rows(j, tmp), indent=1, ensure_ascii=False) + "\n"


def outputs(tmp: Path) -> dict[str, str]:
    d, j, clock = scenario(tmp)
    plan, _ = plan_directory(d, j, clock=clock, display_root="routines.d")
    doc = plan.to_json()
    doc["journal"]["path"] = "<journal>"
    doc["journal"]["lineage"] = "<lineage>" if doc["journal"]["lineage"] else None
    return {
        "plan.txt": render_text(plan),
        "plan-verbose.txt": render_text(plan, verbose=True),
        "plan-colour.txt": render_text(plan, colour=True),
        # key order inside a body is not part of the format (JSON objects are unordered)
        "plan.json": json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
    }


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        written = {**outputs(Path(tmp) / "plan"), "applied.json": applied(Path(tmp) / "apply")}
        for name, text in written.items():
            (out / name).write_text(text, encoding="utf-8")
            print(f"{out / name}: {len(text)} characters")
