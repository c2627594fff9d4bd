"""Journal faults: SQLite's error codes as named errors with one-line messages.

Everything the environment can do to a journal — another process holding the write lock, a full
disk, a read-only mount, a path that can never be a database file — reaches the user as a
`JournalError` subclass naming the journal and what to do, never as `sqlite3.OperationalError:
unable to open database file` with a traceback. The translation happens on the connection itself
(`JournalConnection`), so it covers every statement of every caller (the journal class, the memory
store, sqlite-utils migrations), not a list of call sites someone has to keep complete.

Only environmental codes are translated; constraint violations, syntax errors and "no such table"
stay `sqlite3` errors, because callers rely on catching those (the dedupe key's IntegrityError).

Also here: how long a connection waits for the write lock (`PALYRA_JOURNAL_BUSY_TIMEOUT`, default
30 s), and the check that refuses URL-shaped journal locations until a PostgreSQL backend exists.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from palyra_ops.durations import parse_duration_ms
from palyra_ops.errors import (
    JournalBusy,
    JournalError,
    JournalFull,
    JournalReadOnly,
    JournalUnavailable,
    JournalUnsupported,
    PalyraError,
)
from palyra_ops.stateroot import default_root

# primary result codes (https://sqlite.org/rescode.html)
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26

DEFAULT_BUSY_TIMEOUT_MS = 30_000
BUSY_TIMEOUT_ENV = "PALYRA_JOURNAL_BUSY_TIMEOUT"

#: `scheme:` at the start of the first path component: `postgresql://…`, `sqlite:x`, `file:x`
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")
_POSTGRES = {"postgres", "postgresql", "pgsql"}
_PG_URL = re.compile(r"^postgres(ql)?://", re.I)


def is_postgres_url(location: object) -> bool:
    """`--journal` names a PostgreSQL journal when it is a `postgresql://` or `postgres://` URL
    (a str: a Path would have folded its `//`)."""
    return isinstance(location, str) and _PG_URL.match(location) is not None


def redact(url: str) -> str:
    """A URL as it may be shown (messages, logs, status): any password replaced by `***`."""
    return re.sub(r"^([a-zA-Z]+://[^/:@]*):[^@/]*@", r"\1:***@", url)


def busy_timeout_ms(explicit: int | None = None) -> int:
    """How long a journal connection waits for another process's write lock before giving up.

    30 s by default: an apply of 10,000 routines takes under a second, so a lock held that long is
    a stuck process, not contention. `PALYRA_JOURNAL_BUSY_TIMEOUT` (a duration, or 0) changes it.
    """
    if explicit is not None:
        return max(0, int(explicit))
    text = (os.environ.get(BUSY_TIMEOUT_ENV) or "").strip()
    if not text:
        return DEFAULT_BUSY_TIMEOUT_MS
    if text == "0":
        return 0
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        raise PalyraError(f"{BUSY_TIMEOUT_ENV}: {exc}") from None


def side_path(url: str, state_root: Path | None = None) -> Path:
    """Where this process keeps the side files of a PostgreSQL journal (memory index, caches):
    a name under the state root derived from the URL without its password, so two journals on two
    databases never share them."""
    root = state_root if state_root is not None else default_root(os.environ)
    shown = redact(url)
    tail = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in shown.split("://", 1)[-1])[:60]
    digest = hashlib.sha256(shown.encode()).hexdigest()[:10]
    return root / f"postgres-{tail}-{digest}.journal"


#: a journal as `--journal` / $PALYRA_JOURNAL give it: a SQLite file's path, or a PostgreSQL URL (text)
JournalLocation = Path | str


def journal_location(location: str | os.PathLike[str]) -> JournalLocation:
    """A journal location as given: a `postgresql://` URL stays the text it is (a Path would fold its
    `//`); anything else must be a SQLite file's path (`check_location`)."""
    if is_postgres_url(location):
        assert isinstance(location, str)
        return location
    return check_location(location)


def side_base(location: JournalLocation, state_root: Path | None = None) -> Path:
    """The name the journal's side files (lock, memory index, source cache) are written beside:
    the SQLite file itself, or a PostgreSQL journal's `side_path` under the state root."""
    if isinstance(location, str) and is_postgres_url(location):
        return side_path(location, state_root)
    return check_location(location)


