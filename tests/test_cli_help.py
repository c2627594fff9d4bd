"""Issue 12 (CLI habits): every flag and argument of every subcommand says what it is for in `--help`,
and `--version` answers at the top level and on any subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from test_cli_basics import run_cli

from palyra_ops import __version__
from palyra_ops.cli import COMMANDS, build_parser


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                yield (*path, name), argparse.Action([], dest=name, help=helps.get(name))  # the command's own line
                yield from _walk(child, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_action_of_every_subcommand_has_help() -> None:
    parser = build_parser(full=True)
    actions = list(_walk(parser, ("palyra-ops",)))
    missing = [f"{' '.join(path)} {'/'.join(a.option_strings) or a.dest}" for path, a in actions
               if not a.help or not str(a.help).strip() or a.help == argparse.SUPPRESS]
    assert missing == []
    commands = {path[1] for path, _ in actions if len(path) > 1}
    assert commands >= set(COMMANDS)  # the walk saw every command, not only the fast summaries
    assert len(actions) > 150


def test_version_everywhere() -> None:
    for args in (["--version"], ["skills", "trust", "add", "--version"], ["completion", "--version"]):
        out = run_cli(*args)
        assert (out.returncode, out.stdout, out.stderr) == (0, f"palyra-ops {__version__}\n", ""), args
