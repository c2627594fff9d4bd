"""`palyra-ops cron ...`: routines managed through a running daemon's console API.

These commands go through the daemon (not the journal file) so a change wakes its scheduler at once
and a run-now takes the gateway path like any other trigger. Routines made with `cron add` are
*unmanaged* (SPEC §3): plan lists them and leaves them alone.
"""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from palyra_ops.cli._common import add_output_flag, daemon_command, emit, listing, table
from palyra_ops.client import ConsoleClient
from palyra_ops.errors import PalyraError
from palyra_ops.numbers import cli_int

API = "/console/v1"
DELIVERY_MODES = ("same_channel", "specific_channel", "local_only", "logs_only")
#: a note after a change through the API to a routine git manages
GIT_MANAGED_NOTE = "  note: this routine is managed by git; the next `palyra-ops apply` restores the git version"


def register(subparsers: Any) -> None:
    handlers = {"add": _add, "list": _list, "status": _status, "show": _show, "enable": _enable, "disable": _enable,
                "pause": _pause, "resume": _pause, "run-now": _run_now, "delete": _delete, "logs": _logs}
    sub, conn = daemon_command(subparsers, "cron", "add, inspect and run routines on a running daemon", "cron_command",
                               handlers)

    add = sub.add_parser("add", parents=[conn], help="create or update a schedule routine (unmanaged)")
    add.add_argument("name", help="routine id (metadata.name)")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='5-field cron expression, e.g. "0 9 * * 1-5"')
    when.add_argument("--every", help="fixed interval, e.g. 15m")
    when.add_argument("--at", help="one shot, RFC 3339 with offset")
    add.add_argument("--timezone", help="utc (default), local or an IANA zone")
    add.add_argument("--prompt", required=True, help="what the agent is asked to do")
    add.add_argument("--description", help="free text shown in plans and the console")
    add.add_argument("--owner", help="principal the run is evaluated for (default system:daemon)")
    add.add_argument("--channel", help="origin channel (default system:cron)")
    add.add_argument("--delivery-mode", choices=DELIVERY_MODES, help="where the output goes (default logs_only)")
    add.add_argument("--delivery-channel", help="Channel name for --delivery-mode specific_channel")
    add.add_argument("--disabled", action="store_true", help="store the routine disabled")
    add_output_flag(add)

    lst = sub.add_parser("list", parents=[conn], help="list routines")
    lst.add_argument("--trigger-kind", choices=["schedule", "hook", "webhook", "system_event", "manual"],
                     help="only routines with this trigger kind")
    lst.add_argument("--enabled", choices=["true", "false"], help="only enabled / disabled routines")
    lst.add_argument("--channel", help="only routines with this origin or delivery channel")
    add_output_flag(lst)

    status = sub.add_parser("status", parents=[conn], help="state, next run and last status of scheduled routines")
    add_output_flag(status)

    show = sub.add_parser("show", parents=[conn], help="one routine: definition and state")
    show.add_argument("name", help="routine name")
    add_output_flag(show)

    for action, text in (("enable", "enable a routine"), ("disable", "disable a routine")):
        p = sub.add_parser(action, parents=[conn], help=text)
        p.add_argument("name", help="routine name")
        add_output_flag(p)

    p = sub.add_parser("pause", parents=[conn], help="pause a routine: its due times are recorded as skipped "
                                                      "(paused) until it is resumed")
    p.add_argument("name", help="routine name")
    p.add_argument("--note", help="why it is paused (shown by status, plan, logs and the console)")
    add_output_flag(p)
    p = sub.add_parser("resume", parents=[conn], help="resume a paused routine from its next due time")
    p.add_argument("name", help="routine name")
    add_output_flag(p)

    run_now = sub.add_parser("run-now", parents=[conn], help="dispatch a run now (manual trigger)")
    run_now.add_argument("name", help="routine name")
    run_now.add_argument("--dedupe-key", help="drop the run when one with this key exists")
    add_output_flag(run_now)

    delete = sub.add_parser("delete", parents=[conn], help="delete a routine")
    delete.add_argument("name", help="routine name")
    add_output_flag(delete)

    logs = sub.add_parser("logs", parents=[conn], help="a routine's runs, newest first")
    logs.add_argument("name", help="routine name")
    logs.add_argument("--limit", type=cli_int(), default=20, help="how many runs (1-500, default 20)")
    logs.add_argument("--status", help="only runs with this status")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="after the last runs, keep printing new runs and status changes (oldest first, one line "
                           "each; JSON lines with -o json) until Ctrl-C or the daemon stops")
    logs.add_argument("--interval", type=_interval, default=1.0, metavar="SECONDS",
                      help="with --follow: how often to ask the daemon (0.1-60, default 1)")
    add_output_flag(logs)


# -- spec building -----------------------------------------------------------------------------------


