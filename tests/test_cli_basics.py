"""CLI basics of issue 9 point 18: a mistyped --dir, `status --detailed-exitcode`, `--version`, no `None`
in status, a fast `--help`, and the daemon's one log line per finished run."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from gitops_helpers import routine_yaml, write

from palyra_ops import __version__
from palyra_ops.cli import COMMANDS, SUMMARIES, build_parser, main
from palyra_ops.views.status_text import daemon_lines as _daemon_lines

HEAVY = ("numpy", "sqlite_utils", "hnswlib", "wasmtime", "uvicorn", "starlette", "cryptography", "watchdog")


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "palyra_ops", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("command", ["plan", "status", "apply"])
def test_a_mistyped_dir_is_an_error_not_no_changes(tmp_path: Path, command: str) -> None:
    state = tmp_path / "state"
    extra = ["--auto-approve"] if command == "apply" else []
    out = run_cli(command, "--dir", str(tmp_path / "routnes.d"), *extra, env={"PALYRA_STATE_ROOT": str(state)})
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == f"palyra-ops: routine directory {tmp_path / 'routnes.d'} does not exist (pass --dir DIR)\n"
    assert not state.exists()


def test_mistyped_dir_with_a_populated_journal_does_not_plan_deletes(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PALYRA_STATE_ROOT", str(tmp_path / "state"))
    d = tmp_path / "routines.d"
    write(d, "a.yaml", routine_yaml("alpha"))
    j = str(tmp_path / "state" / "journal.sqlite3")
    assert main(["apply", "--dir", str(d), "--journal", j, "--auto-approve"]) == 0
    capsys.readouterr()
    for args in (["plan", "--allow-empty"], ["status"]):
        assert main([*args, "--dir", str(tmp_path / "routines"), "--journal", j]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err == f"palyra-ops: routine directory {tmp_path / 'routines'} does not exist (pass --dir DIR)\n"


def test_status_detailed_exitcode(tmp_path: Path, capsys, monkeypatch) -> None:
    """SPEC §7: 0 Synced, 2 OutOfSync, 1 Invalid or error."""
    monkeypatch.setenv("PALYRA_STATE_ROOT", str(tmp_path / "state"))
    monkeypatch.setenv("PALYRA_URL", "http://127.0.0.1:9")
    d = tmp_path / "routines.d"
    write(d, "a.yaml", routine_yaml("alpha"))
    j = str(tmp_path / "state" / "journal.sqlite3")
    status = ["status", "--dir", str(d), "--journal", j, "--detailed-exitcode"]
    assert main(status) == 2  # nothing applied yet
    assert capsys.readouterr().out.startswith("State: OutOfSync")
    assert main(["status", "--dir", str(d), "--journal", j]) == 0  # without the flag: 0
    capsys.readouterr()
    assert main(["apply", "--dir", str(d), "--journal", j, "--auto-approve"]) == 0
    capsys.readouterr()
    assert main(status) == 0
    assert capsys.readouterr().out.startswith("State: Synced")
    assert main([*status, "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "Synced"
    write(d, "a.yaml", routine_yaml("alpha", prompt="changed"))
    assert main(status) == 2
    capsys.readouterr()
    write(d, "b.yaml", "apiVersion: palyra/v1\nkind: Routine\nmetadata: {name: Bad Name}\nspec: {}\n")
    assert main(status) == 1
    assert capsys.readouterr().out.startswith("State: Invalid")
    assert main([*status, "--output", "json"]) == 1
    assert main([*status[:2], str(tmp_path / "nope"), *status[3:]]) == 1  # an error is 1 too


def test_version() -> None:
    for args in (["--version"], ["cron", "status", "--version"], ["plan", "--version"]):
        out = run_cli(*args)
        assert (out.returncode, out.stdout, out.stderr) == (0, f"palyra-ops {__version__}\n", "")


def _modules_after(*argv: str) -> set[str]:
    code = ("import sys, json\nfrom palyra_ops.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_help_imports_nothing_heavy_and_no_more_than_validate() -> None:
    """`--help` used to import every command module (numpy, wasmtime, uvicorn, ...): slower than validate."""
    help_mods = _modules_after("--help")
    assert not help_mods & set(HEAVY), sorted(help_mods & set(HEAVY))
    validate_mods = _modules_after("validate", str(REPO / "routines.d"))
    assert help_mods - validate_mods == set()
    assert run_cli("--help").stdout.startswith("usage: palyra-ops [-h] [--version] COMMAND ...")


def test_help_summaries_are_the_commands_own_help() -> None:
    """The fast top-level help lists every command with the help its module registers."""
    assert set(SUMMARIES) == set(COMMANDS)
    for name in COMMANDS:
        parser = build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        helps = {c.dest: c.help for c in sub._choices_actions}
        assert helps[name] == SUMMARIES[name], name


def test_status_never_prints_none() -> None:
    lines = _daemon_lines({"reachable": True, "url": "http://127.0.0.1:1",
                           "scheduler": {"last_tick_at": None, "due_backlog": None, "running_count": None,
                                         "next_due_at": None},
                           "tasks": {"memory.backfill": {"last_run_at": "2026-01-01T00:00:00+00:00", "outcome": None,
                                                         "duration_ms": None, "next_run_at": None}}})
    assert not any("None" in line for line in lines), lines
    assert lines[1] == "  scheduler: last tick not yet, due backlog 0, running 0, next due nothing scheduled"
    assert _daemon_lines({"reachable": False}) == ["Daemon: not reachable (—)"]


def test_status_against_a_fresh_daemon_prints_no_none(daemon, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PALYRA_STATE_ROOT", str(daemon.paths.state_root))
    assert main(["status", "--dir", str(daemon.paths.dir), "--journal", str(daemon.paths.journal),
                 "--url", daemon.base_url]) == 0
    out = capsys.readouterr().out
    assert f"Daemon: up at {daemon.base_url}" in out and "None" not in out, out


def test_the_daemon_logs_one_line_per_finished_run(daemon_factory) -> None:
    d = daemon_factory()
    d.write("r.yaml", [
        {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "ok"},
         "spec": {"prompt": "p", "trigger": {"kind": "manual"}}},
        {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "broken", "labels": {"echo-fail": "always"}},
         "spec": {"prompt": "p", "trigger": {"kind": "manual"}, "policies": {"retry": {"max_attempts": 2, "backoff": "100ms"}}}},
        {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "off"},
         "spec": {"enabled": False, "prompt": "p", "trigger": {"kind": "manual"}}},
    ])
    d.apply()
    c = d.client()
    for name in ("ok", "broken", "off"):
        assert c.post("/console/v1/routines/dispatch", json={"routine_id": name}).status_code == 202
    final = ("succeeded", "failed", "skipped")
    d.wait_for(lambda: len([r for r in d.runs() if r["status"] in final]) == 4, timeout=30, what="four finished runs")
    runs = d.runs()
    pattern = re.compile(r"run finished: routine=(\S+) run=(\S+) status=(\S+) attempt=(\d+) duration=(\S+) reason=(.*)$")

    def logged() -> list[tuple[str, ...]]:
        return [m.groups() for line in d.log().splitlines() if (m := pattern.search(line))]

    d.wait_for(lambda: len(logged()) == 4, timeout=30, what="four log lines")
    got = sorted(logged(), key=lambda g: g[1])
    assert [(g[0], g[1], g[2], g[3]) for g in got] == sorted(
        ((r["routine_id"], r["run_id"], r["status"], str(r["attempt"])) for r in runs), key=lambda g: g[1])
    for _routine, run_id, status, _attempt, took, reason in got:
        row = next(r for r in runs if r["run_id"] == run_id)
        assert reason == (json.dumps(row["reason"]) if row["reason"] else "-")
        assert took == ("-" if status == "skipped" else f"{row['finished_at_ms'] - row['started_at_ms']}ms")
