"""`palyra-ops explain NAME [--at T | --run ID]`: why a routine did or did not run (SPEC §12).

Read from the journal directly (read only, like `status`), so it answers also when the daemon is
down — often the answer. The reasoning is `palyra_ops.explain`; this prints it.
"""

from __future__ import annotations

import argparse
from typing import Any

from palyra_ops.cli._common import add_output_flag, emit, journal_arg, state_paths
from palyra_ops.clock import InstantError, SystemClock, parse_rfc3339
from palyra_ops.errors import PalyraError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("explain", help="why a routine did or did not run at a time: schedule, jitter, "
                                              "misfire, then each gate's verdict")
    p.add_argument("name", help="routine name")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--at", metavar="T", help="the instant to explain, RFC 3339 with offset (default: the "
                                                  "routine's last due time); the latest fire time at or before it is used")
    which.add_argument("--run", metavar="RUN_ID", help="explain this run (any trigger: manual, event, webhook)")
    p.add_argument("--journal", type=journal_arg, default=None,
                   help="journal path or postgresql:// URL (default: $PALYRA_JOURNAL, else $PALYRA_STATE_ROOT/journal.sqlite3)")
    add_output_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from palyra_ops.explain import explain
    from palyra_ops.journal import journal_exists, open_journal
    from palyra_ops.journal.faults import redact

    at = None
    if args.at is not None:
        try:
            at = parse_rfc3339(args.at)
        except InstantError as exc:
            raise PalyraError(f"--at: {exc}") from None
    location = state_paths(args).journal
    if not journal_exists(location):  # read only, as status: no file, no tables created
        raise PalyraError(f"journal {redact(str(location))} does not exist (nothing has been applied there)")
    with open_journal(location) as journal:
        ex = explain(journal, args.name, at_ms=at, run_id=args.run, now_ms=SystemClock().now_ms())
    emit(ex.to_json(), args.output, explain_text)
    return 0


def explain_text(doc: dict[str, Any]) -> str:
    head = f"routine {doc['routine_id']}"
    if doc.get("nominal"):
        head += f", occurrence {doc['nominal']}"
    if doc.get("run_id"):
        head += f", run {doc['run_id']}"
    width = max(len(s["step"]) for s in doc["steps"]) if doc["steps"] else 0
    lines = [head]
    for s in doc["steps"]:
        verdict = s["verdict"].upper() if s["verdict"] == "stop" else s["verdict"]
        lines.append(f"  {s['step']:<{width}}  {verdict:<11}  {s['detail']}".rstrip())
    decided = f"decided by {doc['decided_by']}" if doc.get("decided_by") else "no gate stopped it"
    lines.append(f"result: {doc['outcome']} ({decided})")
    return "\n".join(lines)
