"""`palyra-ops cron ...` and `approvals ...` over real HTTP.

A uvicorn server in a thread serves the console routes over a real journal (FakeClock, so output is
exact); the gateway is a stub here — the real daemon path is covered by test_console_e2e.py.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from test_console_api import StubGateway, StubScheduler

from palyra_ops.cli import main
from palyra_ops.clock import FakeClock, to_ms
from palyra_ops.context import DaemonContext
from palyra_ops.journal import open_journal
from palyra_ops.server import create_app

TOKEN = "cli-token"
NOW = datetime(2026, 3, 1, 7, 30, tzinfo=UTC)


class Server:
    def __init__(self, ctx: DaemonContext) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(ctx), log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "test server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DaemonContext, Any]]:
    clock = FakeClock(NOW)
    journal = open_journal(tmp_path / "journal.sqlite3", clock=clock)
    ctx = DaemonContext(journal=journal, clock=clock, config=None, token=TOKEN, internal_token="internal",
                        gateway=StubGateway(journal), scheduler=StubScheduler())
    monkeypatch.setenv("PALYRA_STATE_ROOT", str(tmp_path / "state"))
    monkeypatch.delenv("PALYRA_TOKEN", raising=False)
    with Server(ctx) as server:
        monkeypatch.setenv("PALYRA_URL", server.url)
        monkeypatch.setenv("PALYRA_TOKEN", TOKEN)
        yield ctx, server
    journal.close()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def add_daily(capsys: pytest.CaptureFixture[str], name: str = "daily", *extra: str) -> str:
    code, out, err = cli(capsys, "cron", "add", name, "--cron", "0 9 * * *", "--timezone", "Europe/Prague",
                         "--prompt", "Summarize", *extra)
    assert code == 0, err
    return out


def test_cron_add_text_and_json(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ctx, _ = served
    assert add_daily(capsys) == (
        "created routine daily (unmanaged)\n"
        "  schedule: cron '0 9 * * *' (Europe/Prague)\n"
        "  next run: 2026-03-01T09:00:00+01:00 (2026-03-01T08:00:00+00:00)\n"
    )
    code, out, _ = cli(capsys, "cron", "add", "heartbeat", "--every", "30s", "--prompt", "ping", "--owner", "user:alice",
                       "--channel", "cli:alice", "--delivery-mode", "same_channel", "--description", "beat",
                       "--output", "json")
    assert code == 0
    view = json.loads(out)
    assert (view["name"], view["created"], view["owner"], view["channel"], view["description"]) == (
        "heartbeat", True, "user:alice", "cli:alice", "beat")
    assert view["spec"]["trigger"] == {"kind": "schedule", "schedule": {"every": "30s", "timezone": "utc"}}
    assert view["spec"]["delivery"]["mode"] == "same_channel"
    assert view["next_run_at"] == "2026-03-01T07:30:30+00:00"
    # updating keeps it unmanaged and says so
    out = add_daily(capsys, "daily")
    assert out.startswith("updated routine daily (unmanaged)\n")
    assert ctx.journal.get_resource("Routine", "daily").managed is False


def test_cron_add_reports_validation_errors(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ctx, _ = served
    code, out, err = cli(capsys, "cron", "add", "Bad", "--cron", "61 9 * * *", "--timezone", "Mars/Base", "--prompt", "x")
    assert (code, out) == (1, "")
    assert err == (
        "palyra-ops: 3 validation errors\n"
        "  name: 'Bad' is not a valid name (lowercase letters, digits, '.', '_' or '-', 1-63 characters, "
        "starting and ending with a letter or digit)\n"
        "  spec.trigger.schedule.cron: '61 9 * * *' is not a valid cron expression: minute field '61' is out of range 0-59\n"
        "  spec.trigger.schedule.timezone: unknown time zone 'Mars/Base'\n"
    )
    assert ctx.journal.list_resources("Routine") == []


def test_cron_list_status_show(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ctx, _ = served
    add_daily(capsys)
    cli(capsys, "cron", "add", "beat", "--every", "15m", "--prompt", "ping")
    cli(capsys, "cron", "disable", "beat")
    code, out, _ = cli(capsys, "cron", "list")
    assert code == 0
    assert out == (
        "NAME   TRIGGER   ENABLED  STATE     NEXT RUN (UTC)             LAST STATUS  OWNERSHIP\n"
        "beat   schedule  no       Disabled  2026-03-01T07:45:00+00:00  -            unmanaged\n"
        "daily  schedule  yes      Pending   2026-03-01T08:00:00+00:00  -            unmanaged\n"
    )
    code, out, _ = cli(capsys, "cron", "status")
    assert out == (
        "NAME   SCHEDULE   TIMEZONE       STATE     NEXT RUN (LOCAL)           NEXT RUN (UTC)             LAST STATUS\n"
        "beat   every 15m  utc            Disabled  2026-03-01T07:45:00+00:00  2026-03-01T07:45:00+00:00  -\n"
        "daily  0 9 * * *  Europe/Prague  Pending   2026-03-01T09:00:00+01:00  2026-03-01T08:00:00+00:00  -\n"
    )
    code, out, _ = cli(capsys, "cron", "status", "--output", "json")
    items = json.loads(out)
    assert [(i["routine_id"], i["state"], i["next_run_at_local"]) for i in items] == [
        ("beat", "Disabled", "2026-03-01T07:45:00+00:00"), ("daily", "Pending", "2026-03-01T09:00:00+01:00")]
    code, out, _ = cli(capsys, "cron", "list", "--enabled", "true", "--output", "json")
    assert [v["name"] for v in json.loads(out)] == ["daily"]
    code, out, _ = cli(capsys, "cron", "show", "daily")
    assert out == (
        "name:        daily\n"
        "description: -\n"
        "trigger:     schedule\n"
        "schedule:    cron '0 9 * * *' (Europe/Prague)\n"
        "enabled:     true (effective true, approval none)\n"
        "state:       Pending\n"
        "next run:    2026-03-01T09:00:00+01:00 (2026-03-01T08:00:00+00:00)\n"
        "last run:    never\n"
        "owner:       system:daemon\n"
        "channel:     system:cron\n"
        "delivery:    logs_only\n"
        "ownership:   unmanaged\n"
        "source file: -\n"
        "updated:     2026-03-01T07:30:00+00:00\n"
    )
    code, out, err = cli(capsys, "cron", "show", "nope")
    assert (code, out, err) == (1, "", "palyra-ops: no routine 'nope'\n")


def test_cron_status_shows_an_at_routine_in_the_offset_it_was_written_in(served: Any,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`at: ...+01:00` used to show its "local" time in utc (the timezone field's default)."""
    cli(capsys, "cron", "add", "once", "--at", "2026-03-02T10:00:00+01:00", "--prompt", "p")
    cli(capsys, "cron", "add", "once-utc", "--at", "2026-03-02T10:00:00Z", "--prompt", "p")
    cli(capsys, "cron", "add", "once-ny", "--at", "2026-03-02T10:00:00+01:00", "--timezone", "America/New_York",
        "--prompt", "p")
    code, out, _ = cli(capsys, "cron", "status")
    assert (code, out) == (0,
        "NAME      SCHEDULE                      TIMEZONE          STATE    NEXT RUN (LOCAL)           NEXT RUN (UTC)             LAST STATUS\n"
        "once      at 2026-03-02T10:00:00+01:00  +01:00            Pending  2026-03-02T10:00:00+01:00  2026-03-02T09:00:00+00:00  -\n"
        "once-ny   at 2026-03-02T10:00:00+01:00  America/New_York  Pending  2026-03-02T04:00:00-05:00  2026-03-02T09:00:00+00:00  -\n"
        "once-utc  at 2026-03-02T10:00:00Z       utc               Pending  2026-03-02T10:00:00+00:00  2026-03-02T10:00:00+00:00  -\n")
    code, out, _ = cli(capsys, "cron", "show", "once")
    assert "schedule:    at 2026-03-02T10:00:00+01:00\n" in out
    assert "next run:    2026-03-02T10:00:00+01:00 (2026-03-02T09:00:00+00:00)\n" in out


