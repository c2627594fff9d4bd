"""The journal's environmental failures are named errors with one-line messages (issue 9, points 10, 12, 13).

SQLITE_FULL is produced with `PRAGMA max_page_count` — the same error path SQLite takes on a full
disk ("database or disk is full") — so these run in milliseconds; the real small file system is in
test_disk_full.py. Busy is a second real connection holding the write lock.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from palyra_ops.errors import JournalBusy, JournalFull, JournalUnavailable, JournalUnsupported
from palyra_ops.journal import DaemonLock, open_journal, read_snapshot
from palyra_ops.journal.faults import busy_timeout_ms, check_location
from palyra_ops.server.errors import http_status


def fill_to_limit(j) -> None:
    """Cap the journal at its current size: the next write that needs a new page fails SQLITE_FULL."""
    pages = j.conn.execute("PRAGMA page_count").fetchone()[0]
    j.conn.execute(f"PRAGMA max_page_count={pages}")


def test_a_full_journal_raises_journal_full_and_leaves_no_open_transaction(tmp_path) -> None:
    j = open_journal(tmp_path / "j.sqlite3")
    fill_to_limit(j)
    with pytest.raises(JournalFull) as exc:
        with j.transaction() as c:
            for i in range(200):  # ~4 KB each: needs new pages
                j.add_event(f"e{i}", {"pad": "x" * 4000})
                assert c.in_transaction
    assert str(j.path) in exc.value.message and "is full" in exc.value.message
    assert "\n" not in exc.value.message
    assert http_status(exc.value) == 503 and exc.value.code == "journal_full"
    # SQLite rolled the transaction back itself; the journal must not be left inside it
    assert not j.conn.in_transaction
    assert j.list_events() == []
    assert isinstance(j.fault, JournalFull) and j.write_fault is not None and j.fault_since_ms() is not None
    # space is back: the next write commits and clears the fault
    j.conn.execute("PRAGMA max_page_count=1073741823")
    j.add_event("after", {})
    assert j.fault is None and [e["name"] for e in j.list_events()] == ["after"]
    j.close()


def test_probe_write_clears_a_fault_once_writable(tmp_path) -> None:
    j = open_journal(tmp_path / "j.sqlite3")
    fill_to_limit(j)
    with pytest.raises(JournalFull):
        for i in range(200):
            j.add_event("e", {"pad": "x" * 4000, "i": i})
    assert j.fault is not None
    j.conn.execute("PRAGMA max_page_count=1073741823")
    j.probe_write()
    assert j.fault is None
    j.close()


def hold_write_lock(path: Path, seconds: float) -> threading.Event:
    """Another connection (as another process would) holding BEGIN IMMEDIATE for `seconds`."""
    held = threading.Event()

    def hold() -> None:
        c = sqlite3.connect(str(path), isolation_level=None)
        c.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        c.execute("ROLLBACK")
        c.close()

    threading.Thread(target=hold, daemon=True).start()
    assert held.wait(10)
    return held


def test_a_busy_journal_says_so_and_how_long_it_waited(tmp_path) -> None:
    p = tmp_path / "j.sqlite3"
    open_journal(p).close()
    hold_write_lock(p, 3.0)
    j = open_journal(p, busy_timeout=400)
    t0 = time.monotonic()
    with pytest.raises(JournalBusy) as exc:
        j.add_event("x", {})
    waited = time.monotonic() - t0
    assert waited >= 0.35
    msg = exc.value.message
    assert msg.startswith(f"journal {p} is busy: another process held its write lock for ")
    assert "(an apply or a daemon?)" in msg
    assert 0.35 <= exc.value.waited_s <= waited + 0.05
    assert j.fault is None, "contention is not a broken journal"
    assert not j.conn.in_transaction
    j.close()


def test_busy_timeout_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("PALYRA_JOURNAL_BUSY_TIMEOUT", raising=False)
    assert busy_timeout_ms() == 30_000
    monkeypatch.setenv("PALYRA_JOURNAL_BUSY_TIMEOUT", "250ms")
    assert busy_timeout_ms() == 250
    monkeypatch.setenv("PALYRA_JOURNAL_BUSY_TIMEOUT", "0")
    assert busy_timeout_ms() == 0
    monkeypatch.setenv("PALYRA_JOURNAL_BUSY_TIMEOUT", "soon")
    with pytest.raises(Exception, match="PALYRA_JOURNAL_BUSY_TIMEOUT: invalid duration 'soon'"):
        busy_timeout_ms()


@pytest.mark.parametrize("url", ["sqlite:///tmp/j.sqlite3", "file:j.sqlite3", "mysql://db/x"])
def test_url_shaped_journals_are_refused_and_nothing_is_created(tmp_path, monkeypatch, url) -> None:
    """Only PostgreSQL URLs name a journal (tests/test_journal_postgres.py); any other URL shape is
    refused rather than taken for a relative path (which once created a directory `sqlite:`)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JournalUnsupported) as exc:
        open_journal(url)
    assert exc.value.message.startswith(f"journal {url}: looks like a ")
    with pytest.raises(JournalUnsupported):
        read_snapshot(url)
    with pytest.raises(JournalUnsupported):
        DaemonLock(url)
    assert list(tmp_path.iterdir()) == []


