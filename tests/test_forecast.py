"""The forecast (SPEC §12): exact fire times against independent computations, herds and their jitter,
routines that never run as one warning each, a DST day, the CLI's views and errors, and plan's warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from gitops_helpers import routine_yaml, write

from palyra_ops.cli import main
from palyra_ops.clock import FakeClock, parse_rfc3339, rfc3339
from palyra_ops.forecast import Timing, forecast
from palyra_ops.schedule import QuietHours, jitter_offset_ms
from palyra_ops.views.forecast_json import instants

#: Friday 2026-12-04 00:00 UTC
START = parse_rfc3339("2026-12-04T00:00:00Z")
H = 3_600_000
ROOT = Path(__file__).resolve().parents[1]


def timing(name: str, jitter_ms: int = 0, quiet: dict[str, Any] | None = None, anchor: int | None = None,
           dst: dict[str, str] | None = None, **schedule: Any) -> Timing:
    return Timing(name, schedule, dst or {"gap": "shift", "fold": "first"}, jitter_ms, quiet, anchor)


def fires(f: Any, name: str) -> list[int]:
    return [int(x) for x in next(r for r in f.routines if r.name == name).due]


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


# -- fire times --------------------------------------------------------------------------------------


def test_cron_fire_times_equal_cronsim_over_the_window() -> None:
    exprs = ["*/15 * * * *", "0 9 * * 1-5", "5,35 */3 * * *", "0 0 * * sat"]
    f = forecast([timing(e, cron=e) for e in exprs], START, 72)
    for e in exprs:
        it = CronSim(e, datetime.fromtimestamp(START / 1000, UTC))
        expected: list[int] = []
        while (t := ms(next(it))) <= START + 72 * H:
            expected.append(t)
        assert fires(f, e) == expected, e
    assert f.total_runs == sum(len(fires(f, e)) for e in exprs)


def test_zoned_fixed_time_cron_equals_zoneinfo_wall_times() -> None:
    prague = ZoneInfo("Europe/Prague")
    f = forecast([timing("morning", cron="30 8 * * 1-5", timezone="Europe/Prague")], START, 7 * 24)
    expected = []
    for k in range(8):
        d = date(2026, 12, 4) + timedelta(days=k)
        t = ms(datetime(d.year, d.month, d.day, 8, 30, tzinfo=prague))
        if d.isoweekday() <= 5 and START < t <= START + 7 * 24 * H:
            expected.append(t)
    assert fires(f, "morning") == expected and len(expected) == 5


def test_every_counts_from_the_anchor_and_jitter_is_the_schedulers() -> None:
    anchor = START - 7 * 60_000  # applied 7 minutes before the start
    f = forecast([timing("beat", every="10m", anchor=anchor), timing("jit", cron="0 * * * *", jitter_ms=30_000),
                  timing("fresh", every="6h")], START, 24)
    assert fires(f, "beat") == [anchor + k * 600_000 for k in range(1, 145)]
    hourly = [START + k * H for k in range(1, 25)]
    assert fires(f, "jit") == sorted(n + jitter_offset_ms("jit", n, 30_000) for n in hourly
                                     if n + jitter_offset_ms("jit", n, 30_000) <= START + 24 * H)
    assert fires(f, "fresh") == [START + k * 6 * H for k in range(1, 5)]  # no anchor: applied at the start


def test_dst_day_fixed_time_shifts_once_and_cadence_keeps_real_time() -> None:
    spring = parse_rfc3339("2026-03-29T00:00:00+01:00")
    f = forecast([timing("gap", cron="30 2 * * *", timezone="Europe/Prague"),
                  timing("skip", cron="30 2 * * *", timezone="Europe/Prague", dst={"gap": "skip", "fold": "first"}),
                  timing("half", cron="*/30 * * * *", timezone="Europe/Prague")], spring, 24)
    assert fires(f, "gap") == [parse_rfc3339("2026-03-29T03:00:00+02:00")]  # the first instant after the gap
    assert fires(f, "skip") == []
    half = fires(f, "half")
    assert len(half) == 48 and all(b - a == 30 * 60_000 for a, b in zip(half, half[1:], strict=False))
    autumn = parse_rfc3339("2026-10-25T00:00:00+02:00")
    g = forecast([timing("fold", cron="30 2 * * *", timezone="Europe/Prague"),
                  timing("both", cron="30 2 * * *", timezone="Europe/Prague", dst={"gap": "shift", "fold": "both"})],
                 autumn, 25)
    assert fires(g, "fold") == [parse_rfc3339("2026-10-25T02:30:00+02:00")]
    assert fires(g, "both") == [parse_rfc3339("2026-10-25T02:30:00+02:00"), parse_rfc3339("2026-10-25T02:30:00+01:00")]


# -- herds ---------------------------------------------------------------------------------------------


def test_planted_herd_is_found_with_its_count_and_a_jitter_that_spreads_it() -> None:
    herd = [timing(f"report-{i:02d}", cron="0 9 * * *") for i in range(50)]
    others = [timing(f"beat-{i}", every="1h", jitter_ms=3_000_000) for i in range(20)]
    f = forecast(herd + others, START, 24)
    assert len(f.herds) == 1
    h = f.herds[0]
    nine = parse_rfc3339("2026-12-04T09:00:00Z")
    assert (h.runs, h.seconds, h.routines) == (50, [nine], [f"report-{i:02d}" for i in range(50)])
    assert h.jitter_ms == 60_000  # (50 - 1) s rounded up to a value one writes
    spread = [(nine + jitter_offset_ms(t.name, nine, 60_000)) // 1000 for t in herd]
    assert h.max_after == max(spread.count(s) for s in spread) < 10
    assert f.busiest[0].at_ms == nine and f.busiest[0].runs == 50


def test_hourly_herd_is_one_herd_in_every_hour_and_its_jitter_is_capped() -> None:
    f = forecast([timing(f"h{i:03d}", cron="0 * * * *") for i in range(5000)], START, 24)
    assert len(f.herds) == 1 and len(f.herds[0].seconds) == 24 and f.herds[0].runs == 5000
    assert f.herds[0].jitter_ms == 30 * 60_000 and "capped" in f.herds[0].note  # half of the hour


def test_no_herd_below_the_threshold() -> None:
    f = forecast([timing(f"r{i}", cron="0 9 * * *") for i in range(9)], START, 24)
    assert f.herds == [] and f.busiest[0].runs == 9


# -- never runs ----------------------------------------------------------------------------------------


def test_impossible_cron_gives_exactly_one_never_runs_warning() -> None:
    f = forecast([timing("feb31", cron="* * 31 2 *"), timing("ok", cron="0 9 * * *")], START, 24)
    assert [(n.name, n.kind) for n in f.never] == [("feb31", "no_date")]
    assert f.never[0].message == "routine \"feb31\" can never run: cron '* * 31 2 *' matches no date in any year"
    assert [r.name for r in f.routines] == ["ok"]


def test_past_at_never_runs_again() -> None:
    f = forecast([timing("once", at="2026-01-01T00:00:00Z")], START, 24)
    assert [(n.name, n.kind) for n in f.never] == [("once", "past")]


QUIET = {"start": "22:00", "end": "07:00", "timezone": "Europe/Prague"}


def test_routine_always_in_quiet_hours_is_one_warning_not_one_per_fire() -> None:
    f = forecast([timing("late", cron="0 23 * * *", timezone="Europe/Prague", quiet=QUIET),
                  timing("busy", cron="*/10 * * * *", quiet=QUIET)], START, 7 * 24)
    assert [(n.name, n.kind) for n in f.never] == [("late", "quiet_hours")]
    assert "every fire time" in f.never[0].message and "22:00–07:00 Europe/Prague" in f.never[0].message
    late = next(r for r in f.routines if r.name == "late")
    assert (len(late.due), late.quiet_skipped) == (0, 7)


def test_never_runs_check_sees_a_dst_change_months_ahead_and_jitter() -> None:
    """05:30 UTC is 06:30 in Prague's winter (quiet) and 07:30 in its summer (not): it does run."""
    f = forecast([timing("summer", cron="30 5 * * *", quiet=QUIET),
                  timing("late-jitter", cron="0 23 * * *", timezone="Europe/Prague", quiet=QUIET, jitter_ms=30 * 60_000),
                  timing("edge-jitter", cron="50 6 * * *", timezone="Europe/Prague", quiet=QUIET, jitter_ms=30 * 60_000),
                  timing("every", every="24h", anchor=START - 3 * H, quiet=QUIET)], START, 24)
    assert sorted(n.name for n in f.never) == ["every", "late-jitter"]
    every = next(n for n in f.never if n.name == "every")
    assert "in the next 400 days" in every.message


