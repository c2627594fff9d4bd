"""Where palyra-ops keeps its state (SPEC §4), as one value built once from the environment and flags.

The state root and the journal used to be looked up by a CLI helper that the daemon and the client
imported back up through the layers; now the CLI (or any library caller) builds a `StatePaths` from
`--journal`/the config file and the environment, and hands it down. Every file under the state root
and beside the journal is named here, so "what does palyra-ops write where" has one answer;
`tests/test_statepaths.py` checks the owners of those files (skills store, memory index, journal
lock, source cache) still agree with it.

The journal location is kept as given and checked when it is used (`journal`): commands that only
need the state root (`token`, `skills`) must not fail because `$PALYRA_JOURNAL` holds a URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from palyra_ops.stateroot import default_root

JOURNAL_FILE = "journal.sqlite3"
TOKEN_FILE = "token"
#: written by a running daemon into its state root: how the CLI finds it (docs/daemon.md)
DISCOVERY_FILE = "daemon.json"


@dataclass(frozen=True)
class StatePaths:
    root: Path
    journal_location: str | os.PathLike[str]

    @classmethod
    def from_env(
        cls,
        *,
        root: Path | None = None,
        journal: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> StatePaths:
        """`root`/`journal` as given (flags, config file), else the environment: the journal is
        `--journal`, else $PALYRA_JOURNAL, else `<root>/journal.sqlite3` (the same for every command)."""
        env = os.environ if env is None else env
        base = Path(root) if root is not None else default_root(env)
        location = journal if journal is not None else env.get("PALYRA_JOURNAL") or base / JOURNAL_FILE
        return cls(base, location)

    # -- the journal and what lives beside it ------------------------------------------------------

    @property
    def journal(self) -> Path | str:
        """The journal: a SQLite file's path, or a `postgresql://` URL as text (SPEC §4). Any other
        URL shape is refused here (JournalUnsupported, one line)."""
        from palyra_ops.journal.faults import journal_location

        return journal_location(self.journal_location)

    @property
    def is_postgres(self) -> bool:
        from palyra_ops.journal.faults import is_postgres_url

        return is_postgres_url(self.journal_location)

    @property
    def side_base(self) -> Path:
        """What the side files below are named after: the SQLite file, or for a PostgreSQL journal a
        name under the state root (`journal.faults.side_path`), never a directory called `postgresql:`."""
        from palyra_ops.journal.faults import side_base

        return side_base(self.journal, self.root)

    @property
    def daemon_lock(self) -> Path:
        """One daemon per journal (`journal/lock.py`); on PostgreSQL, one per journal and state root."""
        return Path(f"{self.side_base}.lock")

    @property
    def memory_lock(self) -> Path:
        return Path(f"{self.side_base}.memory.lock")

    @property
    def memory_index(self) -> Path:
        """The hnswlib index (a rebuildable cache) and its `.json` sidecar beside it."""
        return Path(f"{self.side_base}.memory.hnsw")

    @property
    def source_cache(self) -> Path:
        """Parsed + validated routine files and canonical hashes, keyed by content hash."""
        return self.side_base.parent / "cache" / "source"

    # -- under the state root ----------------------------------------------------------------------

    @property
    def token(self) -> Path:
        return self.root / TOKEN_FILE

    @property
    def discovery(self) -> Path:
        return self.root / DISCOVERY_FILE

    @property
    def deliveries(self) -> Path:
        """The default `file` channel root (`delivery.file_root`)."""
        return self.root / "deliveries"

    @property
    def skills(self) -> Path:
        return self.root / "skills"

    @property
    def skills_index(self) -> Path:
        return self.skills / "index.json"

    @property
    def skills_lock(self) -> Path:
        return self.skills / ".lock"

    @property
    def skills_cache(self) -> Path:
        """Compiled WASM modules."""
        return self.skills / "cache"

    @property
    def trust_store(self) -> Path:
        return self.skills / "trust.json"


__all__ = ["DISCOVERY_FILE", "JOURNAL_FILE", "TOKEN_FILE", "StatePaths", "default_root"]
