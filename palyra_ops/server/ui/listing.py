"""One page of the routines list, fast with 10,000 routines (SPEC §13, issue 13: ≤ 100 ms a page).

The API's listing (`routes.routines.list_routines`) reads every routine and job row per request,
which costs hundreds of milliseconds at 10,000. The console keeps the routines themselves in a
`RoutineIndex` that is rebuilt only when the journal's serial moves (every write of a routine —
apply, upsert, enable/disable, delete — bumps it, in the same transaction), and reads job rows only
for the routines it shows. The filter rule is the API's own (`routes.routines._listed`), so a
filtered console page and a filtered API page list the same routines. A state filter reads job rows
one by one while they fill the page (a common state like Pending fills it in about `limit` reads) and
falls back to one read of the whole job table for a rare one; `Running` needs only the active runs.

Rows are rendered by `views.routine_view`, the API's view, so both show the same state and times.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from palyra_ops import views
from palyra_ops.context import DaemonContext
from palyra_ops.journal import StoredResource
from palyra_ops.server.routes.routines import _listed, active_counts

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: job rows read one by one for a state filter before reading them all at once
LOOKUPS_BEFORE_SCAN = 300


@dataclass(frozen=True)
class Entry:
    resource: StoredResource
    spec: dict[str, Any]
    #: the view fields the API's filter reads (trigger kind, origin channel)
    probe: dict[str, Any]


class RoutineIndex:
    """Routines sorted by name, as of one journal serial."""

    def __init__(self) -> None:
        self._serial: int | None = None
        self._entries: list[Entry] = []
        self._names: list[str] = []
        #: results derived from these routines (the timeline), dropped with them
        self.memo: dict[Any, Any] = {}

    def entries(self, ctx: DaemonContext) -> tuple[list[Entry], list[str]]:
        journal = ctx.journal
        serial = journal.serial()  # read before the rows: a write in between only causes a rebuild
        if serial != self._serial:
            known = {e.resource.name: e for e in self._entries}
            entries = []
            for res in journal.list_resources("Routine"):
                old = known.get(res.name)
                if old is not None and old.resource == res:  # unchanged: keep its decoded body
                    entries.append(old)
                    continue
                spec = res.body.get("spec", {})
                probe = {"trigger_kind": (spec.get("trigger") or {}).get("kind"), "channel": spec.get("channel")}
                entries.append(Entry(res, spec, probe))
            self._entries, self._names, self._serial = entries, [e.resource.name for e in entries], serial
            self.memo = {}
        return self._entries, self._names


@dataclass
class Row:
    view: dict[str, Any]
    paused: bool
    pause_note: str | None


@dataclass
class Page:
    rows: list[Row]
    next_after: str | None
    total: int


def routine_page(ctx: DaemonContext, index: RoutineIndex, *, trigger_kind: str | None = None,
                 state: str | None = None, channel: str | None = None, after: str | None = None,
                 limit: int = DEFAULT_LIMIT) -> Page:
    """Routines after `after` (by name) that pass the filters, at most `limit` of them."""
    journal = ctx.journal
    entries, names = index.entries(ctx)
    start = bisect.bisect_right(names, after) if after else 0
    now = ctx.clock.now_ms()
    active = active_counts(ctx)
    all_jobs: dict[str, dict[str, Any]] | None = None
    lookups = 0
    rows: list[Row] = []
    next_after = None
    for entry in entries[start:]:
        name = entry.resource.name
        if not _listed(entry.probe, entry.spec, trigger_kind, None, channel):
            continue
        if state == "Running" and not active[name]:
            continue
        if all_jobs is None and state is not None and lookups == LOOKUPS_BEFORE_SCAN:
            # a state this page has not found many of: one read of every job beats thousands of lookups
            all_jobs = {j["routine_id"]: j for j in journal.list_jobs()}
        lookups += 1
        job = all_jobs.get(name) if all_jobs is not None else journal.get_job(name)
        if state is not None and views.job_state(job, active[name], now) != state:
            continue
        if len(rows) == limit:
            next_after = rows[-1].view["name"]
            break
        view = views.routine_view(entry.resource, job, now_ms=now, active_runs=active[name])
        rows.append(Row(view, bool(job and job.get("paused")), (job or {}).get("pause_note")))
    return Page(rows, next_after, len(entries))
