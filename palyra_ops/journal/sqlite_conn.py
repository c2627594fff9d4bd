"""SQLite plumbing of the SQLite store: opening a connection, tracking write faults, the Txn handle.

Connections run in autocommit mode and every multi-statement write is an explicit
`BEGIN IMMEDIATE … COMMIT`, taking the write lock up front so two writers never deadlock on upgrade
and a killed process leaves either the old or the new state (SQLite's WAL guarantees the rest).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

from palyra_ops.clock import Clock
from palyra_ops.errors import JournalBusy, JournalError
from palyra_ops.journal.faults import JournalConnection, busy_timeout_ms, translate
from palyra_ops.journal.store import Txn

log = logging.getLogger("palyra_ops.journal")

R = TypeVar("R")


def record(row: sqlite3.Row | None, kind: type[R]) -> R | None:
    """A row as the domain record `kind` (a TypedDict: the row's columns as keys), or None."""
    return cast(R, dict(row)) if row is not None else None


def records(rows: Iterable[sqlite3.Row], kind: type[R]) -> list[R]:
    return [cast(R, dict(r)) for r in rows]


class SQLiteTxn(Txn):
    """The SQLite store's transaction handle: its connection, inside `BEGIN IMMEDIATE`.

    Callers outside `journal/` only hand it back to the store's methods (`JournalStore.Txn` is
    opaque to them); the store's own modules and SQLite-specific tests use `execute`.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(parameters))

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction


def connect(path: Path, *, autocommit: bool = True, busy_timeout: int | None = None,
            on_fault: Callable[[JournalError], None] | None = None) -> JournalConnection:
    """A connection to the journal file with the settings every user of it needs (WAL, waits on
    busy instead of failing, NORMAL sync — durable at checkpoints, safe against corruption).

    Environmental failures (busy, full, read-only, cannot open) raise named `JournalError`s from
    here and from every later statement on the connection (see `journal.faults`).
    """
    wait_ms = busy_timeout_ms(busy_timeout)
    t0 = time.monotonic()
    try:
        conn = sqlite3.connect(str(path), isolation_level=None if autocommit else "", check_same_thread=False,
                               timeout=wait_ms / 1000, factory=JournalConnection)
    except sqlite3.Error as exc:
        err = translate(exc, str(path), time.monotonic() - t0)
        if err is None:
            raise
        raise err from None
    assert isinstance(conn, JournalConnection)
    conn.journal_path = str(path)
    conn.on_fault = on_fault
    try:
        conn.execute(f"PRAGMA busy_timeout={wait_ms}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except JournalError:
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise JournalError(f"{path}: not a palyra journal ({exc})", path=str(path)) from None
    return conn


class FaultState:
    """Whether the journal can be written right now, as the last writes found it.

    A fault is set by a failed write (full, read-only, unavailable) and cleared by the next write
    that commits, per source ("write": the journal's own connection; "checkpoint": the WAL
    checkpointer), so the checkpointer failing every second does not flap a healthy writer.
    Transitions are logged once each way — never one line per failed statement.
    """

    _LABELS = {"write": "writes", "checkpoint": "WAL checkpoints"}

    def __init__(self, path: Path | str, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self.faults: dict[str, tuple[JournalError, int]] = {}
        self._logged: dict[str, str] = {}
        #: the daemon logs transitions; a CLI command reports the error itself (one line, no log)
        self.log = False

    def note(self, source: str, err: JournalError) -> None:
        if isinstance(err, JournalBusy):  # contention, not a broken journal: the caller reports it
            return
        prev = self.faults.get(source)
        since = prev[1] if prev is not None and type(prev[0]) is type(err) else self.clock.now_ms()
        self.faults[source] = (err, since)
        if self.log and self._logged.get(source) != err.message:
            self._logged[source] = err.message
            log.error("%s (%s failing); the daemon retries and resumes by itself", err.message,
                      self._LABELS.get(source, source))

    def clear(self, source: str) -> None:
        prev = self.faults.pop(source, None)
        if prev is not None and self._logged.pop(source, None) is not None:
            log.warning("journal %s is writable again (%s had failed for %.1f s)", self.path,
                        self._LABELS.get(source, source), max(0, self.clock.now_ms() - prev[1]) / 1000)

    def current(self) -> tuple[JournalError, int] | None:
        """The oldest current fault (error, since ms), or None when the last writes succeeded."""
        if not self.faults:
            return None
        return min(self.faults.values(), key=lambda f: f[1])


__all__ = ["FaultState", "SQLiteTxn", "connect", "record", "records"]