def build_upsert(args: argparse.Namespace) -> dict[str, Any]:
    """The upsert body for `cron add`: a schedule routine in the routine file's `spec` shape."""
    spec: dict[str, Any] = {"trigger": {"kind": "schedule", "schedule": _schedule(args)}, "prompt": args.prompt}
    if args.disabled:
        spec["enabled"] = False
    spec.update({k: v for k, v in (("owner", args.owner), ("channel", args.channel)) if v})
    delivery = _delivery(args)
    if delivery:
        spec["delivery"] = delivery
    body: dict[str, Any] = {"name": args.name, "spec": spec}
    if args.description:
        body["description"] = args.description
    return body


def _schedule(args: argparse.Namespace) -> dict[str, Any]:
    if args.cron is not None:
        schedule: dict[str, Any] = {"cron": args.cron}
    elif args.every is not None:
        schedule = {"every": args.every}
    else:
        schedule = {"at": args.at}
    if args.timezone:
        schedule["timezone"] = args.timezone
    return schedule


def _delivery(args: argparse.Namespace) -> dict[str, Any] | None:
    """`--delivery-channel` alone means `specific_channel` (the only mode that takes a channel)."""
    mode = args.delivery_mode or ("specific_channel" if args.delivery_channel else None)
    if not mode:
        return None
    return {"mode": mode, **({"channel": args.delivery_channel} if args.delivery_channel else {})}


# -- rendering ---------------------------------------------------------------------------------------


def _next_run(view: dict[str, Any]) -> str:
    local, utc = view.get("next_run_at_local"), view.get("next_run_at")
    if not utc:
        return "none"
    return utc if local == utc else f"{local} ({utc})"


def _schedule_text(schedule: dict[str, Any] | None) -> str:
    if not schedule:
        return "-"
    from palyra_ops.views import schedule_zone

    label = schedule_zone(schedule)[0]
    for key in ("cron", "every", "at"):
        if key in schedule:
            text = f"cron {schedule[key]!r}" if key == "cron" else f"{key} {schedule[key]}"
            return text if key == "at" and label[0] in "+-" else f"{text} ({label})"
    return json.dumps(schedule)


def _ownership(view: dict[str, Any]) -> str:
    if not view.get("managed"):
        return "unmanaged"
    return "managed, drifted" if view.get("drift") else "managed"


def show_text(view: dict[str, Any]) -> str:
    spec = view.get("spec") or {}
    delivery = spec.get("delivery") or {}
    last = view.get("last_run")
    last_text = "never"
    if last:
        last_text = f"{last.get('status')} (run {last.get('run_id')}, started {last.get('started_at') or '-'})"
        if last.get("reason"):
            last_text += f": {last['reason']}"
    rows = [
        ("name", view["name"]),
        ("description", view.get("description") or "-"),
        ("trigger", view.get("trigger_kind")),
        ("schedule", _schedule_text(view.get("schedule"))),
        ("enabled", f"{str(view.get('enabled')).lower()} (effective {str(view.get('effective_enabled')).lower()}, "
                    f"approval {view.get('approval_state')})"),
        ("state", view.get("state")),
        *([("paused", (view["pause"].get("note") or "-") + f" (by {view['pause'].get('by')}, {view['pause'].get('at')})")]
          if view.get("pause") else []),
        ("next run", _next_run(view)),
        ("last run", last_text),
        ("owner", view.get("owner")),
        ("channel", view.get("channel")),
        ("delivery", delivery.get("mode", "-") + (f" → {delivery['channel']}" if delivery.get("channel") else "")),
        ("ownership", _ownership(view)),
        ("source file", view.get("source_file") or "-"),
        ("updated", view.get("updated_at")),
    ]
    width = max(len(k) for k, _ in rows) + 1
    return "\n".join(f"{(k + ':').ljust(width)} {v}" for k, v in rows)


def runs_table(runs: list[dict[str, Any]]) -> str:
    return table(
        ["RUN ID", "TRIGGER", "SCHEDULED", "STARTED", "FINISHED", "ATTEMPT", "STATUS", "REASON", "DELIVERY"],
        [
            [r["run_id"], r.get("trigger_kind"), r.get("scheduled_at"), r.get("started_at"), r.get("finished_at"),
             r.get("attempt"), r.get("status"), r.get("reason"), r.get("delivery_status")]
            for r in runs
        ],
    )


# -- actions -----------------------------------------------------------------------------------------


def _routine_path(name: str, suffix: str = "") -> str:
    return f"{API}/routines/{quote(name, safe='')}{suffix}"


def _add(client: ConsoleClient, args: argparse.Namespace) -> int:
    emit(client.post(f"{API}/routines/upsert", build_upsert(args)), args.output, _added_text)
    return 0


def _added_text(view: dict[str, Any]) -> str:
    verb = "created" if view.get("created") else "updated"
    lines = [f"{verb} routine {view['name']} ({_ownership(view)})"]
    if view.get("drift"):
        lines.append(GIT_MANAGED_NOTE)
    lines += [f"  schedule: {_schedule_text(view.get('schedule'))}", f"  next run: {_next_run(view)}"]
    return "\n".join(lines)


