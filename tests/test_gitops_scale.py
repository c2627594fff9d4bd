"""The GitOps path at scale (issue 14): streamed plan text, batched apply, status loading once — and
none of it changing what plan shows or what apply writes."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from gitops_helpers import routine_yaml, write
from plan_fixture import applied, journal_rows, outputs, scenario

import palyra_ops.source.directory as source_directory
from palyra_ops import reconcile
from palyra_ops.cli._common import emit
from palyra_ops.clock import FakeClock
from palyra_ops.journal import SQLiteJournal, open_journal
from palyra_ops.reconcile import apply_plan, plan_directory
from palyra_ops.syncstatus import SyncState, directory_status
from palyra_ops.views.plan_text import iter_text, render_text

GOLDEN = Path(__file__).parent / "golden" / "plan_fixture"


@pytest.mark.parametrize("name", ["plan.txt", "plan-verbose.txt", "plan-colour.txt", "plan.json"])
def test_plan_output_is_what_it_was_before_the_rework(tmp_path: Path, name: str) -> None:
    """Goldens written by the code before streaming/batching: every view of a mixed plan is unchanged."""
    assert outputs(tmp_path)[name] == (GOLDEN / name).read_text(encoding="utf-8")


def test_plan_text_is_streamed_one_object_at_a_time(tmp_path: Path) -> None:
    d, j, clock = scenario(tmp_path)
    plan, _ = plan_directory(d, j, clock=clock)
    chunks = list(iter_text(plan, verbose=True))
    assert "".join(chunks) == render_text(plan, verbose=True)
    # header, one chunk per object shown (every object with --verbose), warnings + summary
    assert len(chunks) == 1 + len(plan.changes) + 1
    assert all(c.endswith("\n") for c in chunks)


def test_emit_writes_a_streamed_view_as_it_comes() -> None:
    out = io.StringIO()
    seen: list[str] = []

    def view(_: object) -> Any:
        for part in ("a\n", "", "b"):
            seen.append(out.getvalue())  # what was written before this chunk was made
            yield part

    emit(None, "text", view, stream=out)
    assert out.getvalue() == "a\nb\n"  # a view's missing last newline is added, like a string view's
    assert seen == ["", "a\n", "a\n"]  # written chunk by chunk, not collected first


def _rows(j: Path) -> dict[str, list[list[Any]]]:
    return journal_rows(j, j.parent)


@pytest.mark.parametrize("size", [100_000, 2])
def test_apply_writes_the_rows_it_wrote_before_batching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         size: int) -> None:
    """Creates, updates (schedule changed or kept, re-enabled, adopted), deletes and an approval, in
    one batch or many: the same rows as the per-row apply before batching wrote (golden)."""
    monkeypatch.setattr(reconcile._Batch, "SIZE", size)
    assert json.loads(applied(tmp_path)) == json.loads((GOLDEN / "applied.json").read_text(encoding="utf-8"))


def test_apply_is_one_transaction_across_its_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after several batches were written leaves the journal as it was, apply log included."""
    d, j = tmp_path / "r", tmp_path / "journal.sqlite3"
    clock = FakeClock(1_774_612_800_000)
    write(d, "a.yaml", *(routine_yaml(f"old-{i}") for i in range(3)))
    with open_journal(j, clock=clock) as journal:
        apply_plan(journal, plan_directory(d, j, clock=clock)[0])
    before = _rows(j)
    write(d, "a.yaml", routine_yaml("old-0", prompt="changed"))  # one update, two deletes
    write(d, "b.yaml", *(routine_yaml(f"new-{i:02d}") for i in range(40)))  # forty creates
    plan, _ = plan_directory(d, j, clock=clock)
    monkeypatch.setattr(reconcile._Batch, "SIZE", 4)
    written: list[int] = []
    real_put_jobs = SQLiteJournal.put_jobs

    def put_jobs(self: Any, c: Any, writes: Any, existing: Any) -> None:
        real_put_jobs(self, c, writes, existing)
        written.append(c.execute("SELECT count(*) FROM journal_cron_jobs").fetchone()[0])
        if len(written) == 5:
            raise OSError("the machine dies here")

    monkeypatch.setattr(SQLiteJournal, "put_jobs", put_jobs)
    with open_journal(j, clock=clock) as journal, pytest.raises(OSError):
        apply_plan(journal, plan)
    assert written[-1] > 3  # rows of several batches were in the transaction ...
    assert _rows(j) == before  # ... and none of them is in the journal


def test_status_loads_the_directory_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, j, clock = scenario(tmp_path)
    with open_journal(j, clock=clock) as journal:
        apply_plan(journal, plan_directory(d, j, clock=clock)[0])
    files_before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    calls: list[Path] = []
    real = source_directory._load_directory

    def counting(root: Path, *args: Any, **kwargs: Any) -> Any:
        calls.append(root)
        return real(root, *args, **kwargs)

    monkeypatch.setattr(source_directory, "_load_directory", counting)
    report = directory_status(d, j, clock=clock)
    assert report["state"] is SyncState.SYNCED and report["out_of_sync"] == []
    assert calls == [d]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == files_before  # read-only


@pytest.mark.parametrize(("indent", "ascii_only"), [(1, True), (2, False)])
def test_plan_json_is_written_one_change_at_a_time_as_the_same_text(tmp_path: Path, indent: int,
                                                                     ascii_only: bool) -> None:
    """`plan --out` (indent 1, ASCII) and `--output json` (indent 2, UTF-8) stream the document."""
    d, j, clock = scenario(tmp_path)
    plan, _ = plan_directory(d, j, clock=clock)
    whole = json.dumps(plan.to_json(), indent=indent, ensure_ascii=ascii_only)
    chunks = list(plan.iter_json(indent=indent, ensure_ascii=ascii_only))
    assert "".join(chunks) == whole
    assert len(chunks) == len(plan.changes) + 2
    empty = plan_directory(d, j, clock=clock)[0]
    empty.changes = []
    assert "".join(empty.iter_json(indent=indent)) == json.dumps(empty.to_json(), indent=indent)
    out = io.StringIO()
    emit(plan, "json", render_text, stream=out)
    assert out.getvalue() == json.dumps(plan.to_json(), indent=2, ensure_ascii=False) + "\n"
    plan.save(tmp_path / "plan.json")
    assert (tmp_path / "plan.json").read_text(encoding="utf-8") == json.dumps(plan.to_json(), indent=1) + "\n"
