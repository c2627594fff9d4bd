"""`apply --auto-approve` of a large plan writes its preview from a forked child beside the journal
writes (`cli.preview_child`): the same bytes on stdout, the same rows, and nothing applied when the
preview cannot be written."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import palyra_ops.cli.plan_cmd as plan_cmd
from palyra_ops.cli import main, preview_child

ROUTINE = """apiVersion: palyra/v1
kind: Routine
metadata: {{name: {name}}}
spec:
  prompt: Check {name}
  trigger: {{kind: schedule, schedule: {{cron: "{minute} 9 * * *", timezone: Europe/Prague}}}}
"""


def _fleet(root: Path, n: int = 30) -> None:
    root.mkdir()
    (root / "a.yaml").write_text("---\n".join(ROUTINE.format(name=f"r-{i:02d}", minute=i % 60) for i in range(n)))


def _rows(journal: Path) -> list[tuple[object, ...]]:
    if not journal.exists():
        return []
    with sqlite3.connect(journal) as db:
        return db.execute("SELECT kind, name, body, hash, applied_hash, managed, source_file"
                          " FROM journal_resources ORDER BY 1, 2").fetchall()


@pytest.fixture()
def overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preview_child, "OVERLAP_MIN_CHANGES", 0)
    monkeypatch.setattr(preview_child, "usable_cores", lambda: 2)
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.mark.usefixtures("overlap")
def test_same_output_and_rows_with_the_preview_in_a_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "routines.d"
    _fleet(root)
    got = []
    for overlap in (False, True):
        monkeypatch.setattr(preview_child, "OVERLAP_MIN_CHANGES", 0 if overlap else 10**9)
        journal = tmp_path / f"j{overlap}" / "journal.sqlite3"
        code = main(["apply", "--dir", str(root), "--journal", str(journal), "--auto-approve"])
        out, err = capfd.readouterr()
        got.append((code, out, err, _rows(journal)))
    assert got[0] == got[1]
    code, out, err, rows = got[0]
    assert code == 0 and len(rows) == 30 and out.startswith("palyra-ops will perform the following actions:")
    assert out.index('routine "r-29" will be created') < out.index("Apply complete")


@pytest.mark.usefixtures("overlap")
def test_a_preview_that_fails_applies_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "routines.d"
    _fleet(root)

    def broken(*_: object, **__: object) -> object:
        yield "palyra-ops will perform the following actions:\n\n"
        raise RuntimeError("cannot render")

    monkeypatch.setattr(plan_cmd, "iter_text", broken)
    journal = tmp_path / "state" / "journal.sqlite3"
    code = main(["apply", "--dir", str(root), "--journal", str(journal), "--auto-approve"])
    _, err = capfd.readouterr()
    assert code == 1 and "nothing applied" in err and _rows(journal) == []


def test_a_closed_stdout_applies_nothing(tmp_path: Path) -> None:
    root = tmp_path / "routines.d"
    _fleet(root, 300)
    journal = tmp_path / "state" / "journal.sqlite3"
    code = ("import sys; from palyra_ops.cli import main, preview_child; import palyra_ops.source.parallel as p;"
            "preview_child.OVERLAP_MIN_CHANGES = 0; preview_child.usable_cores = lambda: 2;"
            f"sys.exit(main(['apply', '--dir', {str(root)!r}, '--journal', {str(journal)!r}, '--auto-approve']))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parent.parent, env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first byte: `apply | head -0`
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert _rows(journal) == []
