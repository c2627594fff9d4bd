"""`plan`, `apply` and `status`: the GitOps loop on the command line (SPEC §3, §7)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

from palyra_ops.cli import preview_child
from palyra_ops.cli._common import (
    Lazy,
    add_dir_flag,
    add_journal_flag,
    add_output_flag,
    emit,
    emit_progress,
    installed_skills,
    print_warnings,
    state_paths,
    use_colour,
)
from palyra_ops.errors import PalyraError, UnknownTarget, ValidationFailed
from palyra_ops.journal import open_journal
from palyra_ops.journal.faults import journal_location
from palyra_ops.plan import Plan
from palyra_ops.plan_select import Selection
from palyra_ops.reconcile import apply_plan, plan_directory
from palyra_ops.syncstatus import SyncState, directory_status
from palyra_ops.views.plan_json import apply_document, invalid_document
from palyra_ops.views.plan_markdown import invalid_markdown, iter_markdown
from palyra_ops.views.plan_text import apply_text, iter_text, saved_text
from palyra_ops.views.status_text import status_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="show what apply would change")
    add_dir_flag(p)
    add_journal_flag(p)
    add_output_flag(p, extra=("markdown",))  # markdown: for a pull-request comment (docs/plan-operator.md)
    p.add_argument("--out", type=Path, help="save the plan to this file for a later `apply PLANFILE`")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when the plan has changes")
    p.add_argument("--prune-unmanaged", action="store_true", help="also delete objects created through the API")
    p.add_argument("--allow-empty", action="store_true", help="allow deleting every managed object")
    p.add_argument("--verbose", "-v", action="store_true", help="show unchanged fields too")
    add_target_flags(p)
    p.set_defaults(func=run_plan)

    a = sub.add_parser("apply", help="apply the directory (or a saved plan) to the journal")
    a.add_argument("planfile", nargs="?", type=Path, help="a plan saved with `plan --out`")
    add_dir_flag(a)
    add_journal_flag(a)
    add_output_flag(a)
    a.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    a.add_argument("--prune-unmanaged", action="store_true",
                   help="also delete unmanaged routines (created by the API or `cron add`) missing from the directory")
    a.add_argument("--allow-empty", action="store_true",
                   help="allow a directory with no routines (which deletes every managed routine)")
    add_target_flags(a)
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


def add_target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", action="append", metavar="NAME", default=[],
                        help="plan only this object (NAME or KIND/NAME, e.g. routine/daily-report); repeatable")
    parser.add_argument("--exclude", action="append", metavar="NAME", default=[],
                        help="leave this object out of the plan (NAME or KIND/NAME); repeatable")


def _journal_path(args: argparse.Namespace) -> Path:
    return state_paths(args).journal


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


#: processes that check the directory's files (a large one; `source.parallel`): the CLI's own
#: process, unlike the daemon's, has no threads that a fork could catch holding a lock
CHECK_WORKERS = 2


def _make_plan(args: argparse.Namespace, *, read_only: bool) -> Plan:
    require_directory(args.dir)
    plan, source = plan_directory(
        args.dir,
        _journal_path(args),
        prune_unmanaged=args.prune_unmanaged,
        allow_empty=args.allow_empty,
        known_skills=installed_skills(state_paths(args)),
        read_only=read_only,
        selection=Selection.from_flags(args.target, args.exclude),
        workers=CHECK_WORKERS,
    )
    print_warnings(source.warnings)
    return plan


def run_plan(args: argparse.Namespace) -> int:
    try:
        plan = _make_plan(args, read_only=True)
    except ValidationFailed as exc:
        found = exc.diagnostics
        emit(invalid_document(found), args.output, lambda _: "",  # the diagnostics go to stderr
             views={"markdown": lambda _: invalid_markdown(found)})
        print_diagnostics(exc)
        return 1
    if args.out:
        plan.save(args.out)
    saved = [saved_text(args.out)] if args.out else []
    emit(plan, args.output, lambda p: chain(iter_text(p, colour=use_colour(), verbose=args.verbose), saved),
         views={"markdown": iter_markdown})
    return 2 if args.detailed_exitcode and plan.has_changes else 0


def _confirm() -> bool:
    sys.stdout.write("\nDo you want to perform these actions? Only 'yes' will be accepted to approve.\n  Enter a value: ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip()
    return answer == "yes"


def run_apply(args: argparse.Namespace) -> int:
    if args.planfile:
        if args.target or args.exclude:
            raise UnknownTarget("a saved plan carries its own --target/--exclude: apply it as it is, "
                                "or make a new plan with other targets")
        plan = Plan.load(args.planfile)
        journal_path = args.journal or journal_location(plan.journal_path)
        directory = Path(plan.dir)
    else:
        try:
            plan = _make_plan(args, read_only=False)
        except ValidationFailed as exc:
            print_diagnostics(exc)
            return 1
        journal_path = _journal_path(args)
        directory = args.dir
    def shown() -> Iterator[str]:
        return iter_text(plan, colour=use_colour())

    if not plan.has_changes:
        emit(Lazy(lambda: apply_document(plan, None)), args.output, lambda _: shown())
        return 0
    preview: preview_child.Preview | None = None
    if args.auto_approve and preview_child.usable(args.output, len(plan.changes)):
        preview = preview_child.Preview(lambda: emit_progress(args.output, shown))  # beside the writes
    else:
        emit_progress(args.output, shown)  # the plan before the question; JSON is one document at the end
    if not args.auto_approve:
        if not sys.stdin.isatty():
            raise PalyraError("apply needs confirmation: run it on a terminal or pass --auto-approve")
        if not _confirm():
            print("Apply cancelled.")
            return 1
    try:
        with open_journal(journal_path) as journal:
            result = apply_plan(journal, plan, directory=directory,
                                before_commit=preview.wait if preview is not None else None)
    finally:
        if preview is not None:
            preview.wait_quietly()  # also when applying failed: its output ends before ours starts
    emit(Lazy(lambda: apply_document(plan, result)), args.output, lambda _: apply_text(result))
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


#: `status --detailed-exitcode` (SPEC §7): 0 Synced, 2 OutOfSync, 1 Invalid or error
STATUS_EXIT = {SyncState.SYNCED: 0, SyncState.OUT_OF_SYNC: 2, SyncState.INVALID: 1}


def run_status(args: argparse.Namespace) -> int:
    require_directory(args.dir)
    report = directory_status(args.dir, _journal_path(args), known_skills=installed_skills(state_paths(args)))
    report["daemon"] = live_daemon_status(args.url, args.token)
    emit(report, args.output, status_text)
    return STATUS_EXIT.get(report["state"], 1) if args.detailed_exitcode else 0


__all__ = ["register"]
