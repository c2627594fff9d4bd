"""The `palyra-ops` command line: a thin shell over the library.

Each subcommand lives in its own module exposing `register(subparsers)`; the module adds its parser
and sets `func` to a callable taking the parsed args and returning an exit code. No business logic
lives here: commands call `source`, `plan`, `journal`, ... and format the result.

Expected failures (`PalyraError`) become one line on stderr and exit 1; argparse usage errors exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from palyra_ops.errors import PalyraError

#: subcommand modules, in help order; a module that is missing is skipped so areas can land apart
_COMMAND_MODULES = [
    "validate_cmd",
    "plan_cmd",
    "schedule_cmd",
    "daemon_cmd",
    "token_cmd",
    "cron_cmd",
    "approvals_cmd",
    "skills_cmd",
    "memory_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="palyra-ops",
        description="GitOps for the Palyra daemon's background routines.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"palyra_ops.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"palyra_ops.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except PalyraError as exc:
        print(f"palyra-ops: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("palyra-ops: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
