"""A directory checked on two cores (`source.parallel`) says exactly what one process says.

The CLI's plan, apply and forecast check a large directory in this process and a forked child;
here the size threshold is lowered so small directories take that path, and every output (plan
text and JSON, diagnostics with file:line:column, the journal rows apply writes, the forecast) is
compared with the one-process run.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

import palyra_ops.cli.plan_cmd as plan_cmd
import palyra_ops.source.directory as directory
from palyra_ops.cli import main
from palyra_ops.source import load_directory, parallel
from palyra_ops.source.parallel import run_split

ROUTINE = """apiVersion: palyra/v1
kind: Routine
metadata: {{name: {name}}}
spec:
  prompt: Check {name}
  trigger: {{kind: schedule, schedule: {{cron: "{minute} 9 * * *", timezone: Europe/Prague}}}}
  policies: {{jitter: 30s}}
  delivery: {{mode: specific_channel, channel: ops}}
"""
CHANNEL = "apiVersion: palyra/v1\nkind: Channel\nmetadata: {name: ops}\nspec: {type: log}\n"


def _fleet(root: Path, files: int = 12, per: int = 5) -> None:
    root.mkdir()
    (root / "channels.yaml").write_text(CHANNEL)
    for f in range(files):
        docs = [ROUTINE.format(name=f"r-{f:02d}-{i}", minute=(f * per + i) % 60) for i in range(per)]
        (root / f"team-{f:02d}.yaml").write_text("---\n".join(docs))


def _broken(root: Path) -> None:
    (root / "team-03.yaml").write_text("apiVersion: palyra/v1\nkind: Routine\nmetadata: {name: [x\n")
    (root / "team-07.yaml").write_text(ROUTINE.format(name="r-00-1", minute=5).replace("jitter: 30s", "jitter: soon"))
    (root / "team-09.yaml").write_text(ROUTINE.format(name="r-00-2", minute=7).replace("channel: ops", "channel: nope"))


@pytest.fixture()
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    monkeypatch.setattr(directory, "usable_cores", lambda: 2)


def _no_fork(*_: object) -> list[object]:
    raise AssertionError("a warm directory is loaded in one process")


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _both(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]) -> list[tuple[int, str, str]]:
    got = []
    for workers in (1, 2):
        monkeypatch.setattr(plan_cmd, "CHECK_WORKERS", workers)
        got.append(_cli(args, capsys))
    return got


def test_run_split_returns_every_result_in_order() -> None:
    parent = os.getpid()
    got = run_split(40, lambda i: (i * i, os.getpid() == parent))
    assert [v for v, _ in got] == [i * i for i in range(40)]


def test_a_child_that_fails_is_replaced_by_the_parent() -> None:
    parent = os.getpid()

    def work(i: int) -> int:
        if os.getpid() != parent:
            raise RuntimeError("the child breaks")
        return i + 1

    assert run_split(25, work) == list(range(1, 26))


@pytest.mark.usefixtures("two_cores")
def test_load_directory_same_documents_and_findings(tmp_path: Path) -> None:
    root = tmp_path / "routines.d"
    _fleet(root)
    _broken(root)
    one = load_directory(root, display_root="routines.d")
    two = load_directory(root, display_root="routines.d", workers=2)
    assert one.diagnostics and [d.format() for d in two.diagnostics] == [d.format() for d in one.diagnostics]
    assert [(d.source_line, d.code) for d in two.diagnostics] == [(d.source_line, d.code) for d in one.diagnostics]
    assert two.documents == one.documents and two.files == one.files


@pytest.mark.usefixtures("two_cores")
def test_plan_and_apply_are_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "routines.d"
    _fleet(root)
    monkeypatch.setenv("NO_COLOR", "1")
    for output in ("text", "json"):
        one, two = _both(monkeypatch, capsys, ["plan", "--dir", str(root), "--journal", str(tmp_path / "p.sqlite3"),
                                               "--output", output])
        if output == "json":  # the one field that is the time of day
            one, two = ((c, json.dumps({**json.loads(o), "created_at": ""}), e) for c, o, e in (one, two))
        assert one == two and one[0] == 0 and "r-11-4" in one[1]
    rows = []
    for workers in (1, 2):
        monkeypatch.setattr(plan_cmd, "CHECK_WORKERS", workers)
        journal = tmp_path / f"j{workers}" / "journal.sqlite3"
        code, out, _ = _cli(["apply", "--dir", str(root), "--journal", str(journal), "--auto-approve",
                             "--output", "json"], capsys)
        assert code == 0 and json.loads(out)["added"] == 61
        with sqlite3.connect(journal) as db:
            rows.append(db.execute("SELECT kind, name, body, hash, applied_hash, managed, source_file"
                                   " FROM journal_resources ORDER BY 1, 2").fetchall())
        with monkeypatch.context() as m:  # warm (the source cache has the files): one process is enough
            m.setattr(directory, "run_split", _no_fork)
            code, out, _ = _cli(["plan", "--dir", str(root), "--journal", str(journal)], capsys)
        assert code == 0 and "No changes" in out
    assert rows[0] == rows[1] and len(rows[0]) == 61


@pytest.mark.usefixtures("two_cores")
def test_invalid_directory_same_diagnostics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "routines.d"
    _fleet(root)
    _broken(root)
    monkeypatch.chdir(tmp_path)
    for cmd in (["plan"], ["apply", "--auto-approve"], ["forecast", "--from", "2026-12-04T00:00:00Z"]):
        one, two = _both(monkeypatch, capsys, [*cmd, "--dir", "routines.d", "--journal", str(tmp_path / "j.sqlite3")]
                         if cmd[0] != "forecast" else [*cmd, "--dir", "routines.d"])
        assert one == two and one[0] == 1
        assert "routines.d/team-03.yaml:4:1: YAML syntax error" in one[2] and "routines.d/team-07.yaml:" in one[2]


@pytest.mark.usefixtures("two_cores")
def test_forecast_is_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "routines.d"
    _fleet(root)
    for output in ("text", "json"):
        one, two = _both(monkeypatch, capsys, ["forecast", "--dir", str(root), "--from", "2026-12-04T00:00:00Z",
                                               "--output", output])
        assert one == two and one[0] == 0
    assert json.loads(one[1])["summary"]["runs"] == 60