def test_a_postgresql_journal_has_no_lock_file(tmp_path, monkeypatch) -> None:
    """Several daemons share a PostgreSQL journal (SPEC §11): the SQLite lock file refuses the URL."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JournalUnsupported, match="journal postgresql://x/y: "):
        DaemonLock("postgresql://x/y")
    assert list(tmp_path.iterdir()) == []


def test_a_file_name_with_a_colon_can_still_be_given_as_a_path(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_location("./a:b.sqlite3") == Path("./a:b.sqlite3")
    assert check_location(tmp_path / "x:y" / "j.sqlite3") == tmp_path / "x:y" / "j.sqlite3"
    open_journal("./a:b.sqlite3").close()
    assert (tmp_path / "a:b.sqlite3").exists()


def test_open_errors_name_the_problem(tmp_path) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    cases = {
        tmp_path / "afile" / "j.sqlite3": "cannot be created: {t}/afile is not a directory",
        tmp_path / "afile" / "deeper" / "j.sqlite3": "cannot be created: {t}/afile is not a directory",
        tmp_path / "adir": "is a directory, not a journal file",
        Path("/proc/palyra-journal.sqlite3"): "cannot be created in /proc",
    }
    for path, expected in cases.items():
        with pytest.raises(JournalUnavailable) as exc:
            open_journal(path)
        assert exc.value.message.startswith(f"journal {path}: " + expected.format(t=tmp_path)), exc.value.message
        assert "\n" not in exc.value.message
    # read-only use of a path that can never be a journal fails the same way (not "empty")
    with pytest.raises(JournalUnavailable, match="is not a directory"):
        read_snapshot(tmp_path / "afile" / "j.sqlite3")
    with pytest.raises(JournalUnavailable, match="is a directory"):
        read_snapshot(tmp_path / "adir")
    assert not (tmp_path / "afile" / "cache").exists()


def test_not_a_journal_file(tmp_path) -> None:
    p = tmp_path / "j.sqlite3"
    p.write_bytes(os.urandom(8192))
    with pytest.raises(JournalUnavailable, match="not a palyra journal"):
        open_journal(p)


def test_constraint_errors_stay_sqlite_errors(tmp_path) -> None:
    """Only environmental codes are translated: callers catch IntegrityError (the dedupe key)."""
    j = open_journal(tmp_path / "j.sqlite3")
    with pytest.raises(sqlite3.IntegrityError), j.transaction() as c:
        c.execute("INSERT INTO journal_meta VALUES ('lineage', 'again')")
    assert not j.conn.in_transaction and j.fault is None
    j.close()
