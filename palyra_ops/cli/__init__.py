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

#: subcommand → the module that registers it (help order). Only the module of the command being run
#: is imported: the daemon's, memory's and skills' modules pull in uvicorn, numpy and wasmtime, which
#: `palyra-ops validate` in a pre-commit hook should not pay for.
COMMANDS = {
    "validate": "validate_cmd",
    "plan": "plan_cmd",
    "apply": "plan_cmd",
    "status": "plan_cmd",
    "schedule": "schedule_cmd",
    "daemon": "daemon_cmd",
    "token": "token_cmd",
    "cron": "cron_cmd",
    "approvals": "approvals_cmd",
    "skills": "skills_cmd",
    "memory": "memory_cmd",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="palyra-ops",
        description="GitOps for the Palyra daemon's background routines.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in wanted:
        module = importlib.import_module(f"palyra_ops.cli.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    try:
        args = parser.parse_args(argv)  # inside: a refused --journal URL is a one-line error too
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