def test_enable_run_now_logs_delete(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ctx, _ = served
    add_daily(capsys)
    code, out, _ = cli(capsys, "cron", "disable", "daily")
    assert out == "disabled routine daily\n"
    code, out, _ = cli(capsys, "cron", "enable", "daily")
    assert out == "enabled routine daily\n  next run: 2026-03-01T09:00:00+01:00 (2026-03-01T08:00:00+00:00)\n"
    code, out, _ = cli(capsys, "cron", "run-now", "daily")
    assert code == 0
    m = re.fullmatch(r"dispatched daily: run (\w{26}) accepted\n  follow it with `palyra-ops cron logs daily`\n", out)
    assert m, out
    run_id = m.group(1)
    ctx.journal.update_run(run_id, status="failed", reason="backend error: 502", started_at_ms=to_ms(NOW),
                           finished_at_ms=to_ms(NOW) + 250, delivery_status="skipped")
    code, out, _ = cli(capsys, "cron", "logs", "daily")
    assert out == (
        "RUN ID                      TRIGGER  SCHEDULED  STARTED                    FINISHED                       "
        "ATTEMPT  STATUS  REASON              DELIVERY\n"
        f"{run_id}  manual   -          2026-03-01T07:30:00+00:00  2026-03-01T07:30:00.250+00:00  "
        "1        failed  backend error: 502  skipped\n"
    )
    code, out, _ = cli(capsys, "cron", "logs", "daily", "--output", "json", "--limit", "1")
    [run] = json.loads(out)
    assert (run["run_id"], run["status"], run["reason"], run["scheduled_at"]) == (run_id, "failed", "backend error: 502", None)
    code, _, err = cli(capsys, "cron", "logs", "daily", "--limit", "0")
    assert (code, err) == (1, "palyra-ops: --limit must be between 1 and 500, got 0\n")
    code, out, _ = cli(capsys, "cron", "delete", "daily")
    assert (code, out) == (0, "deleted routine daily\n")
    code, _, err = cli(capsys, "cron", "delete", "daily")
    assert (code, err) == (1, "palyra-ops: no routine 'daily'\n")


def test_approvals_cli(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ctx, _ = served
    add_daily(capsys)
    code, out, _ = cli(capsys, "approvals", "list")
    assert (code, out) == (0, "no pending approvals\n")
    with ctx.journal.transaction() as c:
        aid = ctx.journal.add_approval(c, routine_id="daily", kind="before_enable")
    code, out, _ = cli(capsys, "approvals", "list")
    assert out == (
        "APPROVAL ID                 ROUTINE  KIND           RUN ID  STATE    CREATED                    DECIDED BY\n"
        f"{aid}  daily    before_enable  -       pending  2026-03-01T07:30:00+00:00  -\n"
    )
    code, out, _ = cli(capsys, "approvals", "approve", aid)
    assert (code, out) == (0, f"approved before_enable approval {aid} of routine daily\n")
    code, out, _ = cli(capsys, "approvals", "list", "--state", "all", "--output", "json")
    [item] = json.loads(out)
    assert (item["state"], item["decided_by"]) == ("approved", "console")
    code, _, err = cli(capsys, "approvals", "deny", "nope")
    assert (code, err) == (1, "palyra-ops: no approval 'nope'\n")


def test_connection_and_token_errors(served: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: Path) -> None:
    _, server = served
    code, _, err = cli(capsys, "cron", "list", "--token", "wrong")
    assert (code, err) == (1, "palyra-ops: invalid bearer token (check --token / PALYRA_TOKEN, or `palyra-ops token`)\n")
    # token from the state root's token file when neither flag nor env is given
    monkeypatch.delenv("PALYRA_TOKEN")
    code, _, err = cli(capsys, "cron", "list")
    assert code == 1
    assert err == ("palyra-ops: no API token: pass --token, set PALYRA_TOKEN, or start the daemon once to create "
                   f"{tmp_path / 'state' / 'token'} (for a daemon with another state root, set PALYRA_STATE_ROOT)\n")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "token").write_text(TOKEN + "\n")
    code, out, _ = cli(capsys, "cron", "list")
    assert (code, out) == (0, "no routines\n")
    # nothing listening
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    code, _, err = cli(capsys, "cron", "status", "--url", dead)
    assert (code, err) == (1, f"palyra-ops: no daemon at {dead} (from --url): start one with `palyra-ops daemon` (or "
                              "`make run`), or point the CLI at it with --url/PALYRA_URL (and --token/PALYRA_TOKEN) or "
                              "PALYRA_STATE_ROOT=<the daemon's state root>\n")
