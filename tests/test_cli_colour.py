"""Issue 12 (CLI habits): colour follows NO_COLOR (https://no-color.org) and FORCE_COLOR
(https://force-color.org) in real CLI runs — piped, and on a real terminal (a pty)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from gitops_helpers import routine_yaml, write

ESC = "\x1b["
BASE = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM")}


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    d = tmp_path / "routines.d"
    write(d, "a.yaml", routine_yaml("alpha"))
    write(tmp_path / "bad", "b.yaml", "apiVersion: palyra/v1\nkind: Routine\nmetadata: {name: Bad Name}\nspec: {}\n")
    env = {**BASE, "PALYRA_STATE_ROOT": str(tmp_path / "state"), "PYTHONPATH": str(REPO), "TERM": "xterm"}
    return tmp_path, env


def _piped(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "palyra_ops", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def _on_a_tty(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI with stdout on a pseudo-terminal, as in an interactive shell."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "palyra_ops", *args], cwd=cwd, env=env, stdout=follower,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    os.close(follower)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 120)
            assert ready, "no output from the CLI within 120 s"
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    return proc.wait(timeout=120), b"".join(chunks).decode()


PLAN = ["plan", "--dir", "routines.d", "--journal", "state/journal.sqlite3"]


def test_piped_output_is_plain_unless_force_color(project: tuple[Path, dict[str, str]]) -> None:
    cwd, env = project
    plain = _piped(PLAN, cwd, env)
    assert plain.returncode == 0 and 'routine "alpha"' in plain.stdout and ESC not in plain.stdout
    forced = _piped(PLAN, cwd, {**env, "FORCE_COLOR": "1"})
    assert forced.returncode == 0 and '\x1b[32m  + routine "alpha"\x1b[0m' in forced.stdout
    for name, drop in (("FORCE_COLOR", "0"), ("FORCE_COLOR", "")):
        assert ESC not in _piped(PLAN, cwd, {**env, name: drop}).stdout, (name, drop)
    # NO_COLOR wins over FORCE_COLOR: who asked for no colour never gets escape codes
    both = _piped(PLAN, cwd, {**env, "FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert both.returncode == 0 and ESC not in both.stdout
    # the colour is only escape codes around the same text
    assert forced.stdout.replace("\x1b[32m", "").replace("\x1b[1m", "").replace("\x1b[0m", "") == plain.stdout


def test_validate_errors_coloured_only_when_forced(project: tuple[Path, dict[str, str]]) -> None:
    cwd, env = project
    plain = _piped(["validate", "bad"], cwd, env)
    forced = _piped(["validate", "bad"], cwd, {**env, "FORCE_COLOR": "1"})
    assert plain.returncode == forced.returncode == 1
    assert "Bad Name" in plain.stdout + plain.stderr
    assert ESC not in plain.stdout + plain.stderr and "\x1b[31m" in forced.stdout + forced.stderr
    assert ESC not in "".join(_piped(["validate", "bad"], cwd, {**env, "FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout)


def test_terminal_colours_unless_no_color(project: tuple[Path, dict[str, str]]) -> None:
    cwd, env = project
    code, out = _on_a_tty(PLAN, cwd, env)
    assert code == 0 and "\x1b[32m" in out and 'routine "alpha"' in out
    code, out = _on_a_tty(PLAN, cwd, {**env, "NO_COLOR": "1"})
    assert code == 0 and 'routine "alpha"' in out and ESC not in out
    code, out = _on_a_tty(PLAN, cwd, {**env, "TERM": "dumb"})
    assert code == 0 and 'routine "alpha"' in out and ESC not in out
