"""`palyra-ops schedule EXPR`: preview fire times with the scheduler's own code (SPEC §7).

The only clock read in the schedule area happens here (for the default `--from`), so what a user sees
is exactly what `palyra_ops.schedule.preview` computes for that instant.
"""

from __future__ import annotations

import argparse

from palyra_ops.cli._common import add_output_flag, emit
from palyra_ops.clock import InstantRangeError, SystemClock, parse_rfc3339
from palyra_ops.errors import PalyraError
from palyra_ops.numbers import cli_int
from palyra_ops.schedule import preview


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help="preview the next fire times of a schedule",
        description=(
            "Preview the next fire times of a schedule, noting DST gaps and repeated hours. "
            "EXPR is a cron expression ('0 9 * * 1-5', '@daily'), every:DURATION ('every:15m') "
            "or at:RFC3339 ('at:2026-12-24T18:00:00+01:00')."
        ),
    )
    parser.add_argument("expr", metavar="EXPR", help="cron expression, every:DURATION or at:RFC3339")
    parser.add_argument("--timezone", "--tz", default="utc", help="utc (default), local or an IANA name")
    parser.add_argument(
        "--from",
        dest="from_",
        metavar="RFC3339",
        default=None,
        help="start after this instant (default: now)",
    )
    parser.add_argument("--count", "-n", type=cli_int(), default=5, help="how many fire times (default 5)")
    parser.add_argument("--gap", choices=["shift", "skip"], default=None, help="policies.dst.gap to apply")
    parser.add_argument(
        "--fold", choices=["first", "last", "both"], default=None, help="policies.dst.fold to apply"
    )
    add_output_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.from_ is None:
        from_ms = SystemClock().now_ms()
    else:
        try:
            from_ms = parse_rfc3339(args.from_)
        except InstantRangeError as exc:
            raise PalyraError(f"--from: {exc}") from None
        except ValueError:
            raise PalyraError(
                f"--from: {args.from_!r} is not an RFC 3339 date-time with offset "
                "(e.g. 2026-03-29T00:00:00+01:00)"
            ) from None
    dst = {k: v for k, v in (("gap", args.gap), ("fold", args.fold)) if v is not None}
    result = preview(args.expr, args.timezone, from_ms, args.count, dst or None)
    emit(result, args.output, lambda r: "".join([f"{when}\n" for when in r["fire_times"]]
                                               + [f"note: {note}\n" for note in r["notes"]]))
    return 0
