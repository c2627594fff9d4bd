"""`palyra-ops validate`: text report with source line and caret, stable JSON, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from palyra_ops.cli import main

ROOT = Path(__file__).resolve().parent.parent
BAD = """apiVersion: palyra/v1
kind: Routine
metadata:
  name: daily-incident-report
spec:
  prompt: Summarize yesterday's incidents
  trigger:
    kind: schedule
    schedule:
      cron: "0 9 * * 1-5"
      timezone: Europe/Prague
  policies:
    misfire: fire_once
    concurrency: sometimes
"""


@pytest.fixture()
def bad_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "routines.d").mkdir()
    (tmp_path / "routines.d" / "sre.yaml").write_text(BAD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return tmp_path / "routines.d"


def test_text_report_shows_position_path_expected_value_source_line_and_caret(bad_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "routines.d"]) == 1
    assert capsys.readouterr().out == (
        "routines.d/sre.yaml:14:18: spec.policies.concurrency: 'sometimes' is not one of allow, forbid, replace, queue_one\n"
        "   14 |     concurrency: sometimes\n"
        "      |                  ^\n"
        "Invalid: 1 error in 1 of 1 file.\n"
    )


def test_default_directory_is_routines_d_and_dir_flag_is_accepted(bad_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 1
    assert main(["validate", "--dir", "routines.d"]) == 1
    (bad_dir / "sre.yaml").write_text(BAD.replace("sometimes", "forbid"))
    capsys.readouterr()
    assert main(["validate"]) == 0
    assert capsys.readouterr().out == "Valid: 1 file, 1 document (1 routine, 0 channels, 0 policies).\n"


def test_json_output_is_the_documented_stable_document(bad_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "routines.d", "--output", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc == {
        "format_version": 1,
        "valid": False,
        "directory": "routines.d",
        "summary": {"files": 1, "invalid_files": 1, "documents": 0, "routines": 0, "channels": 0, "policies": 0, "errors": 1},
        "diagnostics": [
            {
                "file": "routines.d/sre.yaml",
                "line": 14,
                "column": 18,
                "path": "spec.policies.concurrency",
                "message": "'sometimes' is not one of allow, forbid, replace, queue_one",
                "code": "invalid",
                "source_line": "    concurrency: sometimes",
                "text": "routines.d/sre.yaml:14:18: spec.policies.concurrency: 'sometimes' is not one of allow, forbid, replace, queue_one",
            }
        ],
        "warnings": [],
        "files": [
            {
                "file": "sre.yaml",
                "display": "routines.d/sre.yaml",
                "sha256": doc["files"][0]["sha256"],
                "valid": False,
                "errors": 1,
                "documents": [{"kind": "Routine", "name": "daily-incident-report"}],
            }
        ],
    }


def test_missing_directory_is_an_error_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == f"palyra-ops: routine directory {tmp_path / 'nope'} does not exist\n"


def test_console_script_validates_the_shipped_sample_and_examples(tmp_path: Path) -> None:
    """On a machine with no skills installed (a fresh state root) the examples validate; a skill
    reference is then said to be unchecked, never silently passed (examples/README.md installs them)."""
    env = {**os.environ, "NO_COLOR": "1", "PALYRA_STATE_ROOT": str(tmp_path / "state")}
    exe = Path(sys.executable).with_name("palyra-ops")
    skills = {"examples/sre-reports/routines.d": ["incident-digest"],
              "examples/webhook-automation/routines.d": ["release-announcer"]}
    for target in ["routines.d", "examples/sre-reports/routines.d", "examples/personal-assistant/routines.d",
                   "examples/webhook-automation/routines.d"]:
        proc = subprocess.run([str(exe), "validate", target], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        *warnings, summary = proc.stdout.splitlines()
        assert summary.startswith("Valid: ")
        assert [w.split("skill '")[1].split("'")[0] for w in warnings] == skills.get(target, [])
        assert all(f"not checked: no skills index under {tmp_path / 'state'}" in w for w in warnings)
    assert not (tmp_path / "state").exists()


def test_console_script_fails_on_a_corpus_case_with_exit_1() -> None:
    exe = Path(sys.executable).with_name("palyra-ops")
    case = ROOT / "tests" / "corpus" / "alias-bomb"
    proc = subprocess.run([str(exe), "validate", "."], cwd=case, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == "bomb.yaml:1:1: document expands to more than 100000 nodes through aliases (alias bomb?)"
    assert proc.stderr == ""


def test_pre_commit_hook_runs_validate_on_the_whole_directory() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    (hook,) = hooks
    assert hook["id"] == "palyra-ops-validate"
    assert hook["entry"] == "palyra-ops validate" and hook["pass_filenames"] is False
    assert hook["language"] == "python"
