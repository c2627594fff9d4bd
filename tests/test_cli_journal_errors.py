"""Every command that takes a journal gives one line and exit 1 for a journal it cannot use
(issue 9, points 12 and 13): a URL that is not PostgreSQL's, a PostgreSQL server that is not there, a
file as parent directory, a directory as journal, /proc, a busy journal — never a traceback, and
nothing created.

The real CLI in a subprocess (`python -m palyra_ops`), as an operator runs it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, free_port
from gitops_helpers import routine_yaml, write

from palyra_ops.journal import open_journal, read_snapshot

#: every command that takes --journal, with what else it needs
COMMANDS = {
    "plan": ["plan", "--dir", "{dir}"],
    "apply": ["apply", "--dir", "{dir}", "--auto-approve"],
    "status": ["status", "--dir", "{dir}", "--url", "http://127.0.0.1:9"],
    "daemon": ["daemon", "--dir", "{dir}", "--listen", "127.0.0.1:{port}"],
    "memory list": ["memory", "list"],
    "memory add": ["memory", "add", "note"],
    "memory stats": ["memory", "stats"],
}


def run_cli(args: list[str], tmp: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PALYRA_")}
    full.update({"PALYRA_STATE_ROOT": str(tmp / "state"), "PYTHONPATH": str(REPO), "NO_COLOR": "1"})
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "palyra_ops", *args], cwd=tmp, env=full, capture_output=True,
                          text=True, timeout=timeout)


def command(name: str, tmp: Path) -> list[str]:
    return [a.format(dir=tmp / "routines.d", port=free_port()) for a in COMMANDS[name]]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "routines.d"
    d.mkdir()
    write(d, "a.yaml", routine_yaml("a"))
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "adir").mkdir()
    return tmp_path


def snapshot_tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_one_line_error(out: subprocess.CompletedProcess[str], expected: str) -> None:
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("palyra-ops: ") and expected in lines[0], lines[0]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_an_unreachable_postgresql_journal_is_one_line_for_every_command(workdir, name) -> None:
    """The URL is taken for PostgreSQL (not a relative path), the password never shown, and nothing
    created but the daemon's own lock in its state root."""
    url = f"postgresql://ops:s3cret@127.0.0.1:{free_port()}/palyra"
    shown = url.replace(":s3cret@", ":***@")
    why = "cannot reach the database"  # memory commands too: memory items live in the PostgreSQL journal
    before = snapshot_tree(workdir)
    out = run_cli([*command(name, workdir), "--journal", url], workdir)
    assert_one_line_error(out, f"journal {shown}: {why}")
    via_env = run_cli(command(name, workdir), workdir, env={"PALYRA_JOURNAL": url})
    assert_one_line_error(via_env, f"journal {shown}: {why}")
    assert "s3cret" not in out.stderr + via_env.stderr
    after = snapshot_tree(workdir)
    if name == "daemon":
        after = {p for p in after if not p.startswith("state")}
    assert after == before, "nothing may be created (no 'postgresql:' directory)"


def test_other_url_shapes_are_refused_too(workdir) -> None:
    for url in ("sqlite:///tmp/j.sqlite3", "file:journal.sqlite3", "mysql://db/x"):
        out = run_cli(["apply", "--dir", str(workdir / "routines.d"), "--auto-approve", "--journal", url], workdir)
        assert_one_line_error(out, f"journal {url}: looks like a ")
    assert not (workdir / "state").exists()


def test_a_postgresql_url_in_the_daemon_config_file_is_taken_as_it_is(workdir) -> None:
    cfg = workdir / "palyra.yaml"
    cfg.write_text(f"journal: postgresql://ops@127.0.0.1:{free_port()}/palyra\n", encoding="utf-8")
    out = run_cli(["daemon", "--config", str(cfg), "--listen", f"127.0.0.1:{free_port()}"], workdir)
    assert_one_line_error(out, "cannot reach the database")
    assert not (workdir / "postgresql:").exists()


BAD_PATHS = {
    "parent is a file": ("afile/journal.sqlite3", "afile is not a directory"),
    "journal is a directory": ("adir", "is a directory, not a journal file"),
    "under /proc": ("/proc/palyra-journal.sqlite3", "journal /proc/palyra-journal.sqlite3: cannot be created in /proc"),
}


@pytest.mark.parametrize("case", list(BAD_PATHS))
@pytest.mark.parametrize("name", ["apply", "daemon", "memory add"])
def test_a_journal_that_cannot_be_opened_is_one_line_for_writing_commands(workdir, name, case) -> None:
    rel, expected = BAD_PATHS[case]
    path = rel if rel.startswith("/") else str(workdir / rel)
    out = run_cli([*command(name, workdir), "--journal", path], workdir)
    assert_one_line_error(out, expected)
    assert not (workdir / "afile").is_dir() and (workdir / "afile").read_text() == "not a directory\n"
    assert list((workdir / "adir").iterdir()) == []


@pytest.mark.parametrize("name", ["plan", "status", "memory list", "memory stats"])
def test_read_commands_refuse_a_path_that_can_never_be_a_journal(workdir, name) -> None:
    for case in ("parent is a file", "journal is a directory"):
        rel, expected = BAD_PATHS[case]
        if name.startswith("memory") and case == "parent is a file":
            expected = "no journal at "  # memory's read commands need an existing journal anyway
        before = snapshot_tree(workdir)
        out = run_cli([*command(name, workdir), "--journal", str(workdir / rel)], workdir)
        assert_one_line_error(out, expected)
        assert snapshot_tree(workdir) == before, "a read-only command never creates a file"


def hold_write_lock(path: Path) -> tuple[threading.Thread, threading.Event]:
    """Another connection holding the write lock (as an apply or a daemon would) until released."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        c = sqlite3.connect(str(path), isolation_level=None)
        c.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(120)
        c.execute("ROLLBACK")
        c.close()

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert held.wait(10)
    return t, release


def test_apply_on_a_busy_journal_says_it_is_busy_and_how_long_it_waited(workdir) -> None:
    journal = workdir / "state" / "journal.sqlite3"
    open_journal(journal).close()
    before = read_snapshot(journal)
    holder, release = hold_write_lock(journal)
    t0 = time.monotonic()
    try:
        out = run_cli(["apply", "--dir", str(workdir / "routines.d"), "--auto-approve", "--journal", str(journal)],
                      workdir, env={"PALYRA_JOURNAL_BUSY_TIMEOUT": "1s"})
    finally:
        release.set()
    assert time.monotonic() - t0 < 25, "the configured wait, not SQLite's 30 s default"
    assert_one_line_error(out, f"journal {journal} is busy: another process held its write lock for 1.")
    assert "(an apply or a daemon?)" in out.stderr
    holder.join()
    after = read_snapshot(journal)
    assert (after.serial, after.resources) == (before.serial, before.resources)
