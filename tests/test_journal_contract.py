"""The journal contract (tests/journal_contract.py) on every store.

`journal_factory` opens handles on one fresh journal per test: a SQLite file in the test's temp dir,
or a fresh database on the session's throwaway PostgreSQL cluster (tests/pgcluster.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from journal_contract import *  # noqa: F403 - the contract's tests, collected here
from journal_contract_handover import *  # noqa: F403 - its second part (runs handed between daemons)
from journal_contract_runpath import *  # noqa: F403 - its third part (the run path's combined reads and writes)

from palyra_ops.journal import JournalStore, open_journal


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., JournalStore]]:
    opened: list[JournalStore] = []
    if request.param == "postgresql":
        location: str = request.getfixturevalue("pg_url")
    else:
        location = str(tmp_path / "journal.sqlite3")

    def factory(**kw: Any) -> JournalStore:
        j = open_journal(location, **kw)
        opened.append(j)
        return j

    yield factory
    for j in opened:
        j.close()
