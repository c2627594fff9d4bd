"""Valid ranges of durations, instants and integers, and full-match ASCII-only patterns (docs/format.md).

Huge or odd values must be a clear error (file:line:col, a 4xx JSON body, a one-line CLI message),
never a traceback: `99999999d`, `at` years 0 and 10000, 5,000-digit integers, `daily\\n`, `٣٠s`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import fastjsonschema
import httpx
import pytest
from jsonschema import Draft202012Validator

from palyra_ops.cli import main
from palyra_ops.clock import MAX_INSTANT_MS, InstantError, InstantRangeError, parse_rfc3339
from palyra_ops.durations import DurationError, DurationRangeError, duration_problem, parse_duration_ms
from palyra_ops.numbers import IntegerError, parse_int
from palyra_ops.schedule import Schedule, check_quiet_hours, check_schedule, preview
from palyra_ops.source import check_document, load_directory, schema
from palyra_ops.source.findings import fast_validator as _fast_validator

HUGE = "9" * 5000

# -- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["30s\n", "\u0663\u0660s", "30s ", " 30s", "3\u00b2s", "30S", "", "1h 30m", "１s"])
def test_duration_syntax_is_full_match_ascii(text: str) -> None:
    with pytest.raises(DurationError, match=r"^invalid duration .*: expected e\.g\. 500ms"):
        parse_duration_ms(text)


def test_duration_range() -> None:
    assert parse_duration_ms("36500d") == 36_500 * 86_400_000
    assert parse_duration_ms("1h30m") == 5_400_000
    with pytest.raises(DurationRangeError, match=r"^duration '36501d' is too long \(at most 36500d\)$"):
        parse_duration_ms("36501d")
    with pytest.raises(DurationRangeError) as info:
        parse_duration_ms(HUGE + "s")  # int() would refuse 5,000 digits with a message about sys.set_int_max_str_digits
    assert str(info.value) == "duration '999999999999999999999999…' (5001 characters) is too long (at most 36500d)"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("every", "366d", None),
        ("every", "367d", "'367d' is too long: at most 366d"),
        ("every", "999ms", "must be at least 1s"),
        ("timeout", "0s", "must be at least 1ms"),
        ("cooldown", "0s", None),
        ("jitter", "99999999d", "'99999999d' is too long: at most 366d"),
        ("retry.backoff", HUGE + "d", "'999999999999999999999999…' (5001 characters) is too long: at most 366d"),
        ("channel.timeout", "30s\n", "invalid duration '30s\\n': expected e.g. 500ms, 30s, 5m, 2h, 1d or 1h30m"),
    ],
)
def test_routine_duration_bounds(field: str, value: str, problem: str | None) -> None:
    assert duration_problem(field, value) == problem


# -- instants -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0001-01-01T00:00:00+14:00", "'0001-01-01T00:00:00+14:00' is out of range"),
        ("9999-12-31T23:59:59-14:00", "'9999-12-31T23:59:59-14:00' is out of range"),
        ("1969-12-31T23:59:59Z", "'1969-12-31T23:59:59Z' is out of range"),
        ("9999-12-31T00:00:00Z", "'9999-12-31T00:00:00Z' is out of range"),
    ],
)
def test_instants_out_of_range(text: str, message: str) -> None:
    with pytest.raises(InstantRangeError) as info:
        parse_rfc3339(text)
    assert str(info.value) == (
        f"{message}: instants must lie between 1970-01-01T00:00:00Z and 9999-12-30T23:59:59Z"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-12-24T18:00:00Z\n", "'2026-12-24T18:00:00Z\\n' is not an RFC 3339 date-time"),
        ("\u0662\u0660\u0662\u0666-12-24T18:00:00Z", "is not an RFC 3339 date-time"),
        ("2026-W52-4T18:00:00Z", "is not an RFC 3339 date-time"),  # fromisoformat would take it
        ("20261224T180000+0100", "is not an RFC 3339 date-time"),
        ("2026-12-24T18:00:00", "'2026-12-24T18:00:00' has no UTC offset"),
        ("2026-13-01T00:00:00Z", "is not a valid date-time: month must be in 1..12"),
        ("2026-12-24T18:00:00+24:00", "has no valid UTC offset (+24:00; offsets run from -23:59 to +23:59)"),
    ],
)
def test_instant_syntax_is_full_match_ascii_rfc3339(text: str, message: str) -> None:
    with pytest.raises(InstantError, match=re.escape(message)):
        parse_rfc3339(text)


def test_instant_range_edges() -> None:
    assert parse_rfc3339("1970-01-01T00:00:00Z") == 0
    assert parse_rfc3339("9999-12-30T23:59:59.999Z") == MAX_INSTANT_MS
    assert parse_rfc3339("2026-12-24 18:00:00.123456789+01:00") == parse_rfc3339("2026-12-24T17:00:00.123Z")


def test_check_schedule_reports_out_of_range_values() -> None:
    assert check_schedule({"every": "99999999d"}) == [("every", "'99999999d' is too long: at most 366d")]
    assert check_schedule({"at": "0001-01-01T00:00:00+14:00"}) == [
        ("at", "'0001-01-01T00:00:00+14:00' is out of range: instants must lie between "
         "1970-01-01T00:00:00Z and 9999-12-30T23:59:59Z")
    ]
    assert check_schedule({"every": "\u0663\u0660s"})[0][1].startswith("invalid duration")


def test_schedule_math_at_the_end_of_the_calendar_does_not_raise() -> None:
    last_day = parse_rfc3339("9999-12-30T00:00:00Z")
    every = Schedule.from_spec({"every": "366d"})
    assert every.next_after(last_day) is None
    assert every.fires_between(last_day, 10**30) == []
    second = Schedule.from_spec({"every": "1s"})
    assert len(second.fires_between(0, 10**30)) == 10_000  # the limit, not a 10**27-step loop
    for tz in ("utc", "Europe/Prague", "Pacific/Kiritimati"):
        cron = Schedule.from_spec({"cron": "59 23 * * *", "timezone": tz})
        assert cron.next_after(10**20) is None
        fires = cron.next_n(last_day, 5)
        assert all(f <= MAX_INSTANT_MS for f in fires)
        preview("59 23 * * *", tz, last_day, 5, quiet_hours={"start": "22:00", "end": "07:00", "timezone": tz})
    assert preview("every:366d", "utc", last_day, 3) == {"fire_times": [], "notes": []}


# -- integers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["\u0663", " 5", "5\n", "1_000", "+5", "0x10", "", HUGE])
def test_parse_int_is_ascii_and_range_checked_before_conversion(text: str) -> None:
    with pytest.raises(IntegerError):
        parse_int(text, 1, 500, "limit")
    assert parse_int("500", 1, 500) == 500


# -- schema patterns ------------------------------------------------------------------------------

#: a valid value for every pattern in the schema; each must stop matching with "\n" appended
EXAMPLES = {
    "^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$(?!\\n)": "daily",
    "^[a-z]+:[!-~]+$(?!\\n)": "user:alice",
    "^([0-9]+(ms|s|m|h|d))+$(?!\\n)": "30s",
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$(?!\\n)":
        "2026-12-24T18:00:00+01:00",
    "^([01][0-9]|2[0-3]):[0-5][0-9]$(?!\\n)": "22:00",
    "^https?://[!-~]+$(?!\\n)": "https://hooks.example.invalid/x",
    "^[A-Za-z0-9!#%&'*+.^_`|~-]+$(?!\\n)": "X-Request-Id",
    "^[A-Za-z_][A-Za-z0-9_]*$(?!\\n)": "SRE_TOKEN",
}


def _patterns(node: Any) -> set[str]:
    if isinstance(node, dict):
        own = {node["pattern"]} if isinstance(node.get("pattern"), str) else set()
        return own | {p for v in node.values() for p in _patterns(v)}
    if isinstance(node, list):
        return {p for v in node for p in _patterns(v)}
    return set()


def test_every_schema_pattern_is_full_match_and_ascii_in_both_validators() -> None:
    patterns = _patterns(schema())
    assert patterns == set(EXAMPLES)
    for pattern, good in EXAMPLES.items():
        for checker in (Draft202012Validator({"pattern": pattern}), fastjsonschema.compile({"pattern": pattern})):
            ok = checker.is_valid if hasattr(checker, "is_valid") else _fast_ok(checker)
            assert ok(good), (pattern, good)
            for bad in (good + "\n", good + "\n\n", "\n" + good, good.replace("2", "\u0662").replace("s", "\u017f")):
                if bad != good:
                    assert not ok(bad), (pattern, bad)
        # no Unicode-aware classes (\d \w \s match non-ASCII in Python), no `.` outside a [...] set
        assert not re.search(r"\\[dwsDWS]", pattern), pattern
        assert "." not in re.sub(r"\[[^\]]*\]|\\.", "", pattern), pattern


def _fast_ok(validate: Any) -> Any:
    def ok(value: str) -> bool:
        try:
            validate(value)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    return ok


def test_quiet_hours_hhmm_is_full_match_ascii() -> None:
    for bad in ("22:00\n", "2\u0662:00", "22:0\u0660"):
        assert check_quiet_hours({"start": bad, "end": "07:00"})[0][0] == "start"


def test_check_document_refuses_a_name_with_a_trailing_newline() -> None:
    """The console API's upsert path validates with jsonschema, whose `$` matched before '\\n'."""
    doc = {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "daily\n"},
           "spec": {"prompt": "x", "trigger": {"kind": "schedule", "schedule": {"every": "\u0663\u0660s"}}}}
    found = dict(check_document(doc))
    assert set(found) == {"metadata.name", "spec.trigger.schedule.every"}
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        _fast_validator()(doc)


