"""`plan`, `apply` and `status`: the GitOps loop on the command line (SPEC §3, §7)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from palyra_ops.cli._common import (
    add_dir_flag,
    add_journal_flag,
    add_output_flag,
    default_journal_path,
    installed_skills,
    print_json,
    print_warnings,
    use_colour,
)
from palyra_ops.clock import SystemClock, rfc3339
from palyra_ops.errors import JournalError, PalyraError, ValidationFailed
from palyra_ops.journal import open_journal
from palyra_ops.plan import Plan, render_text
from palyra_ops.reconcile import apply_plan, plan_directory
from palyra_ops.source import load_directory


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="show what apply would change")
    add_dir_flag(p)
    add_journal_flag(p)
    add_output_flag(p)
    p.add_argument("--out", type=Path, help="save the plan to this file for a later `apply PLANFILE`")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when the plan has changes")
    p.add_argument("--prune-unmanaged", action="store_true", help="also delete objects created through the API")
    p.add_argument("--allow-empty", action="store_true", help="allow deleting every managed object")
    p.add_argument("--verbose", "-v", action="store_true", help="show unchanged fields too")
    p.set_defaults(func=run_plan)

    a = sub.add_parser("apply", help="apply the directory (or a saved plan) to the journal")
    a.add_argument("planfile", nargs="?", type=Path, help="a plan saved with `plan --out`")
    add_dir_flag(a)
    add_journal_flag(a)
    add_output_flag(a)
    a.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    a.add_argument("--prune-unmanaged", action="store_true")
    a.add_argument("--allow-empty", action="store_true")
    a.set_defaults(func=run_apply)

    s = sub.add_parser("status", help="does the journal match the directory? last apply, next runs")
    add_dir_flag(s)
    add_journal_flag(s)
    add_output_flag(s)
    s.add_argument("--url", help="daemon URL for live state (default: $PALYRA_URL or http://127.0.0.1:7142)")
    s.add_argument("--token", help="API token (default: $PALYRA_TOKEN or the token file)")
    s.add_argument("--detailed-exitcode", action="store_true",
                   help="exit 0 when Synced, 2 when OutOfSync, 1 when Invalid or on error")
    s.set_defaults(func=run_status)


def _journal_path(args: argparse.Namespace) -> Path:
    return args.journal or default_journal_path()


def require_directory(directory: Path) -> None:
    """A mistyped --dir must not read as "no changes" (or as "delete everything")."""
    if not directory.exists() and not directory.is_symlink():
        raise PalyraError(f"routine directory {directory} does not exist (pass --dir DIR)")
    if not directory.is_dir():
        raise PalyraError(f"routine directory {directory} is not a directory")


def print_diagnostics(exc: ValidationFailed) -> None:
    for d in exc.diagnostics:
        print(d.format(), file=sys.stderr)
        if d.source_line:
            print(f"    {d.source_line}", file=sys.stderr)
            if d.column:
                print("    " + " " * (d.column - 1) + "^", file=sys.stderr)
    n = len(exc.diagnostics)
    print(f"{n} error{'s' if n != 1 else ''}; nothing planned.", file=sys.stderr)


def _make_plan(args: argparse.Namespace, *, read_only: bool) -> Plan:
    require_directory(args.dir)
    plan, source = plan_directory(
        args.dir,
        _journal_path(args),
        prune_unmanaged=args.prune_unmanaged,
        allow_empty=args.allow_empty,
        known_skills=installed_skills(),
        read_only=read_only,
    )
    print_warnings(source.warnings)
    return plan


def run_plan(args: argparse.Namespace) -> int:
    try:
        plan = _make_plan(args, read_only=True)
    except ValidationFailed as exc:
        if args.output == "json":
            print_json({"format_version": 1, "error": "invalid", "diagnostics": [d.to_json() for d in exc.diagnostics]})
        print_diagnostics(exc)
        return 1
    if args.out:
        plan.save(args.out)
    if args.output == "json":
        print_json(plan.to_json())
    else:
        sys.stdout.write(render_text(plan, colour=use_colour(), verbose=args.verbose))
        if args.out:
            print(f"\nSaved the plan to {args.out}; apply it with: palyra-ops apply {args.out}")
    return 2 if args.detailed_exitcode and plan.has_changes else 0


def _confirm() -> bool:
    sys.stdout.write("\nDo you want to perform these actions? Only 'yes' will be accepted to approve.\n  Enter a value: ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip()
    return answer == "yes"


def run_apply(args: argparse.Namespace) -> int:
    if args.planfile:
        plan = Plan.load(args.planfile)
        journal_path = args.journal or Path(plan.journal_path)
        directory = Path(plan.dir)
    else:
        try:
            plan = _make_plan(args, read_only=False)
        except ValidationFailed as exc:
            print_diagnostics(exc)
            return 1
        journal_path = _journal_path(args)
        directory = args.dir
    if args.output == "text":
        sys.stdout.write(render_text(plan, colour=use_colour()))
    if not plan.has_changes:
        if args.output == "json":
            print_json({"applied": False, "plan": plan.to_json()})
        return 0
    if not args.auto_approve:
        if not sys.stdin.isatty():
            raise PalyraError("apply needs confirmation: run it on a terminal or pass --auto-approve")
        if not _confirm():
            print("Apply cancelled.")
            return 1
    with open_journal(journal_path) as journal:
        result = apply_plan(journal, plan, directory=directory)
    if args.output == "json":
        print_json({
            "applied": True,
            "added": result.added,
            "changed": result.changed,
            "deleted": result.deleted,
            "serial": result.serial,
            "git_commit": result.git.commit if result.git else None,
            "git_dirty": result.git.dirty if result.git else None,
        })
    else:
        print(f"Apply complete! Resources: {result.added} added, {result.changed} changed, {result.deleted} deleted.")
    return 0


def status_report(directory: Path, journal_path: Path) -> dict[str, Any]:
    """Everything `status` shows, as data (also used for --output json)."""
    report: dict[str, Any] = {"dir": str(directory), "journal": str(journal_path)}
    require_directory(directory)
    skills = installed_skills()
    source = load_directory(directory, known_skills=skills)
    report["warnings"] = [w.format() for w in source.warnings]
    invalid = {f: r for f, r in source.files.items() if not r.ok}
    if invalid or not source.ok:
        report["state"] = "Invalid"
        report["invalid_files"] = [
            {"file": r.display, "diagnostics": [d.format() for d in r.diagnostics]} for r in invalid.values()
        ]
        report["diagnostics"] = [d.format() for d in source.diagnostics]
    else:
        try:
            plan, _ = plan_directory(directory, journal_path, allow_empty=True, known_skills=skills, read_only=True)
        except JournalError:
            raise  # the journal is at fault, not the directory: one line and exit 1, like every command
        except PalyraError as exc:
            report["state"] = "Invalid"
            report["error"] = exc.message
            plan = None
        if plan is not None:
            pending = [c for c in plan.changes if c.is_change]
            report["state"] = "OutOfSync" if pending else "Synced"
            report["out_of_sync"] = [
                {"kind": c.kind, "name": c.name, "action": c.action, "reason": c.reason, "file": c.source_file}
                for c in pending
            ]
            report["unmanaged"] = [c.name for c in plan.changes if c.action == "unmanaged"]
    if journal_path.exists():
        with open_journal(journal_path) as j:
            last = j.last_apply()
            report["serial"] = j.serial()
            report["last_apply"] = (
                {
                    "at": rfc3339(last["applied_at_ms"]),
                    "git_commit": last["git_commit"],
                    "git_dirty": bool(last["git_dirty"]) if last["git_dirty"] is not None else None,
                    "added": last["added"],
                    "changed": last["changed"],
                    "deleted": last["deleted"],
                }
                if last
                else None
            )
            report["next_runs"] = [
                {"routine_id": job["routine_id"], "next_run_at": rfc3339(job["next_run_at_unix_ms"])}
                for job in j.upcoming_jobs(5)
            ]
    else:
        report["last_apply"] = None
        report["next_runs"] = []
    report["checked_at"] = rfc3339(SystemClock().now_ms())
    return report


def live_daemon_status(url: str | None, token: str | None) -> dict[str, Any]:
    """The running daemon's own view (scheduler, watcher, tasks), or why there is none.

    Status must answer even with no daemon up, so every failure here is data, not an error.
    """
    from palyra_ops.client import ConsoleClient

    try:
        with ConsoleClient(url, token, timeout=2.0) as client:
            return {"reachable": True, "url": client.url, **client.get("/console/v1/system/status")}
    except PalyraError as exc:
        return {"reachable": False, "detail": exc.message}


#: `status --detailed-exitcode` (SPEC §7): 0 Synced, 2 OutOfSync, 1 Invalid or error
STATUS_EXIT = {"Synced": 0, "OutOfSync": 2, "Invalid": 1}


def _shown(value: Any, missing: str = "—") -> str:
    """A value for a human line: never the text `None`."""
    return missing if value is None or value == "" else str(value)


def run_status(args: argparse.Namespace) -> int:
    report = status_report(args.dir, _journal_path(args))
    report["daemon"] = live_daemon_status(args.url, args.token)
    code = STATUS_EXIT.get(report["state"], 1) if args.detailed_exitcode else 0
    if args.output == "json":
        print_json(report)
        return code
    print(f"State: {report['state']}  ({report['dir']} vs {report['journal']})")
    for f in report.get("invalid_files", []):
        print(f"  invalid: {f['file']}")
        for d in f["diagnostics"]:
            print(f"    {d}")
    if report.get("error"):
        print(f"  {report['error']}")
    for w in report.get("warnings", []):
        print(f"  warning: {w}")
    for c in report.get("out_of_sync", []):
        print(f"  {c['action']}: {c['kind'].lower()} {c['name']} ({_shown(c['reason'], 'changed')})")
    if report.get("unmanaged"):
        print(f"  unmanaged (left alone): {', '.join(report['unmanaged'])}")
    last = report.get("last_apply")
    if last:
        commit = last["git_commit"] or "not a git work tree"
        dirty = " (dirty)" if last["git_dirty"] else ""
        print(f"Last apply: {last['at']} from {commit[:12] if last['git_commit'] else commit}{dirty}")
    else:
        print("Last apply: never")
    if report["next_runs"]:
        print("Next runs:")
        for r in report["next_runs"]:
            print(f"  {r['next_run_at']}  {r['routine_id']}")
    for line in _daemon_lines(report["daemon"]):
        print(line)
    return code


def _daemon_lines(daemon: dict[str, Any]) -> list[str]:
    if not daemon.get("reachable"):
        return [f"Daemon: not reachable ({_shown(daemon.get('detail'))})"]
    sched = daemon.get("scheduler") or {}
    lines = [f"Daemon: up at {daemon['url']}"]
    if sched:
        lines.append(
            "  scheduler: last tick {}, due backlog {}, running {}, next due {}".format(
                _shown(sched.get("last_tick_at"), "not yet"), _shown(sched.get("due_backlog"), "0"),
                _shown(sched.get("running_count"), "0"), _shown(sched.get("next_due_at"), "nothing scheduled"),
            )
        )
    from palyra_ops.watcher import format_status

    lines.extend("  " + line for line in format_status(daemon.get("watcher") or {}))
    for name, task in (daemon.get("tasks") or {}).items():
        if not isinstance(task, dict):
            continue
        if task.get("last_run_at"):
            took = f" ({task['duration_ms']} ms)" if task.get("duration_ms") is not None else ""
            last = f"last {task['last_run_at']} {_shown(task.get('outcome'), 'running')}{took}"
        else:
            last = "not run yet"
        nxt = f", next {task['next_run_at']}" if task.get("next_run_at") else " (disabled)"
        lines.append(f"  task {name}: {last}{nxt}")
    return lines


__all__ = ["register", "status_report"]
