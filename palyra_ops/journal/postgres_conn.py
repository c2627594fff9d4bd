"""PostgreSQL plumbing of the PostgreSQL store: the pool, the Txn handle, errors as journal errors.

Connections come from a `psycopg_pool.ConnectionPool` in autocommit mode; every multi-statement write
is an explicit transaction on one pooled connection (`PgTxn`). Pooled connections use server-side
prepared statements unless `PALYRA_JOURNAL_PREPARED_STATEMENTS=off` (`prepare_threshold`): psycopg's
are protocol-level, which a transaction-mode PgBouncer >= 1.21 with `max_prepared_statements` tracks;
an older pooler needs `off`. Short connections of their own (migrations, the existence check, LISTEN)
never prepare.

Environmental failures (server down or restarting, unreachable, disk full, read-only standby) become
named `JournalError`s with one line naming the journal (without its password), exactly as the SQLite
store's faults do; constraint violations stay psycopg errors, because the store catches those itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar, cast

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import DictRow
from psycopg_pool import ConnectionPool

from palyra_ops.durations import parse_duration_ms
from palyra_ops.errors import (
    JournalBusy,
    JournalError,
    JournalFull,
    JournalReadOnly,
    JournalUnavailable,
    PalyraError,
)
from palyra_ops.journal.faults import redact
from palyra_ops.journal.store import Txn

R = TypeVar("R")

#: the columns only the PostgreSQL store keeps (insertion order of runs); never handed to callers
_PRIVATE = frozenset({"seq"})

#: the database's clock in ms, as SQL: due times are judged by it (SPEC §11). The statement's start,
#: not `clock_timestamp()`: that one is volatile, so `next_run_at_unix_ms <= …` could not be an index
#: condition and an idle `due_jobs` (nothing due) scanned every job of the journal
DB_NOW_MS = "(extract(epoch from statement_timestamp()) * 1000)::bigint"

_COLUMN = re.compile(r"[a-z_][a-z0-9_]*")


def columns(fields: Mapping[str, Any]) -> list[str]:
    """Field names as SQL columns: callers pass record keys, never user text; anything else is a bug."""
    bad = [k for k in fields if not _COLUMN.fullmatch(k)]
    if bad:
        raise ValueError(f"not a journal column: {bad[0]!r}")
    return list(fields)


#: SQL types of the columns the batched statements send as arrays; a column not named here (an
#: area's own) makes the store fall back to one statement per row, never guess a type
_INTEGER = frozenset({"attempt", "skipped_count", "enabled", "managed", "paused", "consecutive_failures"})
_TEXT = frozenset({
    "run_id", "routine_id", "occurrence_key", "dedupe_key", "trigger_kind", "trigger_payload", "first_run_id",
    "status", "reason", "policy_rule", "output", "delivery_status", "delivery_error", "skipped_times", "daemon_id",
    "approval_id", "approval_state", "schedule_fingerprint", "last_run_id", "last_status", "pause_note", "paused_by",
    "fence", "cancel_reason",
})


def array_types(cols: Iterable[str]) -> list[str] | None:
    """The array element type of each column (`unnest(%s::bigint[], …)`), or None if one is unknown."""
    out = []
    for c in cols:
        if c.endswith("_ms"):
            out.append("bigint")
        elif c in _INTEGER:
            out.append("integer")
        elif c in _TEXT:
            out.append("text")
        else:
            return None
    return out


def record(row: Mapping[str, Any] | None, kind: type[R]) -> R | None:
    """A row as the domain record `kind` (a TypedDict), or None."""
    if row is None:
        return None
    return cast(R, {k: v for k, v in row.items() if k not in _PRIVATE})


def records(rows: Iterable[Mapping[str, Any]], kind: type[R]) -> list[R]:
    return [cast(R, {k: v for k, v in r.items() if k not in _PRIVATE}) for r in rows]


class PgTxn(Txn):
    """The PostgreSQL store's transaction handle: one pooled connection inside BEGIN … COMMIT.

    Callers outside `journal/` only hand it back to the store's methods; the store's own modules
    use `execute`.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection[DictRow]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = None) -> psycopg.Cursor[DictRow]:
        return self.conn.execute(sql, params)  # type: ignore[arg-type] - the store's own SQL

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: an expected error inside (a unique violation the store turns into
        an answer) rolls back only this part, and the caller's transaction stays usable."""
        with self.conn.transaction():
            yield


class Recent:
    """The pool's checkout check, skipped for a connection used within the last second.

    Checking every checkout (an empty query) cost ~80 µs of a ~220 µs read; a connection that
    answered a moment ago almost surely still does, and when it does not (the server restarted in
    that second) reads retry on another connection and a transaction fails once like any outage.
    """

    def __init__(self, fresh_s: float = 1.0) -> None:
        self.fresh_s = fresh_s
        self._used: weakref.WeakKeyDictionary[psycopg.Connection[DictRow], float] = weakref.WeakKeyDictionary()

    def check(self, conn: psycopg.Connection[DictRow]) -> None:
        last = self._used.get(conn)
        if last is None or time.monotonic() - last >= self.fresh_s:
            ConnectionPool.check_connection(conn)

    def returned(self, conn: psycopg.Connection[DictRow]) -> None:
        self._used[conn] = time.monotonic()