# -- the user-facing edges: files, CLI, HTTP -------------------------------------------------------

ROUTINE = """apiVersion: palyra/v1
kind: Routine
metadata:
  name: {name}
spec:
  prompt: hi
  trigger:
    kind: schedule
    schedule:
      {schedule}
"""


@pytest.mark.parametrize(
    ("name", "schedule", "expected"),
    [
        ("r", "every: 99999999d", "r.yaml:10:14: spec.trigger.schedule.every: '99999999d' is too long: at most 366d"),
        ("r", 'at: "9999-12-31T23:59:59-14:00"', "r.yaml:10:11: spec.trigger.schedule.at: '9999-12-31T23:59:59-14:00' "
         "is out of range: instants must lie between 1970-01-01T00:00:00Z and 9999-12-30T23:59:59Z"),
        ('"daily\\n"', "every: 1m", "r.yaml:4:9: metadata.name: 'daily\\n' is not a valid name (lowercase letters, "
         "digits, '.', '_' or '-', 1-63 characters, starting and ending with a letter or digit)"),
        ("r", 'every: "\u0663\u0660s"', "r.yaml:10:14: spec.trigger.schedule.every: '\u0663\u0660s' is not a duration "
         "like 500ms, 30s, 5m, 2h, 1d or 1h30m"),
    ],
)
def test_file_errors_are_positioned(tmp_path: Path, name: str, schedule: str, expected: str) -> None:
    (tmp_path / "r.yaml").write_text(ROUTINE.format(name=name, schedule=schedule), encoding="utf-8")
    source = load_directory(tmp_path, display_root="")
    assert [d.format() for d in source.diagnostics] == [expected]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["schedule", "every:99999999d", "--from", "2026-01-01T00:00:00Z"], "palyra-ops: every: '99999999d' is too long: at most 366d\n"),
        (["schedule", "@daily", "--from", "0001-01-01T00:00:00+14:00"],
         "palyra-ops: --from: '0001-01-01T00:00:00+14:00' is out of range: instants must lie between "
         "1970-01-01T00:00:00Z and 9999-12-30T23:59:59Z\n"),
        (["schedule", "at:9999-12-31T23:59:59-14:00", "--from", "2026-01-01T00:00:00Z"],
         "palyra-ops: at: '9999-12-31T23:59:59-14:00' is out of range: instants must lie between "
         "1970-01-01T00:00:00Z and 9999-12-30T23:59:59Z\n"),
    ],
)
def test_cli_one_line_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", message)


