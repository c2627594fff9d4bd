"""The journal is a typed seam: SQL and driver types stay inside `palyra_ops/journal/`.

These guard the shape the HA work relies on (SPEC §4, §11): callers speak to a `JournalStore` in
records and opaque transactions, so the PostgreSQL store can stand in for the SQLite one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from palyra_ops.journal import JournalStore, Txn, open_journal
from palyra_ops.journal.sqlite_conn import SQLiteTxn

PKG = Path(__file__).resolve().parent.parent / "palyra_ops"


def test_no_driver_types_outside_the_journal() -> None:
    """No `sqlite3` (or psycopg) outside journal/. memory/ is the exception on record: its service
    keeps SQLite connections of its own for the memory index (docs/ha.md)."""
    offenders = []
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).as_posix()
        if rel.startswith(("journal/", "memory/")):
            continue
        text = p.read_text(encoding="utf-8")
        if re.search(r"^\s*(import|from)\s+(sqlite3|psycopg)\b", text, re.M) or "sqlite3.Connection" in text:
            offenders.append(rel)
    assert offenders == []


def test_journal_modules_stay_under_600_lines() -> None:
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in (PKG / "journal").glob("*.py")}
    assert {n: s for n, s in sizes.items() if s >= 600} == {}


def test_transactions_yield_the_store_s_own_opaque_handle(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j.sqlite3") as j:
        with j.transaction() as c:
            assert isinstance(c, Txn) and isinstance(c, SQLiteTxn)
            j.put_job(c, "a", trigger_kind="manual")
        # records are plain dicts: they go to JSON as they are
        job = j.get_job("a")
        assert job is not None and json.loads(json.dumps(job))["routine_id"] == "a"


def test_the_sqlite_store_satisfies_the_protocol(tmp_path: Path) -> None:
    """Every method the Protocol names exists on the store with the same parameters."""
    import inspect

    with open_journal(tmp_path / "j.sqlite3") as j:
        for name, member in inspect.getmembers(JournalStore):
            if name.startswith("_") or not callable(member):
                continue
            impl = getattr(j, name)
            want = list(inspect.signature(member).parameters)[1:]
            assert list(inspect.signature(impl).parameters) == want, name
