"""Targeted plans: `plan`/`apply` `--target` and `--exclude` (SPEC §12), through the CLI on a real
SQLite journal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gitops_helpers import channel_yaml, routine_yaml, write

from palyra_ops.cli import main
from palyra_ops.journal import open_journal

DELIVER_TO_PAGER = "delivery:\n  mode: specific_channel\n  channel: pager\n"


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """Three routines applied; then the directory gains a routine and a channel and changes two."""
    d = tmp_path / "routines.d"
    j = tmp_path / "state" / "journal.sqlite3"
    write(d, "a.yaml", routine_yaml("alpha"), routine_yaml("beta"))
    write(d, "c.yaml", routine_yaml("gamma"))
    assert main(["apply", "--dir", str(d), "--journal", str(j), "--auto-approve"]) == 0
    write(d, "a.yaml", routine_yaml("alpha", prompt="new alpha"), routine_yaml("beta", prompt="new beta"))
    write(d, "c.yaml", routine_yaml("gamma"), routine_yaml("delta", extra_spec=DELIVER_TO_PAGER), channel_yaml("pager"))
    return d, j


def plan_json(capsys: pytest.CaptureFixture[str], d: Path, j: Path, *flags: str) -> dict:
    capsys.readouterr()
    assert main(["plan", "--dir", str(d), "--journal", str(j), "--output", "json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def changed(doc: dict) -> list[tuple[str, str, str]]:
    return [(c["kind"], c["name"], c["action"]) for c in doc["changes"] if c["action"] != "no-op"]


def bodies(j: Path) -> dict[str, str]:
    with open_journal(j) as jr:
        return {r.name: r.body["spec"].get("prompt", "") for r in jr.list_resources("Routine")}


def test_target_plans_and_applies_only_the_target(tree, capsys) -> None:
    d, j = tree
    doc = plan_json(capsys, d, j, "--target", "alpha")
    assert changed(doc) == [("Routine", "alpha", "update")]
    assert [c["name"] for c in doc["changes"]] == ["alpha"]  # nothing else is planned, not even as a no-op
    assert doc["summary"] == {"add": 0, "change": 1, "delete": 0, "unchanged": 0, "unmanaged": 0}
    assert doc["options"]["targets"] == ["alpha"] and "excludes" not in doc["options"]
    assert doc["warnings"][0].startswith("targeted plan: it covers only alpha (and the channels they need).")

    assert main(["plan", "--dir", str(d), "--journal", str(j), "--target", "alpha"]) == 0
    text = capsys.readouterr().out
    assert "Plan: 0 to add, 1 to change, 0 to delete." in text
    assert "Warning: targeted plan: it covers only alpha" in text
    assert 'routine "beta"' not in text and 'routine "delta"' not in text

    assert main(["apply", "--dir", str(d), "--journal", str(j), "--auto-approve", "--target", "routine/alpha"]) == 0
    assert "Apply complete! Resources: 0 added, 1 changed, 0 deleted." in capsys.readouterr().out
    assert bodies(j) == {"alpha": "new alpha", "beta": "say hello", "gamma": "say hello"}
    # the rest still shows as pending in a full plan
    assert changed(plan_json(capsys, d, j)) == [("Channel", "pager", "create"), ("Routine", "beta", "update"),
                                                 ("Routine", "delta", "create")]


def test_repeated_targets_and_a_target_takes_its_new_channel_along(tree, capsys) -> None:
    d, j = tree
    doc = plan_json(capsys, d, j, "--target", "delta", "--target", "beta")
    assert changed(doc) == [("Channel", "pager", "create"), ("Routine", "beta", "update"),
                            ("Routine", "delta", "create")]
    # the channel excluded: the routine is planned alone, and the plan says what that means
    doc = plan_json(capsys, d, j, "--target", "delta", "--exclude", "channel/pager")
    assert changed(doc) == [("Routine", "delta", "create")]
    assert ("routine 'delta' delivers to channel 'pager', which is excluded from this plan but has changes of "
            "its own") in doc["warnings"]


def test_exclude_plans_everything_but(tree, capsys) -> None:
    d, j = tree
    doc = plan_json(capsys, d, j, "--exclude", "beta", "--exclude", "Routine/delta")
    assert changed(doc) == [("Channel", "pager", "create"), ("Routine", "alpha", "update")]
    assert {c["name"] for c in doc["changes"]} == {"pager", "alpha", "gamma"}  # gamma: unchanged, still shown
    assert doc["options"]["excludes"] == ["beta", "Routine/delta"]
    assert doc["warnings"][0].startswith("targeted plan: it covers not beta, Routine/delta.")
    # targeted and excluded: excluded wins
    assert changed(plan_json(capsys, d, j, "--target", "alpha", "--exclude", "alpha")) == []


def test_a_saved_targeted_plan_applies_only_its_targets(tree, capsys) -> None:
    d, j = tree
    planfile = d.parent / "alpha.plan"
    assert main(["plan", "--dir", str(d), "--journal", str(j), "--target", "alpha", "--out", str(planfile)]) == 0
    saved = json.loads(planfile.read_text())
    assert saved["options"]["targets"] == ["alpha"] and [c["name"] for c in saved["changes"]] == ["alpha"]
    capsys.readouterr()
    assert main(["apply", str(planfile), "--auto-approve"]) == 0
    out = capsys.readouterr().out
    assert "Warning: targeted plan: it covers only alpha" in out  # apply shows the saved plan as it was made
    assert "Apply complete! Resources: 0 added, 1 changed, 0 deleted." in out
    assert bodies(j) == {"alpha": "new alpha", "beta": "say hello", "gamma": "say hello"}


def test_a_targeted_delete(tree, capsys) -> None:
    d, j = tree
    (d / "c.yaml").write_text("")  # gamma (and the new ones) gone from the directory
    doc = plan_json(capsys, d, j, "--target", "gamma")
    assert changed(doc) == [("Routine", "gamma", "delete")]
    assert main(["apply", "--dir", str(d), "--journal", str(j), "--auto-approve", "--target", "gamma"]) == 0
    assert sorted(bodies(j)) == ["alpha", "beta"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "palyra_ops", *args], capture_output=True, text=True, timeout=120)


def test_unknown_targets_are_one_line_errors(tree) -> None:
    d, j = tree
    base = ("--dir", str(d), "--journal", str(j))
    cases = [
        (("plan", *base, "--target", "alpah"),
         "palyra-ops: --target 'alpah' matches no object in the directory or the journal (did you mean 'alpha'?)"),
        (("plan", *base, "--exclude", "channel/alpha"),
         "palyra-ops: --exclude 'Channel/alpha' matches no object in the directory or the journal (did you mean 'alpha'?)"),
        (("apply", *base, "--auto-approve", "--target", "job/alpha"),
         "palyra-ops: --target 'job/alpha': unknown kind 'job' (expected one of Routine, Channel, Policy)"),
        (("plan", *base, "--target", "/alpha"),
         "palyra-ops: --target '/alpha': expected NAME or KIND/NAME (e.g. routine/daily-report)"),
        (("apply", str(d.parent / "x.plan"), "--target", "alpha"),
         "palyra-ops: a saved plan carries its own --target/--exclude: apply it as it is, or make a new plan "
         "with other targets"),
    ]
    for argv, message in cases:
        r = run_cli(*argv)
        assert (r.returncode, r.stderr, r.stdout) == (1, message + "\n", ""), argv
    assert sorted(bodies(j).values()) == ["say hello"] * 3  # nothing applied


def test_detailed_exitcode_counts_only_the_targets(tree) -> None:
    d, j = tree
    base = ("plan", "--dir", str(d), "--journal", str(j), "--detailed-exitcode")
    assert run_cli(*base, "--target", "gamma").returncode == 0  # gamma has no change
    assert run_cli(*base, "--target", "alpha").returncode == 2
