"""Small helpers shared by CLI commands: output format flags, JSON printing, colour, paths."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def add_output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", choices=["text", "json"], default="text", help="output format")


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def use_colour(stream=None) -> bool:
    """Colour only on a terminal, never with NO_COLOR set (https://no-color.org)."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def state_root() -> Path:
    """$PALYRA_STATE_ROOT, else $XDG_STATE_HOME/palyra, else ~/.local/state/palyra (SPEC §4)."""
    if os.environ.get("PALYRA_STATE_ROOT"):
        return Path(os.environ["PALYRA_STATE_ROOT"])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "palyra"


def default_journal_path() -> Path:
    """$PALYRA_JOURNAL (SPEC §4: the same as --journal), else $PALYRA_STATE_ROOT/journal.sqlite3."""
    env = os.environ.get("PALYRA_JOURNAL")
    if env:
        return journal_arg(env)
    return state_root() / "journal.sqlite3"


def journal_arg(text: str) -> Path:
    """`--journal` as typed: a URL is refused here, before any command creates anything beside it.

    Raises JournalUnsupported (a PalyraError, which argparse lets through) so the user gets the one
    line `main` prints for every expected failure, not a usage message.
    """
    from palyra_ops.journal.faults import check_location

    return check_location(text)


def add_journal_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--journal", type=journal_arg, default=None,
                        help="journal path (default: $PALYRA_JOURNAL, else $PALYRA_STATE_ROOT/journal.sqlite3)")


def add_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=Path("routines.d"), help="routine directory (default: routines.d)")


def installed_skills() -> Any:
    """The skills installed under the state root for the "referenced skill exists" check, or
    `SkillsUnchecked` saying why that check cannot run (the one rule: palyra_ops/skillrefs.py)."""
    from palyra_ops.skillrefs import known_skills

    return known_skills(state_root())


def print_warnings(warnings: list[Any], stream: Any = None) -> None:
    """Checks that could not run, one `warning:` line each (stderr by default: stdout may be JSON)."""
    out = stream or sys.stderr
    for w in warnings:
        out.write(f"warning: {w.format()}\n")