def _list(client: ConsoleClient, args: argparse.Namespace) -> int:
    items = client.paginate(
        f"{API}/routines", trigger_kind=args.trigger_kind, enabled=args.enabled, channel=args.channel
    )
    emit(items, args.output, listing("no routines", lambda items: table(
        ["NAME", "TRIGGER", "ENABLED", "STATE", "NEXT RUN (UTC)", "LAST STATUS", "OWNERSHIP"],
        [
            [v["name"], v.get("trigger_kind"), "yes" if v.get("effective_enabled") else "no", v.get("state"),
             v.get("next_run_at"), (v.get("last_run") or {}).get("status"), _ownership(v)]
            for v in items
        ],
    )))
    return 0


def _status(client: ConsoleClient, args: argparse.Namespace) -> int:
    items = client.get(f"{API}/cron/status").get("items", [])
    emit(items, args.output, listing("no scheduled routines", lambda items: table(
        ["NAME", "SCHEDULE", "TIMEZONE", "STATE", "NEXT RUN (LOCAL)", "NEXT RUN (UTC)", "LAST STATUS"],
        [
            [v["routine_id"], v.get("schedule"), v.get("timezone"), v.get("state"), v.get("next_run_at_local"),
             v.get("next_run_at"), v.get("last_status")]
            for v in items
        ],
    )))
    return 0


def _show(client: ConsoleClient, args: argparse.Namespace) -> int:
    emit(client.get(_routine_path(args.name)), args.output, show_text)
    return 0


def _enable(client: ConsoleClient, args: argparse.Namespace) -> int:
    enabled = args.cron_command == "enable"
    view = client.post(_routine_path(args.name, "/enabled"), {"enabled": enabled})
    emit(view, args.output, lambda view: _enabled_text(view, enabled))
    return 0


def _enabled_text(view: dict[str, Any], enabled: bool) -> str:
    lines = [f"{'enabled' if enabled else 'disabled'} routine {view['name']}"]
    if enabled and not view.get("effective_enabled"):
        lines.append(f"  note: waiting for approval ({view.get('approval_state')}); see `palyra-ops approvals list`")
    if view.get("drift"):
        lines.append(GIT_MANAGED_NOTE)
    if view.get("effective_enabled"):
        lines.append(f"  next run: {_next_run(view)}")
    return "\n".join(lines)


def _pause(client: ConsoleClient, args: argparse.Namespace) -> int:
    if args.cron_command == "pause":
        view = client.post(_routine_path(args.name, "/pause"), {"note": args.note} if args.note else {})
    else:
        view = client.post(_routine_path(args.name, "/resume"), {})
    emit(view, args.output, _paused_text)
    return 0


def _paused_text(view: dict[str, Any]) -> str:
    pause = view.get("pause")
    if pause:
        lines = [f"paused routine {view['name']}" + (f": {pause['note']}" if pause.get("note") else "")]
        lines.append("  its due times are recorded as skipped (paused); `palyra-ops cron resume` starts it again")
    else:
        lines = [f"resumed routine {view['name']}", f"  next run: {_next_run(view)}"]
    return "\n".join(lines)


def _run_now(client: ConsoleClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"routine_id": args.name, "trigger_kind": "manual"}
    if args.dedupe_key:
        body["dedupe_key"] = args.dedupe_key
    emit(client.post(f"{API}/routines/dispatch", body), args.output, lambda run: _dispatched_text(args.name, run))
    return 0


def _dispatched_text(name: str, run: dict[str, Any]) -> str:
    line = f"dispatched {name}: run {run.get('run_id')} {run.get('status')}"
    if run.get("reason"):
        line += f" ({run['reason']})"
    return f"{line}\n  follow it with `palyra-ops cron logs {name}`"


def _delete(client: ConsoleClient, args: argparse.Namespace) -> int:
    emit(client.post(_routine_path(args.name, "/delete"), {}), args.output, lambda result: _deleted_text(args.name, result))
    return 0


def _deleted_text(name: str, result: dict[str, Any]) -> str:
    text = f"deleted routine {name}"
    if result.get("managed"):
        text += "\n  note: it is still in the routine directory; the next `palyra-ops apply` creates it again"
    return text


def _logs(client: ConsoleClient, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 500:
        raise PalyraError(f"--limit must be between 1 and 500, got {args.limit}")
    if args.follow:
        from palyra_ops.cli.follow import follow_runs

        return follow_runs(client, _routine_path(args.name, "/runs"), args)
    page = client.get(_routine_path(args.name, "/runs"), limit=args.limit, status=args.status)
    emit(page.get("items", []), args.output, listing(f"no runs of {args.name} yet", runs_table))
    return 0


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= value <= 60:
        raise argparse.ArgumentTypeError(f"must be between 0.1 and 60 seconds, got {text}")
    return value