def check_location(location: str | os.PathLike[str]) -> Path:
    """The journal path for `location`, or JournalUnsupported when it is URL-shaped.

    A URL must be refused where a file is needed, not taken for a relative path (which silently
    created a directory `postgresql:`). A PostgreSQL URL is a journal (`journal_location`), but not
    a file: this is for the places that need one (the SQLite store, the daemon's lock file).
    A file whose name really starts with `word:` can still be given as `./word:…`.
    """
    text = os.fspath(location)
    first = text.split("/", 1)[0]
    m = _SCHEME.match(first)
    if m is not None:
        scheme = m.group(1).lower()
        if scheme in _POSTGRES:
            raise JournalUnsupported(
                f"journal {redact(text)}: is a PostgreSQL URL, and the path of a SQLite file is needed here",
                path=redact(text))
        raise JournalUnsupported(
            f"journal {text}: looks like a {scheme}: URL, and only SQLite file paths are supported "
            f"(write ./{text} for a file whose name has a colon)", path=text)
    return Path(text)


def check_parents(path: Path) -> None:
    """Fail when a path can never be a journal because one of its parents is not a directory.

    Read-only commands treat a missing journal as empty; this keeps them from planning happily
    against `some-file/journal.sqlite3`, which apply would then refuse.
    """
    anc = _existing_ancestor(path.parent)
    if anc is not None and not anc.is_dir():
        raise JournalUnavailable(f"journal {path}: cannot be created: {anc} is not a directory", path=str(path))


def _existing_ancestor(p: Path) -> Path | None:
    for cand in (p, *p.parents):
        try:
            os.stat(cand)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return cand
        return cand
    return None


def _fs_state(path: Path) -> tuple[bool, bool]:
    """(read-only, full) for the file system holding `path` (or its nearest existing parent)."""
    anc = _existing_ancestor(path) or Path("/")
    if not anc.is_dir():
        anc = anc.parent
    try:
        st = os.statvfs(anc)
    except OSError:
        return False, False
    readonly = bool(st.f_flag & os.ST_RDONLY)
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use the reserved blocks
    return readonly, st.f_blocks > 0 and free == 0


def filesystem_problem(path: Path) -> JournalError | None:
    """What the journal's file system says before any write fails: full, or mounted read-only.

    `/healthz` uses this so a full disk shows at once, not only after the next write fails.
    """
    readonly, full = _fs_state(path)
    if readonly:
        return JournalReadOnly(f"journal {path} is read-only: its file system is mounted read-only", path=str(path))
    if full:
        return JournalFull(f"journal {path} is full: its file system has no space left", path=str(path))
    return None


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"