def test_deferred_quiet_hours_run_once_at_the_window_end() -> None:
    quiet = {**QUIET, "action": "defer"}
    f = forecast([timing("late", cron="0,30 23 * * *", timezone="Europe/Prague", quiet=quiet)], START, 36)
    assert f.never == []
    late = next(r for r in f.routines if r.name == "late")
    assert fires(f, "late") == [parse_rfc3339("2026-12-05T07:00:00+01:00")]
    assert (late.deferred, late.quiet_skipped) == (1, 1)  # 23:00 waits for the window's end, 23:30 is dropped


def test_quiet_windows_between_agree_with_contains_across_dst() -> None:
    qh = QuietHours("01:30", "02:45", "Europe/Prague")
    start = parse_rfc3339("2026-03-27T00:00:00Z")
    windows = qh.windows_between(start, start + 4 * 24 * H)
    for t in range(start, start + 4 * 24 * H, 5 * 60_000):
        assert qh.contains(t) == any(s <= t < e for s, e in windows), rfc3339(t)


def test_json_instants_format_like_rfc3339() -> None:
    import numpy as np

    values = [START, START + 1, START + 999, START + 60_000, START + 123_456]
    assert instants(np.array(values, dtype=np.int64)) == [rfc3339(v) for v in values]
    assert instants(np.array([START], dtype=np.int64)) == [rfc3339(START)]


