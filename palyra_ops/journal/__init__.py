"""The journal: durable desired state, job state and run history.

`open_journal` is the seam: today it returns the SQLite implementation; a PostgreSQL backend for
several daemons on one journal would be chosen here by URL scheme without touching callers. Until
then a URL is refused here (`JournalUnsupported`) before anything is created.
"""

from __future__ import annotations

from pathlib import Path

from palyra_ops.clock import Clock
from palyra_ops.journal.faults import check_location, check_parents, filesystem_problem
from palyra_ops.journal.lock import DaemonLock
from palyra_ops.journal.sqlite import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    ResourceWrite,
    Snapshot,
    SQLiteJournal,
    StoredResource,
    new_id,
)

Journal = SQLiteJournal

__all__ = [
    "ACTIVE_STATUSES",
    "DaemonLock",
    "FINAL_STATUSES",
    "Journal",
    "ResourceWrite",
    "Snapshot",
    "SQLiteJournal",
    "StoredResource",
    "check_location",
    "filesystem_problem",
    "new_id",
    "open_journal",
    "read_snapshot",
]


def open_journal(path: Path | str, *, clock: Clock | None = None, busy_timeout: int | None = None) -> SQLiteJournal:
    """Open (creating and migrating as needed) the journal at `path`.

    Every failure the environment can cause is a `JournalError` with a one-line message; the busy
    timeout (ms) defaults to `PALYRA_JOURNAL_BUSY_TIMEOUT` or 30 s.
    """
    return SQLiteJournal(check_location(path), clock=clock, busy_timeout=busy_timeout)


def read_snapshot(path: Path | str) -> Snapshot:
    """A snapshot without creating anything: a missing journal reads as empty with no lineage.

    Plan must be read-only, so planning against a journal that does not exist yet must not create it.
    """
    p = check_location(path)
    if not p.exists():
        check_parents(p)
        return Snapshot(lineage=None, serial=0, resources={}, jobs={})
    with open_journal(p) as j:
        return j.snapshot()