#: a server-side limit on every statement of the store's pooled connections: a server that accepts a
#: statement and never answers (hung, not stopped) fails it after this long, instead of holding a
#: worker thread (or the event loop) until TCP gives up. Sent as a startup option (`-c
#: statement_timeout=…`); 0 sends nothing (a pooler that refuses startup options: PgBouncer without
#: `ignore_startup_parameters = options`). Migrations run on a connection of their own, without it.
STATEMENT_TIMEOUT_ENV = "PALYRA_JOURNAL_STATEMENT_TIMEOUT"
DEFAULT_STATEMENT_TIMEOUT_MS = 60_000


def statement_timeout_ms() -> int:
    """`PALYRA_JOURNAL_STATEMENT_TIMEOUT` (a duration such as `30s`, or 0 for none); 60 s by default,
    above the 30 s an apply may wait for another's lock (`PALYRA_JOURNAL_BUSY_TIMEOUT`)."""
    text = (os.environ.get(STATEMENT_TIMEOUT_ENV) or "").strip()
    if not text:
        return DEFAULT_STATEMENT_TIMEOUT_MS
    if text == "0":
        return 0
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        raise PalyraError(f"{STATEMENT_TIMEOUT_ENV}: {exc}") from None


#: server-side prepared statements on the pooled connections: `on` (the default) lets the server
#: parse and plan each of the run path's statements once per connection instead of on every call —
#: ~1.5x the burst rate of three daemons on two cores (bench/README.md), where the server's CPU is
#: the limit. psycopg prepares at the protocol level (Parse/Bind, not SQL `PREPARE`), which a
#: transaction-mode PgBouncer >= 1.21 tracks when `max_prepared_statements` is set; behind an older
#: pooler, or one without that setting, set `off` (docs/ha.md).
PREPARE_ENV = "PALYRA_JOURNAL_PREPARED_STATEMENTS"
#: executions of one statement on one connection before psycopg prepares it (its default)
PREPARE_THRESHOLD = 5


def prepare_threshold() -> int | None:
    """psycopg's `prepare_threshold` from `PALYRA_JOURNAL_PREPARED_STATEMENTS` (`on`/`off`; None: off)."""
    text = (os.environ.get(PREPARE_ENV) or "on").strip().lower()
    if text in ("on", "true", "1", "yes"):
        return PREPARE_THRESHOLD
    if text in ("off", "false", "0", "no"):
        return None
    raise PalyraError(f"{PREPARE_ENV}: expected on or off, got {text!r}")


def pool_kwargs(url: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The pooled connections' options: `kwargs` with the prepared-statements setting, plus the
    statement timeout unless it is 0 or the URL sets server options itself (then the URL decides)."""
    kwargs = {**kwargs, "prepare_threshold": prepare_threshold()}
    ms = statement_timeout_ms()
    if ms <= 0 or "options=" in url or "statement_timeout" in url:
        return kwargs
    return {**kwargs, "options": f"-c statement_timeout={ms}"}


def journal_exists(url: str) -> bool:
    """Whether the database at `url` holds a journal (its `journal_meta` table), read on a short
    connection of its own without creating anything; unreachable is a journal error."""
    where = redact(url)
    try:
        with psycopg.connect(url, autocommit=True, prepare_threshold=None,
                             **({} if "connect_timeout" in url else {"connect_timeout": 5})) as conn:
            row = conn.execute("SELECT to_regclass('journal_meta') IS NOT NULL").fetchone()
    except psycopg.Error as exc:
        err = translate(exc, where)
        raise (err or JournalError(f"journal {where}: {exc}", path=where)) from None
    return bool(row and row[0])


def translate(exc: BaseException, where: str) -> JournalError | None:
    """The journal error for an environmental failure, or None for one the caller must see as is."""
    from psycopg_pool import PoolTimeout

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()
    if isinstance(exc, PoolTimeout):
        return JournalUnavailable(f"journal {where}: cannot reach the database ({first})", path=where)
    if isinstance(exc, pgerrors.DiskFull | pgerrors.OutOfMemory):
        return JournalFull(f"journal {where}: the database server is out of space ({first})", path=where)
    if isinstance(exc, pgerrors.ReadOnlySqlTransaction):
        return JournalReadOnly(f"journal {where}: the database is read-only ({first})", path=where)
    if isinstance(exc, pgerrors.LockNotAvailable | pgerrors.QueryCanceled):
        return JournalBusy(f"journal {where}: busy ({first})", path=where)
    if isinstance(exc, pgerrors.InvalidCatalogName):
        return JournalUnavailable(f"journal {where}: {first}", path=where)
    if isinstance(exc, pgerrors.InsufficientPrivilege | pgerrors.InvalidAuthorizationSpecification
                  | pgerrors.InvalidPassword):
        return JournalUnavailable(f"journal {where}: {first}", path=where)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return JournalUnavailable(f"journal {where}: cannot reach the database ({first})", path=where)
    return None


__all__ = ["DB_NOW_MS", "PgTxn", "Recent", "array_types", "columns", "record", "records", "redact", "translate"]
