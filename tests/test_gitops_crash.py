"""Killing `apply` inside its transaction leaves the journal at the old or the new state, never between;
invalid input changes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gitops_helpers import routine_yaml, write

from palyra_ops.cli import main
from palyra_ops.journal import open_journal, read_snapshot

BIN = str(Path(sys.executable).with_name("palyra-ops"))


def _state(j: Path) -> tuple[int, list[str], list[str], int]:
    with open_journal(j) as jr:
        snap = jr.snapshot()
        return (
            snap.serial,
            sorted(n for (_, n) in snap.resources),
            sorted(snap.jobs),
            len(jr.apply_log()),
        )


def test_sigkill_mid_apply_leaves_old_state(tmp_path: Path) -> None:
    d = tmp_path / "r"
    j = tmp_path / "journal.sqlite3"
    write(d, "a.yaml", *(routine_yaml(f"old-{i}") for i in range(5)))
    assert main(["apply", "--dir", str(d), "--journal", str(j), "--auto-approve"]) == 0
    old = _state(j)
    assert old == (1, [f"old-{i}" for i in range(5)], [f"old-{i}" for i in range(5)], 1)

    # the new tree deletes two, changes one and adds twenty
    write(d, "a.yaml", routine_yaml("old-0", prompt="changed"), routine_yaml("old-1"), routine_yaml("old-2"))
    write(d, "b.yaml", *(routine_yaml(f"new-{i}") for i in range(20)))
    markers = tmp_path / "fp"
    markers.mkdir()
    env = {**os.environ, "PALYRA_FAILPOINTS": "apply.mid_transaction=pause", "PALYRA_FAILPOINT_DIR": str(markers)}
    proc = subprocess.Popen(
        [BIN, "apply", "--dir", str(d), "--journal", str(j), "--auto-approve"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not (markers / "apply.mid_transaction").exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "apply never reached the failpoint"
        time.sleep(0.02)
    # half of the writes are done inside the open transaction; another reader sees none of them
    assert _state(j) == old
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _state(j) == old

    # and the journal is healthy: the same apply now completes
    assert main(["apply", "--dir", str(d), "--journal", str(j), "--auto-approve"]) == 0
    serial, names, jobs, log = _state(j)
    assert (serial, log) == (2, 2)
    assert names == sorted(["old-0", "old-1", "old-2", *(f"new-{i}" for i in range(20))])
    assert jobs == names


def _corpus():
    try:
        from corpus_cases import iter_cases
    except ImportError:  # pragma: no cover - the corpus lands with the validator
        return []
    return list(iter_cases())


@pytest.mark.parametrize("case", _corpus(), ids=lambda c: c[0])
def test_invalid_corpus_changes_nothing(case, tmp_path: Path, capsys, monkeypatch) -> None:
    """Each hostile/invalid case: plan and apply exit 1 and the journal is untouched."""
    name, case_dir, expected = case
    good = tmp_path / "good"
    write(good, "keep.yaml", routine_yaml("keeper"))
    j = tmp_path / "journal.sqlite3"
    assert main(["apply", "--dir", str(good), "--journal", str(j), "--auto-approve"]) == 0
    before = _state(j)
    capsys.readouterr()
    monkeypatch.chdir(case_dir)  # expected lines name files relative to the case directory
    assert main(["plan", "--dir", ".", "--journal", str(j)]) == 1
    err = capsys.readouterr().err
    assert main(["apply", "--dir", ".", "--journal", str(j), "--auto-approve"]) == 1
    assert capsys.readouterr().err == err
    reported = [line for line in err.splitlines() if not line.startswith("    ")]
    assert reported[:-1] == expected
    assert reported[-1] == f"{len(expected)} error{'s' if len(expected) != 1 else ''}; nothing planned."
    assert _state(j) == before
    assert read_snapshot(j).resources.keys() == {("Routine", "keeper")}
