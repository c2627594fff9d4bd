"""`plan --output markdown` (SPEC §12): the plan as a pull-request comment, pinned by golden files
(tests/golden/plan_markdown/), and the real CLI's markdown output and exit codes.

Regenerate the goldens after an intended change of the view with
    PALYRA_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_plan_markdown.py
and review the diff: it is what every PR comment will look like.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO
from gitops_helpers import routine_yaml, write
from plan_values import plan_of, routine, snapshot, stored
from test_plan_render import mixed, unchanged

from palyra_ops.errors import Diagnostic
from palyra_ops.plan import Plan
from palyra_ops.plan_select import Selection
from palyra_ops.views.plan_markdown import invalid_markdown, render_markdown

GOLDEN = Path(__file__).parent / "golden" / "plan_markdown"


def moved() -> Plan:
    new = routine("new", prompt="q", cron="0 10 * * *")
    new.body["metadata"]["previous_names"] = ["old"]
    return plan_of([new, routine("other")], snapshot(stored(routine("old", prompt="p")), jobs={"old": {"anchor_ms": None}}))


def targeted() -> Plan:
    return plan_of([routine("one"), routine("two")], snapshot(), selection=Selection.from_flags(["one"], []))


def hostile() -> Plan:
    """Values that would break a naive comment: a fence, table pipes, HTML that closes <details>."""
    return plan_of([routine("tricky", prompt="```\n</details> | <b>x</b> ````", file="we|ird <a>.yaml")], snapshot())


def truncated(count: int, max_chars: int) -> str:
    # a minute each: the same cron for all would be a herd, and plan's herd warning is not what is measured
    routines = [routine(f"r{i:03d}", cron=f"{i % 60} 9 * * *") for i in range(count)]
    return render_markdown(plan_of(routines, snapshot()), max_chars=max_chars)


CASES: dict[str, Callable[[], str]] = {
    "mixed.md": lambda: render_markdown(mixed()),
    "moved.md": lambda: render_markdown(moved()),
    "targeted.md": lambda: render_markdown(targeted()),
    "unchanged.md": lambda: render_markdown(unchanged()),
    "hostile.md": lambda: render_markdown(hostile()),
    "truncated-diffs.md": lambda: truncated(20, 2500),  # every row, some diffs
    "truncated-table.md": lambda: truncated(100, 2500),  # some rows, no diffs
    "invalid.md": lambda: invalid_markdown([
        Diagnostic("routines.d/a.yaml", 3, 9, "metadata.name", "'Bad Name' is not a valid name"),
        Diagnostic("routines.d/b.yaml", 0, 0, "", "not valid UTF-8")]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_markdown_matches_golden(name: str) -> None:
    text = CASES[name]()
    path = GOLDEN / name
    if os.environ.get("PALYRA_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()
    assert text == CASES[name](), "the same plan renders the same markdown twice"
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_hostile_values_stay_inside_their_code_block() -> None:
    text = render_markdown(hostile())
    assert text.count("<details>") == 1 and text.count("</details>") == 2  # the second is inside the fence
    fence_line = next(line for line in text.splitlines() if line.endswith("diff"))
    assert fence_line == "`````diff"  # longer than the prompt's four-backtick run
    assert "| we\\|ird \\<a\\>.yaml |" in text  # the file name cannot split the table or open a tag


def test_truncated_stays_within_budget_and_says_so() -> None:
    """A comment has a size limit: the view stops early, says what it left out, and closes its markup."""
    diffs, table = truncated(20, 2500), truncated(100, 2500)
    for text, count in ((diffs, 20), (table, 100)):
        assert len(text) < 2500 + 500
        assert text.startswith(f"### palyra-ops plan: {count} to add, 0 to change, 0 to delete\n")
        assert text.endswith("</details>\n")
    assert diffs.count('| `+` | routine "r') == 20 and 0 < diffs.count("```diff") < 20
    assert "_…the diffs of " in diffs and "more objects are not shown (comment size)" in diffs
    assert 0 < table.count('| `+` | routine "r') < 100 and "more objects not listed (comment size)" in table
    assert "_…the diffs of all " in table
    full = truncated(100, 10**9)
    assert full.count("```diff") == 100 and "comment size" not in full


# -- the CLI ------------------------------------------------------------------------------------------

def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PALYRA_STATE_ROOT": str(cwd / "state"), "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "palyra_ops", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=120)


def test_cli_plan_markdown_and_exit_codes(tmp_path: Path) -> None:
    write(tmp_path / "routines.d", "a.yaml", routine_yaml("alpha"))
    plan = ["plan", "--dir", "routines.d", "--journal", "state/journal.sqlite3", "--output", "markdown"]
    out = _cli(*plan, "--detailed-exitcode", cwd=tmp_path, env={"FORCE_COLOR": "1"})
    assert (out.returncode, out.stderr) == (2, "")  # changes
    assert out.stdout.startswith("### palyra-ops plan: 1 to add, 0 to change, 0 to delete\n\n| | Object |")
    assert '| `+` | routine "alpha" | create | a.yaml | new in a.yaml |' in out.stdout
    assert "#### routine \"alpha\": create\n\n```diff\n+ metadata" in out.stdout
    assert "\x1b[" not in out.stdout  # never coloured, even with FORCE_COLOR
    assert _cli(*plan, cwd=tmp_path).returncode == 0  # without --detailed-exitcode
    assert _cli("apply", "--dir", "routines.d", "--journal", "state/journal.sqlite3", "--auto-approve",
                cwd=tmp_path).returncode == 0
    same = _cli(*plan, "--detailed-exitcode", cwd=tmp_path)
    assert (same.returncode, same.stdout) == (0, "### palyra-ops plan: no changes\n\nThe journal matches the directory.\n")
    write(tmp_path / "routines.d", "b.yaml", "apiVersion: palyra/v1\nkind: Routine\nmetadata: {name: Bad Name}\nspec: {}\n")
    bad = _cli(*plan, "--detailed-exitcode", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stdout.startswith("### palyra-ops plan: invalid (")
    assert "Bad Name" in bad.stdout and "nothing planned." in bad.stderr
    # markdown is plan's own view: other commands refuse it as a usage error
    refused = _cli("apply", "--output", "markdown", cwd=tmp_path)
    assert refused.returncode == 2 and "invalid choice: 'markdown'" in refused.stderr
