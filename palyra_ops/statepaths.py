"""Where palyra-ops keeps its state: one value built once from the flags and the environment.

The state root (SPEC §4: `$PALYRA_STATE_ROOT`, else `$XDG_STATE_HOME/palyra`, else
`~/.local/state/palyra`) holds the API token, the daemon's discovery file, installed skills and file
deliveries; the journal (`--journal`, else `$PALYRA_JOURNAL`, else `<root>/journal.sqlite3`) has its
caches, memory index and lock files beside it, so a journal moved elsewhere takes them along.

The CLI resolves this once per command and hands it down (to the daemon, the console client, the
skill store); nothing below the CLI reads `PALYRA_STATE_ROOT` on its own, except the client's search
for a running daemon, which asks `default_root` when it has been given no root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

JOURNAL_FILE = "journal.sqlite3"
TOKEN_FILE = "token"
#: written by a running daemon into its state root: how the CLI finds it (docs/daemon.md)
DISCOVERY_FILE = "daemon.json"


def default_root(env: Mapping[str, str] | None = None) -> Path:
    """$PALYRA_STATE_ROOT, else $XDG_STATE_HOME/palyra, else ~/.local/state/palyra (SPEC §4)."""
    env = os.environ if env is None else env
    if env.get("PALYRA_STATE_ROOT"):
        return Path(env["PALYRA_STATE_ROOT"])
    xdg = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "palyra"


@dataclass(frozen=True)
class StatePaths:
    """Every file location of one state root and one journal.

    The properties name what lives where; the owners of those files (`DaemonLock`, `MemoryService`,
    `reconcile.cache_dir_for`, `SkillStore`) compute the same names from the journal or the root,
    and tests/test_statepaths.py holds the two views to each other.
    """

    root: Path
    #: the journal as given (flag, config, `$PALYRA_JOURNAL`) or defaulted; checked by `journal`
    journal_location: str

    @classmethod
    def resolve(
        cls,
        *,
        root: Path | None = None,
        journal: Path | str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> StatePaths:
        """From the flags (or a config file's `state_root`/`journal`), falling back to the
        environment."""
        env = os.environ if env is None else env
        base = Path(root) if root is not None else default_root(env)
        where = journal if journal is not None else env.get("PALYRA_JOURNAL") or base / JOURNAL_FILE
        return cls(root=base, journal_location=os.fspath(where))

    @property
    def journal(self) -> Path:
        """The journal file. A URL is refused (`JournalUnsupported`) when a command first needs the
        journal, before anything is created beside it; commands that never touch it (`skills`,
        `token`) are not failed by a `$PALYRA_JOURNAL` meant for another backend."""
        from palyra_ops.journal.faults import check_location

        return check_location(self.journal_location)

    # -- under the state root ------------------------------------------------------------------

    @property
    def token(self) -> Path:
        return self.root / TOKEN_FILE

    @property
    def discovery(self) -> Path:
        return self.root / DISCOVERY_FILE

    @property
    def skills(self) -> Path:
        return self.root / "skills"

    @property
    def skills_index(self) -> Path:
        return self.skills / "index.json"

    @property
    def skill_cache(self) -> Path:
        """Compiled WASM modules of the daemon and `skills run`."""
        return self.skills / "cache"

    @property
    def deliveries(self) -> Path:
        """Default root of `file` channel targets."""
        return self.root / "deliveries"

    # -- beside the journal --------------------------------------------------------------------

    @property
    def caches(self) -> Path:
        return self.journal.parent / "cache"

    @property
    def source_cache(self) -> Path:
        """Parsed and validated routine files, keyed by content hash."""
        return self.caches / "source"

    @property
    def memory_index(self) -> Path:
        return Path(f"{self.journal}.memory.hnsw")

    @property
    def daemon_lock(self) -> Path:
        """One daemon per SQLite journal (SPEC §11)."""
        return Path(f"{self.journal}.lock")

    @property
    def memory_lock(self) -> Path:
        return Path(f"{self.journal}.memory.lock")


__all__ = ["DISCOVERY_FILE", "JOURNAL_FILE", "TOKEN_FILE", "StatePaths", "default_root"]
