"""`palyra-ops approvals list|approve ID|deny ID`: the human gate of SPEC §5.

Decisions go through the daemon's gateway (not the journal) because approving a `before_first_run`
approval must release the waiting run, which only the running daemon can do.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from palyra_ops.cli._common import add_output_flag, daemon_command, emit, listing, table
from palyra_ops.client import ConsoleClient

API = "/console/v1"
STATES = ("pending", "approved", "denied", "cancelled", "all")


def register(subparsers: Any) -> None:
    handlers = {"list": _list, "approve": _decide, "deny": _decide}
    sub, conn = daemon_command(subparsers, "approvals", "list, approve or deny pending approvals",
                               "approvals_command", handlers)
    lst = sub.add_parser("list", parents=[conn], help="approvals (pending by default)")
    lst.add_argument("--state", choices=STATES, default="pending", help="which approvals (default pending)")
    add_output_flag(lst)
    for action in ("approve", "deny"):
        p = sub.add_parser(action, parents=[conn], help=f"{action} an approval")
        p.add_argument("approval_id", metavar="ID", help="approval id (from `approvals list`)")
        add_output_flag(p)


def _list(client: ConsoleClient, args: argparse.Namespace) -> int:
    items = client.get(f"{API}/approvals", state=args.state).get("items", [])
    empty = f"no {args.state} approvals" if args.state != "all" else "no approvals"
    emit(items, args.output, listing(empty, lambda items: table(
        ["APPROVAL ID", "ROUTINE", "KIND", "RUN ID", "STATE", "CREATED", "DECIDED BY"],
        [
            [a["approval_id"], a.get("routine_id"), a.get("kind"), a.get("run_id"), a.get("state"),
             a.get("created_at"), a.get("decided_by")]
            for a in items
        ],
    )))
    return 0


def _decide(client: ConsoleClient, args: argparse.Namespace) -> int:
    action = args.approvals_command
    view = client.post(f"{API}/approvals/{quote(args.approval_id, safe='')}/{action}", {})
    emit(view, args.output, lambda v: (f"{v.get('state')} {v.get('kind')} approval {v.get('approval_id')} "
                                       f"of routine {v.get('routine_id')}"))
    return 0