def test_cli_integer_flags_are_ascii(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["schedule", "@daily", "-n", "\u0663"])
    assert info.value.code == 2
    assert "argument --count/-n: '\u0663' is not an integer" in capsys.readouterr().err


def test_http_routes_answer_4xx_for_huge_values(daemon: Any) -> None:
    c: httpx.Client = daemon.client()
    api = "/console/v1"
    cases = [
        ("POST", f"{api}/routines/schedule-preview", {"expr": "every:99999999d"}, 422, "every: '99999999d' is too long: at most 366d"),
        ("POST", f"{api}/routines/schedule-preview", {"expr": "@daily", "from": "9999-12-31T23:59:59-14:00"}, 400,
         "from: '9999-12-31T23:59:59-14:00' is out of range: instants must lie between 1970-01-01T00:00:00Z and 9999-12-30T23:59:59Z"),
        ("POST", f"{api}/memory/items", {"text": "x", "ttl": "99999999999999999999d"}, 400,
         "ttl: duration '99999999999999999999d' is too long (at most 36500d)"),
        ("GET", f"{api}/memory/items?since=99999999999999999999d", None, 400,
         "since: duration '99999999999999999999d' is too long (at most 36500d)"),
        ("GET", f"{api}/memory/items?since=0001-01-01T00:00:00%2B14:00", None, 400,
         "since: '0001-01-01T00:00:00+14:00' is out of range: instants must lie between 1970-01-01T00:00:00Z and 9999-12-30T23:59:59Z"),
        ("GET", f"{api}/memory/items?limit=%D9%A3", None, 400, "limit: '\u0663' is not an integer"),
        ("GET", f"{api}/memory/search?q=x&k={HUGE}", None, 400, "k: must be between 1 and 1000"),
        # an empty name is not a name (it also made `/routines//delete` links for schemathesis)
        ("POST", f"{api}/memory/items", {"text": "x", "routine_id": ""}, 400,
         "routine_id: must not be empty (omit it, or send null, for none)"),
    ]
    for method, url, body, status, message in cases:
        r = c.request(method, url, json=body)
        assert r.status_code == status, (url, r.text)
        error = r.json()["error"]
        text = error["message"] if status == 400 else error["details"][0]["message"]
        assert text == message, (url, r.text)
    raw = b'{"name": "r", "spec": {"prompt": "x", "policies": {"max_catch_up": ' + HUGE.encode() + b"}}}"
    r = c.post(f"{api}/routines/upsert", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    body = {"name": "r", "spec": {"prompt": "x", "trigger": {"kind": "manual"}, "policies": {"max_catch_up": 10**30}}}
    r = c.post(f"{api}/routines/upsert", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