# -- CLI -----------------------------------------------------------------------------------------------


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    d = tmp_path / "routines.d"
    write(d, "herd.yaml", *[routine_yaml(f"report-{i:02d}") for i in range(12)])
    write(d, "late.yaml", routine_yaml("late", cron="0 23 * * *", timezone="Europe/Prague", extra_spec="""\
        quiet_hours: {start: "22:00", end: "07:00", timezone: Europe/Prague}
        """))
    write(d, "beat.yaml", routine_yaml("beat", cron=None, every="7m"))
    return d


def test_cli_text_lists_herd_never_runs_and_routines(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["forecast", "--dir", str(fleet), "--from", "2026-12-04T00:00:00Z"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out.startswith("Forecast 2026-12-04T00:00:00+00:00 to 2026-12-05T00:00:00+00:00 (24 h): "
                          "14 routines, 217 runs.\n")
    assert ("  12 runs due in the same second at 2026-12-04T09:00:00+00:00 (report-00, report-01, report-02, "
            "report-03, report-04 and 7 more): set policies.jitter: 15s on them") in out
    assert out.count('routine "late" can never run') == 1 and "falls in quiet hours" not in out.replace(
        "every fire time of its cron '0 23 * * *' in Europe/Prague in the next 400 days falls in quiet hours", "")
    assert "  beat          205  2026-12-04T00:07:00+00:00" in out


def test_cli_json_is_the_whole_forecast(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["forecast", "--dir", str(fleet), "--from", "2026-12-04T00:00:00Z", "--hours", "2", "-o", "json",
                 "--herd", "12"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["summary"] == {"routines": 14, "runs": 17, "not_forecast": 0, "herds": 0, "herd_seconds": 0,
                              "never_runs": 1}
    assert (doc["start"], doc["end"], doc["hours"], doc["herd_min"]) == (
        "2026-12-04T00:00:00+00:00", "2026-12-04T02:00:00+00:00", 2, 12)
    beat = next(r for r in doc["routines"] if r["name"] == "beat")
    assert len(beat["fire_times"]) == 17 and beat["fire_times"][:2] == ["2026-12-04T00:07:00+00:00",
                                                                        "2026-12-04T00:14:00+00:00"]
    assert doc["never_runs"][0]["routine"] == "late" and doc["never_runs"][0]["kind"] == "quiet_hours"


@pytest.mark.parametrize(("flags", "message"), [
    (["--hours", "0"], "palyra-ops: --hours: must be between 1 and 168, got 0\n"),
    (["--hours", "-1"], "palyra-ops: --hours: must be between 1 and 168, got -1\n"),
    (["--hours", "abc"], "palyra-ops: --hours: 'abc' is not an integer\n"),
    (["--herd", "1"], "palyra-ops: --herd: must be between 2 and 1000000, got 1\n"),
    (["--from", "tomorrow"], "palyra-ops: --from: 'tomorrow' is not an RFC 3339 date-time with offset "
                             "(e.g. 2026-03-29T00:00:00+01:00)\n"),
])
def test_cli_bad_input_is_one_line_and_exit_1(fleet: Path, flags: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["forecast", "--dir", str(fleet), *flags])
    out, err = capsys.readouterr()
    assert (code, out, err) == (1, "", message)


def test_cli_subprocess_missing_sources_and_invalid_directory(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "palyra_ops", "forecast", *args], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path, env=env)

    missing = run("--dir", str(tmp_path / "nope"))
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == f"palyra-ops: routine directory {tmp_path / 'nope'} does not exist (pass --dir DIR)\n"
    nojournal = run("--journal", str(tmp_path / "j.sqlite3"))
    assert (nojournal.returncode, nojournal.stderr) == (1, f"palyra-ops: journal {tmp_path / 'j.sqlite3'} does not exist\n")
    assert not (tmp_path / "j.sqlite3").exists()
    both = run("--dir", "x", "--journal", "y")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    bad = tmp_path / "bad"
    write(bad, "feb.yaml", routine_yaml("feb31", cron="* * 31 2 *"))
    invalid = run("--dir", str(bad))
    assert invalid.returncode == 1 and invalid.stdout == ""
    assert "never fires" in invalid.stderr and invalid.stderr.endswith("1 error; nothing forecast.\n")


def test_cli_journal_uses_the_jobs_anchor(fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from palyra_ops.journal import open_journal
    from palyra_ops.reconcile import apply_plan, plan_directory

    journal = tmp_path / "journal.sqlite3"
    applied = parse_rfc3339("2026-12-03T23:50:00Z")
    plan, _ = plan_directory(fleet, journal, clock=FakeClock(applied))
    with open_journal(journal, clock=FakeClock(applied)) as j:
        apply_plan(j, plan, directory=fleet)
    code = main(["forecast", "--journal", str(journal), "--from", "2026-12-04T00:00:00Z", "--hours", "1",
                 "-o", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    beat = next(r for r in doc["routines"] if r["name"] == "beat")
    # every 7m from the apply at 23:50: 23:57, 00:04, ...
    assert beat["fire_times"][:2] == ["2026-12-04T00:04:00+00:00", "2026-12-04T00:11:00+00:00"]
    from palyra_ops.pause import pause

    with open_journal(journal, clock=FakeClock(applied)) as j:
        pause(j, "beat", note="maintenance", by="test")
    assert main(["forecast", "--journal", str(journal), "--from", "2026-12-04T00:00:00Z", "--hours", "1",
                 "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "beat" not in [r["name"] for r in doc["routines"]] and doc["summary"]["not_forecast"] == 1  # paused


# -- plan's warning ------------------------------------------------------------------------------------


def test_plan_warns_of_a_herd_and_a_never_running_routine_once(fleet: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "journal.sqlite3"
    code = main(["plan", "--dir", str(fleet), "--journal", str(journal)])
    out = capsys.readouterr().out
    assert code == 0
    warnings = [line for line in out.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith('Warning: routine "late" can never run: every fire time of its cron')
    assert warnings[1].startswith("Warning: herd: 12 runs due in the same second at ")
    assert "set policies.jitter: 15s on them" in warnings[1]
    assert "falls in quiet hours 22:00–07:00 Europe/Prague; it will be skipped" not in out  # not once per fire
    doc = json.loads(subprocess.run([sys.executable, "-m", "palyra_ops", "plan", "--dir", str(fleet), "--journal",
                                     str(journal), "-o", "json"], capture_output=True, text=True, timeout=120,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout)
    assert [w.split(":")[0] for w in doc["warnings"]] == ['routine "late" can never run', "herd"]


def test_plan_warns_only_about_what_it_changes(fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "journal.sqlite3"
    assert main(["apply", "--dir", str(fleet), "--journal", str(journal), "--auto-approve"]) == 0
    capsys.readouterr()
    assert main(["plan", "--dir", str(fleet), "--journal", str(journal)]) == 0
    assert "Warning:" not in capsys.readouterr().out  # an unchanged fleet is not nagged on every plan
    write(fleet, "beat.yaml", routine_yaml("beat", cron=None, every="8m"))
    assert main(["plan", "--dir", str(fleet), "--journal", str(journal)]) == 0
    assert "Warning:" not in capsys.readouterr().out  # beat is in no herd and runs
    write(fleet, "beat.yaml", routine_yaml("beat"))  # now at 09:00 with the others
    assert main(["plan", "--dir", str(fleet), "--journal", str(journal), "--target", "beat"]) == 0
    out = capsys.readouterr().out
    assert "Warning: herd: 13 runs due in the same second at " in out and "never run" not in out


def test_timing_of_body_reads_what_the_routine_model_reads(fleet: Path) -> None:
    from palyra_ops.model import Routine
    from palyra_ops.source import iter_documents, load_directory

    docs = list(iter_documents(load_directory(fleet), "Routine"))
    assert len(docs) == 14
    for doc in docs:
        assert Timing.of_body(doc.name, doc.body) == Timing.of(Routine.from_resource(doc))
    off = {"spec": {"enabled": False, "trigger": {"kind": "schedule", "schedule": {"cron": "* * * * *"}}}}
    assert Timing.of_body("off", off) is None
    assert Timing.of_body("hook", {"spec": {"trigger": {"kind": "manual"}}}) is None


def test_herd_members_that_fire_often_get_half_their_interval() -> None:
    herd = [timing(f"daily-{i:02d}", cron="0 9 * * *") for i in range(40)]
    herd += [timing(f"often-{i}", cron="* * * * *") for i in range(3)]
    f = forecast(herd, START, 24)
    nine_ms = parse_rfc3339("2026-12-04T09:00:00Z")
    nine = next(h for h in f.herds if h.seconds == [nine_ms])
    assert nine.runs == 43 and nine.jitter_ms == 60_000
    assert nine.note == "3 of them fire more often than every 2m: give those half their interval"
    due = [(nine_ms + jitter_offset_ms(t.name, nine_ms, 60_000 if t.name.startswith("daily") else 30_000)) // 1000
           for t in herd]
    assert nine.max_after == max(due.count(s) for s in due)


def test_cli_text_of_an_empty_and_a_single_routine_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "routines.d"
    d.mkdir()
    assert main(["forecast", "--dir", str(d), "--from", "2026-12-04T00:00:00Z", "--hours", "1"]) == 0
    assert capsys.readouterr().out == ("Forecast 2026-12-04T00:00:00+00:00 to 2026-12-04T01:00:00+00:00 (1 h): "
                                       "0 routines, 0 runs.\n\nHerds (10 or more runs due in the same second): none\n")
    write(d, "a.yaml", routine_yaml("one", cron="30 0 * * *"), routine_yaml("hook", cron=None, every="1h").replace(
        "kind: schedule\n    schedule:\n      every: 1h\n", "kind: manual\n"))
    assert main(["forecast", "--dir", str(d), "--from", "2026-12-04T00:00:00Z", "--hours", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Forecast 2026-12-04T00:00:00+00:00 to 2026-12-04T01:00:00+00:00 (1 h): 1 routine, 1 run.\n"
                          "Not forecast: 1 routine (not on a schedule, disabled or paused).\n")
    assert "  2026-12-04T00:30:00+00:00       1 run   one\n" in out


def test_forecast_is_what_the_scheduler_then_does(runtime_factory: Any) -> None:
    """A real scheduler and gateway on a fake clock run 8 h; their started runs are the forecast's."""
    import asyncio

    from palyra_ops.model import Routine

    async def main() -> None:
        rt = runtime_factory(START)
        sched = {"kind": "schedule"}
        rt.routine("jit", trigger={**sched, "schedule": {"cron": "*/20 * * * *"}}, policies={"jitter": "2m"})
        rt.routine("beat", trigger={**sched, "schedule": {"every": "45m"}})
        rt.routine("night", trigger={**sched, "schedule": {"cron": "10 * * * *"}}, quiet_hours=QUIET)
        rt.routine("later", trigger={**sched, "schedule": {"cron": "40 */2 * * *"}},
                   quiet_hours={**QUIET, "action": "defer"})
        snap = rt.journal.snapshot()
        timings = [Timing.of(Routine.from_resource(r), snap.jobs[name]) for (_, name), r in snap.resources.items()]
        f = forecast([t for t in timings if t is not None], START, 8)
        await rt.run_until(START + 8 * H)
        for name in ("jit", "beat", "night", "later"):
            started = [r["started_at_ms"] for r in rt.runs(name) if r["status"] == "succeeded"]
            assert started == fires(f, name), name
        assert fires(f, "later") == [START + 6 * H, START + 6 * H + 40 * 60_000]  # deferred to 07:00 Prague, then 06:40Z
        # the 08:00 run of jit is jittered past the window
        assert len(fires(f, "jit")) == 23 and len(fires(f, "beat")) == 10 and len(fires(f, "night")) == 2
        night = next(r for r in f.routines if r.name == "night")
        skipped = [r for r in rt.runs("night") if r["status"] == "skipped"]
        assert night.quiet_skipped == len(skipped) == 6  # 00:10Z..05:10Z are 01:10..06:10 in Prague
        await rt.close()

    asyncio.run(main())


def test_forecast_split_over_two_processes_equals_the_sequential_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI computes a large fleet's per-routine runs on two cores (`split`): the value must be the
    one computed here alone, herds (whose jitter check rebuilds the child's schedules) included."""
    import palyra_ops.forecast as forecast_mod
    from palyra_ops.source.parallel import can_fork, run_split
    from palyra_ops.views.forecast_json import forecast_document

    if not can_fork():
        pytest.fail("this test needs os.fork (Linux)")
    quiet_skip = {"start": "22:00", "end": "07:00", "timezone": "Europe/Prague"}
    quiet_defer = {"start": "00:00", "end": "06:00", "timezone": "utc", "action": "defer"}
    fleet = [timing(f"nine-{i:03d}", cron="0 9 * * *") for i in range(60)]
    fleet += [timing(f"quarter-{i:03d}", cron="*/15 * * * *", jitter_ms=30_000, quiet=quiet_skip) for i in range(40)]
    fleet += [timing(f"every-{i:03d}", every=f"{5 + i % 7}m", anchor=START - i * 7_000, quiet=quiet_defer)
              for i in range(40)]
    fleet += [timing("never-feb-31", cron="* * 31 2 *"), timing("always-quiet", cron="30 23 * * *", quiet=quiet_skip)]
    monkeypatch.setattr(forecast_mod, "SPLIT_CHUNK", 7)
    calls: list[int] = []

    def splitter(n: int, work: Any) -> Any:
        calls.append(n)
        return run_split(n, work)

    alone = forecast_document(forecast(fleet, START, 24))
    split = forecast_document(forecast(fleet, START, 24, split=splitter))
    assert calls[0] == -(-len(fleet) // 7) and calls[1:] == [len(alone["herds"])]  # the routines, then the herds
    assert len(alone["herds"]) >= 2 and split == alone
    nine = next(h for h in alone["herds"] if h["seconds"] == ["2026-12-04T09:00:00+00:00"])
    assert {n for n in nine["routines"] if n.startswith("nine-")} == {f"nine-{i:03d}" for i in range(60)}
    assert nine["suggested_jitter"] is not None
    assert [n["routine"] for n in alone["never_runs"]] == ["never-feb-31", "always-quiet"]
