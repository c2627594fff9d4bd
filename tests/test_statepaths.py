"""`StatePaths`: the state root and the journal resolved once (SPEC §4), and the layout below them.

The files' owners compute their own names from the root or the journal; these tests hold the two
views to each other, so a move on either side is caught here rather than as a lost token or cache.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import palyra_ops
from palyra_ops.errors import JournalUnsupported
from palyra_ops.statepaths import StatePaths, default_root


def test_root_from_palyra_state_root_then_xdg_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_root({"PALYRA_STATE_ROOT": "/srv/p", "XDG_STATE_HOME": "/x"}) == Path("/srv/p")
    assert default_root({"XDG_STATE_HOME": "/x"}) == Path("/x/palyra")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_root({}) == tmp_path / ".local" / "state" / "palyra"


def test_journal_from_flag_then_palyra_journal_then_the_root() -> None:
    env = {"PALYRA_STATE_ROOT": "/srv/p", "PALYRA_JOURNAL": "/data/j.sqlite3"}
    assert StatePaths.resolve(journal=Path("/flag/j.sqlite3"), env=env).journal == Path("/flag/j.sqlite3")
    assert StatePaths.resolve(env=env).journal == Path("/data/j.sqlite3")
    assert StatePaths.resolve(env={"PALYRA_STATE_ROOT": "/srv/p"}).journal == Path("/srv/p/journal.sqlite3")
    assert StatePaths.resolve(root=Path("/cfg"), env=env).root == Path("/cfg")  # a config file's state_root wins


def test_a_journal_url_is_refused_only_where_the_journal_is_used() -> None:
    paths = StatePaths.resolve(env={"PALYRA_STATE_ROOT": "/srv/p", "PALYRA_JOURNAL": "postgresql://db/palyra"})
    assert paths.token == Path("/srv/p/token")  # `skills`, `token` still work
    with pytest.raises(JournalUnsupported, match="PostgreSQL journals are not supported yet"):
        paths.journal  # noqa: B018


def test_layout_agrees_with_each_files_owner(tmp_path: Path) -> None:
    from palyra_ops.client import DISCOVERY_FILE
    from palyra_ops.journal import DaemonLock
    from palyra_ops.memory.index import index_path_for
    from palyra_ops.reconcile import cache_dir_for
    from palyra_ops.skillrefs import INDEX
    from palyra_ops.skills.sandbox import default_cache_dir
    from palyra_ops.skills.store import SkillStore

    paths = StatePaths.resolve(root=tmp_path / "state", journal=tmp_path / "elsewhere" / "j.sqlite3", env={})
    assert paths.discovery == paths.root / DISCOVERY_FILE
    assert paths.daemon_lock == DaemonLock(paths.journal).path
    assert paths.memory_index == index_path_for(paths.journal)
    assert paths.source_cache == cache_dir_for(paths.journal)
    assert paths.skills_index == paths.root / INDEX == SkillStore(paths.root).index_path
    assert paths.skill_cache == default_cache_dir(paths.root)


def test_nothing_below_the_cli_imports_the_cli() -> None:
    """The layout runs source → … → server → cli; `daemon` and `client` used to reach back up for
    the state root."""
    root = Path(palyra_ops.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.is_relative_to(root / "cli") or path.name == "__main__.py":  # `python -m palyra_ops` is the CLI
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n == "palyra_ops.cli" or n.startswith("palyra_ops.cli.") for n in names):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
