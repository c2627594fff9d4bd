"""`palyra-ops backfill NAME --from T1 --to T2 [--dry-run]` (SPEC §12), on a running daemon.

The daemon does the work (`POST /console/v1/routines/{name}/backfill`): the runs must go through its
gateway like every other run. This prints what it claimed, or with `--dry-run` what it would.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from palyra_ops.cli._common import add_output_flag, client_for, connection_parent, emit


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("backfill", parents=[connection_parent()],
                              help="run a routine's past instants in a range, through the normal gates")
    p.add_argument("name", help="routine name")
    p.add_argument("--from", dest="start", required=True, metavar="T1",
                   help="first instant of the range, RFC 3339 with offset (e.g. 2026-12-01T00:00:00Z)")
    p.add_argument("--to", dest="end", required=True, metavar="T2", help="last instant of the range (inclusive; not in the future)")
    p.add_argument("--dry-run", action="store_true", help="list the instants that would run; run nothing")
    add_output_flag(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        result = client.post(f"/console/v1/routines/{quote(args.name, safe='')}/backfill",
                             {"from": args.start, "to": args.end, "dry_run": bool(args.dry_run)})
    emit(result, args.output, backfill_text)
    return 0


def backfill_text(r: dict[str, Any]) -> str:
    name, todo, done = r["routine_id"], r["instants"], r["already_run"]
    order = "one after the other" if r["in_order"] else "at once (concurrency allow)"
    if r["dry_run"]:
        lines = [f"backfill of {name} from {r['from']} to {r['to']} (dry run): would run {len(todo)} "
                 f"instant{'s' if len(todo) != 1 else ''}, {order}"]
        lines += [f"  {t}" for t in todo]
    else:
        runs = r["runs"]
        lines = [f"backfill of {name} from {r['from']} to {r['to']}: {len(runs)} run{'s' if len(runs) != 1 else ''} "
                 f"sent, {order}; follow them with `palyra-ops cron logs {name}`"]
        lines += [f"  {x['scheduled_at']}  run {x['run_id']}" for x in runs]
    if done:
        lines.append(f"already run, left alone: {len(done)} instant{'s' if len(done) != 1 else ''}")
        lines += [f"  {t}" for t in done]
    return "\n".join(lines)
