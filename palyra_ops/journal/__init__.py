"""The journal: durable desired state, job state and run history — the only place with SQL.

`JournalStore` (`store.py`) is the seam every caller sees: it speaks in domain records
(`records.py`) and owns its transactions. `open_journal` picks the store by the `--journal` value:
a path is a SQLite file (`sqlite.py`); a `postgresql://` (or `postgres://`) URL is a PostgreSQL
database (`postgres.py`, for several daemons on one journal: SPEC §11). The PostgreSQL driver is
imported only when a URL is given, so SQLite users never pay for it.
"""

from __future__ import annotations

import os

from palyra_ops.clock import Clock
from palyra_ops.journal.faults import check_location, check_parents, filesystem_problem, is_postgres_url
from palyra_ops.journal.lock import DaemonLock
from palyra_ops.journal.records import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    ApplyLogRecord,
    ApprovalRecord,
    EventRecord,
    JobRecord,
    ResourceWrite,
    RunRecord,
    Snapshot,
    StoredResource,
    new_id,
)
from palyra_ops.journal.sqlite import SQLiteJournal
from palyra_ops.journal.store import JournalStore, Txn

#: what callers annotate with: any store
Journal = JournalStore

__all__ = [
    "ACTIVE_STATUSES",
    "ApplyLogRecord",
    "ApprovalRecord",
    "DaemonLock",
    "EventRecord",
    "FINAL_STATUSES",
    "JobRecord",
    "Journal",
    "JournalStore",
    "ResourceWrite",
    "RunRecord",
    "Snapshot",
    "SQLiteJournal",
    "StoredResource",
    "Txn",
    "check_location",
    "filesystem_problem",
    "is_postgres_url",
    "journal_exists",
    "new_id",
    "open_journal",
    "read_snapshot",
]


def open_journal(location: str | os.PathLike[str], *, clock: Clock | None = None,
                 busy_timeout: int | None = None) -> JournalStore:
    """Open (creating and migrating as needed) the journal at `location`.

    `location` is a SQLite file path or a `postgresql://` URL. Every failure the environment can
    cause (no such directory, server unreachable, wrong password) is a `JournalError` with a
    one-line message; SQLite's busy timeout (ms) defaults to `PALYRA_JOURNAL_BUSY_TIMEOUT` or 30 s.
    """
    if is_postgres_url(location):
        from palyra_ops.journal.postgres import PgJournal

        return PgJournal(str(location), clock=clock)
    return SQLiteJournal(check_location(location), clock=clock, busy_timeout=busy_timeout)


def journal_exists(location: str | os.PathLike[str]) -> bool:
    """Whether the journal has been created: the SQLite file exists, or the PostgreSQL database
    holds its tables. Read-only commands (plan, status) ask first, so they never create one — no
    file, and no tables in a database nobody has applied to yet. A server that cannot be reached is
    a `JournalUnavailable`, as when opening."""
    if is_postgres_url(location):
        from palyra_ops.journal.postgres_conn import journal_exists as pg_exists

        return pg_exists(str(location))
    return check_location(location).exists()


def read_snapshot(location: str | os.PathLike[str]) -> Snapshot:
    """A snapshot without creating anything: a missing journal reads as empty with no lineage.

    Plan must be read-only, so planning against a journal that does not exist yet must not create it.
    """
    if not journal_exists(location):
        if not is_postgres_url(location):
            check_parents(check_location(location))
        return Snapshot(lineage=None, serial=0, resources={}, jobs={})
    if is_postgres_url(location):
        with open_journal(location) as pj:
            return pj.snapshot()
    p = check_location(location)
    if not p.exists():
        check_parents(p)
        return Snapshot(lineage=None, serial=0, resources={}, jobs={})
    with open_journal(p) as j:
        return j.snapshot()
