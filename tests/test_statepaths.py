"""StatePaths: where palyra-ops keeps its state (SPEC §4), built once and handed down from the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from palyra_ops.errors import JournalUnsupported
from palyra_ops.statepaths import StatePaths, default_root

PACKAGE = Path(__file__).resolve().parent.parent / "palyra_ops"


def test_root_from_the_environment() -> None:
    assert default_root({"PALYRA_STATE_ROOT": "/srv/p", "XDG_STATE_HOME": "/x"}) == Path("/srv/p")
    assert default_root({"XDG_STATE_HOME": "/x"}) == Path("/x/palyra")
    assert default_root({}) == Path.home() / ".local" / "state" / "palyra"


def test_journal_is_the_flag_else_the_environment_else_beside_the_root() -> None:
    env = {"PALYRA_STATE_ROOT": "/srv/p", "PALYRA_JOURNAL": "/data/j.sqlite3"}
    assert StatePaths.from_env(env=env).journal == Path("/data/j.sqlite3")
    assert StatePaths.from_env(env=env, journal=Path("/flag.sqlite3")).journal == Path("/flag.sqlite3")
    assert StatePaths.from_env(env={"PALYRA_STATE_ROOT": "/srv/p"}).journal == Path("/srv/p/journal.sqlite3")
    # a config file's state root wins over the environment's, as `daemon --config` has it
    assert StatePaths.from_env(env={"PALYRA_STATE_ROOT": "/srv/p"}, root=Path("/etc-root")).root == Path("/etc-root")


def test_a_url_journal_is_refused_only_where_the_journal_is_used() -> None:
    paths = StatePaths.from_env(env={"PALYRA_STATE_ROOT": "/srv/p", "PALYRA_JOURNAL": "mysql://db/x"})
    assert paths.token == Path("/srv/p/token")  # `token`, `skills` need no journal: they still work
    with pytest.raises(JournalUnsupported, match="looks like a mysql: URL"):
        _ = paths.journal


def test_a_postgresql_journal_is_its_url_and_its_side_files_live_under_the_state_root() -> None:
    url = "postgresql://ops:pw@db.internal:5432/palyra"
    paths = StatePaths.from_env(env={"PALYRA_STATE_ROOT": "/srv/p", "PALYRA_JOURNAL": url})
    assert paths.journal == url and paths.is_postgres
    side = paths.side_base
    assert side.parent == Path("/srv/p") and "pw" not in side.name and side.name.startswith("postgres-ops")
    assert paths.daemon_lock == Path(f"{side}.lock") and paths.memory_index == Path(f"{side}.memory.hnsw")
    assert paths.source_cache == Path("/srv/p/cache/source")
    other = StatePaths.from_env(env={"PALYRA_STATE_ROOT": "/srv/p", "PALYRA_JOURNAL": url.replace("palyra", "b")})
    assert other.side_base != side  # two databases never share side files


def test_the_files_agree_with_the_modules_that_own_them(tmp_path: Path) -> None:
    from palyra_ops import skillrefs
    from palyra_ops.client import DISCOVERY_FILE
    from palyra_ops.daemon import token_path
    from palyra_ops.journal import DaemonLock
    from palyra_ops.memory.index import index_path_for
    from palyra_ops.reconcile import cache_dir_for
    from palyra_ops.skills.sandbox import default_cache_dir
    from palyra_ops.skills.store import SkillStore
    from palyra_ops.skills.truststore import TRUST_FILE

    paths = StatePaths(tmp_path / "state", tmp_path / "data" / "j.sqlite3")
    assert paths.token == token_path(paths.root)
    assert paths.discovery == paths.root / DISCOVERY_FILE
    assert paths.skills_index == SkillStore(paths.root).index_path == paths.root / skillrefs.INDEX
    assert paths.skills_cache == default_cache_dir(paths.root)
    assert paths.trust_store == paths.skills / TRUST_FILE
    assert paths.memory_index == index_path_for(paths.journal)
    assert paths.daemon_lock == DaemonLock(paths.journal).path
    assert paths.source_cache == cache_dir_for(paths.journal)


def test_nothing_below_the_cli_imports_the_cli() -> None:
    """The layout runs source → … → server → cli; `daemon.py` and `client.py` used to import
    `cli._common.state_root` (the two arrows that ran back up)."""
    upward = re.compile(r"\bpalyra_ops\.cli\b|from palyra_ops import cli\b")
    offenders = [
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
        if "cli" not in p.relative_to(PACKAGE).parts[:1] and p.name != "__main__.py"
        and upward.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_daemon_uses_the_paths_it_is_given(tmp_path: Path) -> None:
    from palyra_ops.config import DaemonConfig
    from palyra_ops.daemon import Daemon

    paths = StatePaths(tmp_path / "root", tmp_path / "elsewhere" / "j.sqlite3")
    d = Daemon(DaemonConfig(), paths=paths)
    assert (d.state_root, d.journal_path, d.lock.path) == (paths.root, paths.journal, paths.daemon_lock)