def translate(exc: sqlite3.Error, path: str, waited_s: float = 0.0) -> JournalError | None:
    """The named error for an environmental SQLite failure; None for everything else."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    p = Path(path)
    if primary is None:  # very old sqlite3 modules: go by the message
        primary = {"database is locked": SQLITE_BUSY, "database or disk is full": SQLITE_FULL,
                   "attempt to write a readonly database": SQLITE_READONLY,
                   "unable to open database file": SQLITE_CANTOPEN, "disk I/O error": SQLITE_IOERR,
                   "file is not a database": SQLITE_NOTADB}.get(text)
    if primary in (SQLITE_BUSY, SQLITE_LOCKED):
        return JournalBusy(
            f"journal {path} is busy: another process held its write lock for {_seconds(waited_s)} "
            "(an apply or a daemon?); try again when it is done", path=path, waited_s=waited_s)
    if primary == SQLITE_FULL:
        _, fs_full = _fs_state(p)
        why = "its file system has no space left" if fs_full else "SQLite could not grow it (database or disk is full)"
        return JournalFull(f"journal {path} is full: {why}; nothing was written", path=path)
    if primary == SQLITE_READONLY:
        ro, _ = _fs_state(p)
        why = "its file system is mounted read-only" if ro else "the file or its directory is not writable"
        return JournalReadOnly(f"journal {path} is read-only: {why}; nothing was written", path=path)
    if primary == SQLITE_IOERR:
        ro, full = _fs_state(p)
        if full:
            return JournalFull(f"journal {path} is full: its file system has no space left ({text}); "
                               "nothing was written", path=path)
        if ro:
            return JournalReadOnly(f"journal {path} is read-only: its file system is mounted read-only ({text})",
                                   path=path)
        return JournalUnavailable(f"journal {path}: I/O error ({text})", path=path)
    if primary in (SQLITE_NOTADB, SQLITE_CORRUPT):
        return JournalUnavailable(f"{path}: not a palyra journal ({text})", path=path)
    if primary == SQLITE_CANTOPEN:
        return open_problem(p, text)
    return None


def _specific_problem(path: Path) -> JournalError | None:
    """What the file system says is wrong with a journal path, when it says anything."""
    where = str(path)
    if path.is_dir():
        return JournalUnavailable(f"journal {where}: is a directory, not a journal file", path=where)
    anc = _existing_ancestor(path.parent)
    if anc is not None and not anc.is_dir():
        return JournalUnavailable(f"journal {where}: cannot be created: {anc} is not a directory", path=where)
    ro, full = _fs_state(path)
    if ro:
        return JournalReadOnly(f"journal {where}: cannot be opened for writing: its file system is mounted read-only",
                               path=where)
    if full:
        return JournalFull(f"journal {where}: cannot be opened: its file system has no space left", path=where)
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return JournalReadOnly(f"journal {where}: permission denied", path=where)
    if not path.exists() and anc is not None and not os.access(anc, os.W_OK | os.X_OK):
        return JournalReadOnly(f"journal {where}: cannot be created: {anc} is not writable", path=where)
    return None


def open_problem(path: Path, detail: str) -> JournalError:
    """Why a journal path cannot be opened, as precisely as the file system tells."""
    err = _specific_problem(path)
    if err is not None:
        return err
    if not path.exists():
        return JournalUnavailable(f"journal {path}: cannot be created in {path.parent} ({detail})", path=str(path))
    return JournalUnavailable(f"journal {path}: cannot be opened ({detail})", path=str(path))


def os_problem(path: Path, exc: OSError, beside: Path | None = None) -> JournalError:
    """A failure creating the journal's directory, or the file `beside` it, in the same terms."""
    err = _specific_problem(path)
    if err is not None:
        return err
    why = exc.strerror or str(exc)
    if beside is not None:
        return JournalUnavailable(f"journal {path}: cannot be created in {path.parent} ({beside}: {why})",
                                  path=str(path))
    return JournalUnavailable(f"journal {path}: cannot create its directory {path.parent}: {why}", path=str(path))


class JournalConnection(sqlite3.Connection):
    """A connection whose environmental failures raise named journal errors.

    `on_fault` is told about each one (the journal tracks whether it is writable, for /healthz and
    the scheduler's back-off). The wait before a busy error is measured here, so the message says
    how long it really waited.
    """

    journal_path: str = ""
    on_fault: Callable[[JournalError], None] | None = None

    def _raise(self, exc: sqlite3.Error, t0: float) -> None:
        err = translate(exc, self.journal_path, time.monotonic() - t0)
        if err is None:
            raise exc
        if self.on_fault is not None:
            self.on_fault(err)
        raise err from exc

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        t0 = time.monotonic()
        try:
            return super().execute(sql, parameters)
        except sqlite3.DatabaseError as exc:
            self._raise(exc, t0)
            raise  # pragma: no cover - _raise always raises

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        t0 = time.monotonic()
        try:
            return super().executemany(sql, parameters)
        except sqlite3.DatabaseError as exc:
            self._raise(exc, t0)
            raise  # pragma: no cover

    def executescript(self, script: str, /) -> sqlite3.Cursor:
        t0 = time.monotonic()
        try:
            return super().executescript(script)
        except sqlite3.DatabaseError as exc:
            self._raise(exc, t0)
            raise  # pragma: no cover

    def commit(self) -> None:
        t0 = time.monotonic()
        try:
            super().commit()
        except sqlite3.DatabaseError as exc:
            self._raise(exc, t0)


__all__ = [
    "BUSY_TIMEOUT_ENV",
    "DEFAULT_BUSY_TIMEOUT_MS",
    "JournalConnection",
    "busy_timeout_ms",
    "check_location",
    "check_parents",
    "filesystem_problem",
    "JournalLocation",
    "is_postgres_url",
    "journal_location",
    "redact",
    "side_base",
    "side_path",
    "open_problem",
    "os_problem",
    "translate",
]
