"""Small helpers shared by CLI commands: `--output` and `emit`, colour, flags, state paths."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from palyra_ops.statepaths import StatePaths

if TYPE_CHECKING:
    from palyra_ops.source import SkillsUnchecked


#: what `emit` draws a value with, per format: `value -> text` (the text one is the command's own)
Render = Callable[[Any], str]


def as_json(value: Any) -> str:
    """The document every `--output json` prints: an object's `to_json()`, or the value itself."""
    to_json = getattr(value, "to_json", None)
    doc = to_json() if callable(to_json) else value
    return json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def nothing(_value: Any) -> str:
    """A view that shows nothing (e.g. `apply --output json` before the outcome is known)."""
    return ""


def listing(empty: str, render: Render) -> Render:
    """The text view every list command shares: a one-line note when there are no items."""
    return lambda items: render(items) if items else empty


def _text(value: Any, views: Mapping[str, Render]) -> str:
    return views["text"](value)


def _json(value: Any, views: Mapping[str, Render]) -> str:
    return views.get("json", as_json)(value)


#: the `--output` formats. A new one (markdown) is one function here and, for a command that draws
#: it its own way, one more entry in the views it passes to `emit`; `--output` offers it at once.
FORMATS: dict[str, Callable[[Any, Mapping[str, Render]], str]] = {"text": _text, "json": _json}


def emit(value: Any, fmt: str, render: Render | Mapping[str, Render]) -> None:
    """Write `value` to stdout in the format `--output` chose.

    `render` is the command's text view, or a mapping format → view where a format needs its own
    (JSON defaults to `as_json`). A view returns the text without caring for the final newline.
    """
    views = render if isinstance(render, Mapping) else {"text": render}
    out = FORMATS[fmt](value, views)
    if out and not out.endswith("\n"):
        out += "\n"
    sys.stdout.write(out)


def add_output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", choices=list(FORMATS), default="text", help="output format")


def use_colour(stream: TextIO | None = None) -> bool:
    """Colour only on a terminal, never with NO_COLOR set (https://no-color.org)."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def state_paths(args: argparse.Namespace | None = None) -> StatePaths:
    """The state root and journal of this command: `--journal` where it has one, else the
    environment (SPEC §4). Built once here and handed to what the command calls."""
    return StatePaths.resolve(journal=getattr(args, "journal", None))


def journal_arg(text: str) -> Path:
    """`--journal` as typed: a URL is refused here, before any command creates anything beside it.

    Raises JournalUnsupported (a PalyraError, which argparse lets through) so the user gets the one
    line `main` prints for every expected failure, not a usage message.
    """
    from palyra_ops.journal.faults import check_location

    return check_location(text)


def command_group(
    subparsers: argparse._SubParsersAction, name: str, help: str, *, metavar: str = "ACTION", **options: Any
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A command with required subcommands (`cron ...`, `skills ...`); they land in `<name>_command`."""
    parser = subparsers.add_parser(name, help=help, **options)
    sub = parser.add_subparsers(dest=f"{name}_command", metavar=metavar)
    sub.required = True
    return parser, sub


def add_journal_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--journal", type=journal_arg, default=None,
                        help="journal path (default: $PALYRA_JOURNAL, else $PALYRA_STATE_ROOT/journal.sqlite3)")


def add_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=Path("routines.d"), help="routine directory (default: routines.d)")


def installed_skills(paths: StatePaths) -> set[str] | SkillsUnchecked:
    """The skills installed under the state root for the "referenced skill exists" check, or
    `SkillsUnchecked` saying why that check cannot run (the one rule: palyra_ops/skillrefs.py)."""
    from palyra_ops.skillrefs import known_skills

    return known_skills(paths.root)


def print_warnings(warnings: list[Any], stream: Any = None) -> None:
    """Checks that could not run, one `warning:` line each (stderr by default: stdout may be JSON)."""
    out = stream or sys.stderr
    for w in warnings:
        out.write(f"warning: {w.format()}\n")
