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

from palyra_ops import __version__
from palyra_ops.errors import PalyraError
from palyra_ops.statepaths import StatePaths

#: subcommand → the module that registers it (help order). Only the module of the command being run
#: is imported: the daemon's, memory's and skills' modules pull in uvicorn, numpy and wasmtime, which
#: `palyra-ops validate` in a pre-commit hook should not pay for.
COMMANDS = {
    "validate": "validate_cmd",
    "plan": "plan_cmd",
    "apply": "plan_cmd",
    "status": "plan_cmd",
    "schedule": "schedule_cmd",
    "forecast": "forecast_cmd",
    "backfill": "backfill_cmd",
    "explain": "explain_cmd",
    "daemon": "daemon_cmd",
    "token": "token_cmd",
    "cron": "cron_cmd",
    "approvals": "approvals_cmd",
    "skills": "skills_cmd",
    "memory": "memory_cmd",
    "completion": "completion_cmd",
}


#: one-line help of each command for `palyra-ops --help`, which then imports no command module at all
#: (tests/test_cli_basics.py checks these equal the modules' own help texts). A command missing here
#: still works: its module is imported to describe it.
SUMMARIES = {
    "validate": "check routine files (schema, semantics, cross-file references)",
    "plan": "show what apply would change",
    "apply": "apply the directory (or a saved plan) to the journal",
    "status": "does the journal match the directory? last apply, next runs",
    "schedule": "preview the next fire times of a schedule",
    "forecast": "forecast the runs of the next hours: busiest seconds, herds, routines that never run",
    "backfill": "run a routine's past instants in a range, through the normal gates",
    "explain": "why a routine did or did not run at a time: schedule, jitter, misfire, then each gate's verdict",
    "daemon": "run the daemon: HTTP API, scheduler and maintenance tasks",
    "token": "print the console API token",
    "cron": "add, inspect and run routines on a running daemon",
    "approvals": "list, approve or deny pending approvals",
    "skills": "manage WASM skills (install, list, audit, quarantine, ...)",
    "memory": "memory items: add, list, search, retention, embeddings backfill",
    "completion": "print a shell completion script (bash, zsh or fish)",
}


def build_parser(command: str | None = None, *, full: bool = False) -> argparse.ArgumentParser:
    """The parser for `command` only (its module imported), or, for no/unknown command, every
    command described from SUMMARIES without importing their modules (fast `--help`/`--version`).
    `full` registers every command with all its options (e.g. for shell completion)."""
    parser = argparse.ArgumentParser(
        prog="palyra-ops",
        description="GitOps for the Palyra daemon's background routines.",
    )
    parser.add_argument("--version", action="version", version=f"palyra-ops {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    if command in COMMANDS:
        importlib.import_module(f"palyra_ops.cli.{COMMANDS[command]}").register(sub)
        _add_version(parser)
        return parser
    registered: set[str] = set()
    for name, module_name in COMMANDS.items():
        if name in SUMMARIES and not full:
            sub.add_parser(name, help=SUMMARIES[name], add_help=False)
        elif module_name not in registered:
            importlib.import_module(f"palyra_ops.cli.{module_name}").register(sub)
            registered.add(module_name)
    if full:
        _add_version(parser)
    return parser


def _add_version(parser: argparse.ArgumentParser) -> None:
    """`--version` on every (sub)command too: `palyra-ops cron status --version` answers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                if "--version" not in child._option_string_actions:
                    child.add_argument("--version", action="version", version=f"palyra-ops {__version__}")
                _add_version(child)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    try:
        args = parser.parse_args(argv)  # inside: a refused --journal URL is a one-line error too
        args.paths = StatePaths.from_env(journal=getattr(args, "journal", None))  # handed down from here
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
