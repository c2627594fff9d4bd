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
    emit,
    installed_skills,
    nothing,
    print_warnings,
    state_paths,
    use_colour,
)
from palyra_ops.errors import PalyraError, ValidationFailed
from palyra_ops.journal import open_journal
from palyra_ops.plan import Plan
from palyra_ops.reconcile import apply_plan, plan_directory
from palyra_ops.statepaths import StatePaths
from palyra_ops.syncstatus import directory_status, exit_code
from palyra_ops.views import plan_json
from palyra_ops.views.plan_text import render_text
from palyra_ops.views.status_text import render_status


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


def _make_plan(args: argparse.Namespace, paths: StatePaths, *, read_only: bool) -> Plan:
    require_directory(args.dir)
    plan, source = plan_directory(
        args.dir,
        paths.journal,
        prune_unmanaged=args.prune_unmanaged,
        allow_empty=args.allow_empty,
        known_skills=installed_skills(paths),
        read_only=read_only,
    )
    print_warnings(source.warnings)
    return plan


def run_plan(args: argparse.Namespace) -> int:
    try:
        plan = _make_plan(args, state_paths(args), read_only=True)
    except ValidationFailed as exc:
        emit(plan_json.invalid_document(exc), args.output, nothing)  # JSON only: the text is on stderr
        print_diagnostics(exc)
        return 1
    if args.out:
        plan.save(args.out)
    saved = f"\nSaved the plan to {args.out}; apply it with: palyra-ops apply {args.out}" if args.out else ""
    emit(plan, args.output, lambda p: render_text(p, colour=use_colour(), verbose=args.verbose) + saved)
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
        paths = state_paths(args)
        try:
            plan = _make_plan(args, paths, read_only=False)
        except ValidationFailed as exc:
            print_diagnostics(exc)
            return 1
        journal_path = paths.journal
        directory = args.dir
    # the text shows the plan before asking; the JSON document is the outcome alone
    emit(plan, args.output, {"text": lambda p: render_text(p, colour=use_colour()), "json": nothing})
    if not plan.has_changes:
        emit(plan_json.not_applied_document(plan), args.output, nothing)
        return 0
    if not args.auto_approve:
        if not sys.stdin.isatty():
            raise PalyraError("apply needs confirmation: run it on a terminal or pass --auto-approve")
        if not _confirm():
            print("Apply cancelled.")
            return 1
    with open_journal(journal_path) as journal:
        result = apply_plan(journal, plan, directory=directory)
    emit(plan_json.applied_document(result), args.output, lambda _: (
        f"Apply complete! Resources: {result.added} added, {result.changed} changed, {result.deleted} deleted."))
    return 0


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


def run_status(args: argparse.Namespace) -> int:
    paths = state_paths(args)
    require_directory(args.dir)
    report = directory_status(args.dir, paths.journal, known_skills=installed_skills(paths))
    report["daemon"] = live_daemon_status(args.url, args.token)
    emit(report, args.output, render_status)
    return exit_code(report["state"]) if args.detailed_exitcode else 0


__all__ = ["register"]
