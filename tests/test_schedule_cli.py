"""`palyra-ops schedule` (SPEC §7): output formats, errors on stderr with exit 1, the console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from palyra_ops.cli import main


def test_text_output_lists_fire_times_then_notes(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "schedule",
            "30 2 * * *",
            "--timezone",
            "Europe/Prague",
            "--from",
            "2026-03-28T00:00:00+01:00",
            "--count",
            "3",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert out == (
        "2026-03-28T02:30:00+01:00\n"
        "2026-03-29T03:00:00+02:00\n"
        "2026-03-30T02:30:00+02:00\n"
        "note: 2026-03-29: 02:30 does not exist in Europe/Prague (DST gap); fires at 03:00+02:00\n"
    )


def test_json_output_is_exactly_fire_times_and_notes(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "schedule",
            "30 2 * * *",
            "--timezone",
            "Europe/Prague",
            "--from",
            "2026-10-25T00:00:00+02:00",
            "--count",
            "2",
            "--fold",
            "both",
            "--output",
            "json",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    assert json.loads(out) == {
        "fire_times": ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"],
        "notes": [
            "2026-10-25: 02:30 occurs twice in Europe/Prague (DST fold); "
            "fires twice, at 02:30+02:00 and 02:30+01:00 (fold: both)"
        ],
    }


def test_every_and_at_expressions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", "every:15m", "--from", "2026-01-01T00:00:00Z", "-n", "2"]) == 0
    assert capsys.readouterr().out == "2026-01-01T00:15:00+00:00\n2026-01-01T00:30:00+00:00\n"
    assert (
        main(
            [
                "schedule",
                "at:2026-12-24T18:00:00+01:00",
                "--tz",
                "Europe/Prague",
                "--from",
                "2026-01-01T00:00:00Z",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == "2026-12-24T18:00:00+01:00\n"
    assert (
        main(["schedule", "at:2025-12-24T18:00:00+01:00", "--from", "2026-01-01T00:00:00Z", "-o", "json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out) == {
        "fire_times": [],
        "notes": ["2025-12-24T17:00:00+00:00 is in the past; this schedule will not fire again"],
    }


def test_default_from_is_now(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", "@hourly", "-o", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["fire_times"]) == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["61 * * * *"],
            "palyra-ops: cron: '61 * * * *' is not a valid cron expression: minute field '61' is out of range 0-59\n",
        ),
        (["0 0 31 2 *"], "palyra-ops: cron: '0 0 31 2 *' never fires\n"),
        (["@daily", "--timezone", "Mars/Base"], "palyra-ops: timezone: unknown time zone 'Mars/Base'\n"),
        (["every:100ms"], "palyra-ops: every: must be at least 1s\n"),
        (["at:2026-12-24T18:00:00"], "palyra-ops: at: '2026-12-24T18:00:00' has no UTC offset\n"),
        (
            ["@daily", "--from", "tomorrow"],
            "palyra-ops: --from: 'tomorrow' is not an RFC 3339 date-time with offset (e.g. 2026-03-29T00:00:00+01:00)\n",
        ),
        (["@daily", "--count", "0"], "palyra-ops: count must be between 1 and 1000, got 0\n"),
    ],
)
def test_errors_are_one_line_on_stderr_with_exit_1(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schedule", *argv]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == message


def test_console_script_in_a_real_process() -> None:
    script = Path(sys.executable).parent / "palyra-ops"
    ok = subprocess.run(
        [
            str(script),
            "schedule",
            "*/30 * * * *",
            "--timezone",
            "Europe/Prague",
            "--from",
            "2026-10-25T01:45:00+02:00",
            "-n",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "note: 2026-10-25: 02:00–03:00 occurs twice in Europe/Prague (DST fold); matching times in it fire in both occurrences",
    ]
    bad = subprocess.run([str(script), "schedule", "61 * * * *"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert (
        bad.stderr
        == "palyra-ops: cron: '61 * * * *' is not a valid cron expression: minute field '61' is out of range 0-59\n"
    )
