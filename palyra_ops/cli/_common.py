"""Small helpers shared by CLI commands: flags, where the state is, and how a result is written.

Every command writes its result through `emit(value, fmt, render)`: the value is the command's
data, `render` its text view, and the output format picks the writer. The JSON view of every command
is the value itself (or its `to_json()`), so commands never branch on `--output`; adding a format
for every command is one writer function in `WRITERS`. A format only one command has (plan's
markdown) is that command's view, passed to `emit` in `views` and offered with
`add_output_flag(parser, extra=...)`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, runtime_checkable

from palyra_ops.statepaths import StatePaths

if TYPE_CHECKING:
    from palyra_ops.client import ConsoleClient

#: a command's text view of its value (what `--output text` prints); a view as big as the directory
#: (a plan of 100,000 creates) may be an iterable of chunks, written as they are made
Render = Callable[[Any], "str | Iterable[str]"]


@runtime_checkable
class JsonView(Protocol):
    """A value that knows its public JSON shape (plans, memory pages, skills, ...)."""

    def to_json(self) -> Any: ...


@runtime_checkable
class JsonStream(Protocol):
    """A value whose JSON text can be written in pieces (a plan: one change at a time)."""

    def iter_json(self, *, indent: int, ensure_ascii: bool = True) -> Iterator[str]: ...


class Lazy:
    """A JSON document built only if the JSON view is asked for (a plan's is as big as the directory)."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build

    def to_json(self) -> Any:
        return self._build()


def _write_json(value: Any, render: Render) -> str | Iterator[str]:
    if isinstance(value, JsonStream):
        return chain(value.iter_json(indent=2, ensure_ascii=False), ["\n"])
    doc = value.to_json() if isinstance(value, JsonView) else value
    return json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def _write_text(value: Any, render: Render) -> str | Iterator[str]:
    text = render(value)
    if not isinstance(text, str):
        return _ending_in_newline(text)
    return text if not text or text.endswith("\n") else text + "\n"


def _ending_in_newline(chunks: Iterable[str]) -> Iterator[str]:
    last = ""
    for chunk in chunks:
        if chunk:
            yield chunk
            last = chunk
    if last and not last.endswith("\n"):
        yield "\n"


#: output format → writer(value, text view) → what goes to stdout (whole, or in chunks)
WRITERS: dict[str, Callable[[Any, Render], str | Iterator[str]]] = {"text": _write_text, "json": _write_json}


def emit(value: Any, fmt: str, render: Render, *, stream: TextIO | None = None,
         views: Mapping[str, Render] | None = None) -> None:
    """Write a command's result in the format the user asked for (`--output`): `views[fmt]` when the
    command has a view of its own for that format, else the common writer."""
    out = stream or sys.stdout
    written = _write_text(value, views[fmt]) if views and fmt in views else WRITERS[fmt](value, render)
    if isinstance(written, str):
        out.write(written)
    else:
        for chunk in written:
            out.write(chunk)


def emit_progress(fmt: str, text: Callable[[], str | Iterable[str]]) -> None:
    """A step only the text view shows (the plan before apply's question): in JSON a command prints
    one document, at the end."""
    if fmt == "text":
        emit(None, fmt, lambda _: text())


def listing(empty: str, render: Render) -> Render:
    """The text view of a list: `render(items)`, or the one-line `empty` note when there are none."""
    return lambda items: render(items) if items else empty


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; `-` for missing values so columns never collapse."""
    cells = [[("-" if v is None or v == "" else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in cells:
        lines.append("  ".join(v.ljust(widths[i]) for i, v in enumerate(row)).rstrip())
    return "\n".join(lines)


def add_output_flag(parser: argparse.ArgumentParser, *, extra: Sequence[str] = ()) -> None:
    """`--output text|json`, plus the formats in `extra` the command has views of its own for."""
    parser.add_argument("--output", "-o", choices=[*WRITERS, *extra], default="text", help="output format")


def use_colour(stream: Any = None) -> bool:
    """Whether a text view may colour its output, decided once here for every command.

    In the order Python 3.13's own colouring uses: `NO_COLOR` set to anything non-empty means no colour
    (https://no-color.org, and it wins: a user who asked for none never gets escapes); `FORCE_COLOR`
    non-empty (other than `0`) means colour even when piped (https://force-color.org: CI logs, `less -R`);
    else colour only on a terminal whose TERM is not `dumb`.
    """
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR", "") not in ("", "0"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def state_paths(args: argparse.Namespace | None = None) -> StatePaths:
    """The command's StatePaths: built once by `main` from `--journal` and the environment."""
    paths = getattr(args, "paths", None)
    return paths if isinstance(paths, StatePaths) else StatePaths.from_env(journal=getattr(args, "journal", None))


def default_journal_path() -> Path | str:
    """$PALYRA_JOURNAL (SPEC §4: the same as --journal), else $PALYRA_STATE_ROOT/journal.sqlite3."""
    return StatePaths.from_env().journal


def journal_arg(text: str) -> Path | str:
    """`--journal` as typed: a SQLite path, or a `postgresql://` URL kept as text; any other URL is
    refused here, before any command creates anything beside it.

    Raises JournalUnsupported (a PalyraError, which argparse lets through) so the user gets the one
    line `main` prints for every expected failure, not a usage message.
    """
    from palyra_ops.journal.faults import journal_location

    return journal_location(text)


def add_journal_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--journal", type=journal_arg, default=None,
                        help="journal: a SQLite file path or a postgresql:// URL (default: $PALYRA_JOURNAL, "
                             "else $PALYRA_STATE_ROOT/journal.sqlite3)")


def add_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=Path("routines.d"), help="routine directory (default: routines.d)")


def connection_parent() -> argparse.ArgumentParser:
    """`--url`/`--token` of the commands that talk to a running daemon."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--url", default=None, help="daemon URL (default: $PALYRA_URL or http://127.0.0.1:7142)")
    parent.add_argument("--token", default=None, help="API token (default: $PALYRA_TOKEN or the state root's token file)")
    return parent


def client_for(args: argparse.Namespace) -> ConsoleClient:
    from palyra_ops.client import ConsoleClient

    return ConsoleClient(getattr(args, "url", None), getattr(args, "token", None))


#: one ACTION of a command that talks to a running daemon
Handler = Callable[["ConsoleClient", argparse.Namespace], int]


def daemon_command(
    subparsers: Any, name: str, help: str, dest: str, handlers: Mapping[str, Handler]
) -> tuple[Any, argparse.ArgumentParser]:
    """`palyra-ops NAME ACTION ...` run against a running daemon: `handlers[ACTION](client, args)` with a
    client of the daemon `--url`/`--token` name. Returns the ACTION sub-parsers and the parent parser
    carrying `--url`/`--token` for each action to inherit."""
    parser = subparsers.add_parser(name, help=help)
    sub = parser.add_subparsers(dest=dest, metavar="ACTION")
    sub.required = True

    def run(args: argparse.Namespace) -> int:
        with client_for(args) as client:
            return handlers[getattr(args, dest)](client, args)

    parser.set_defaults(func=run)
    return sub, connection_parent()


def installed_skills(paths: StatePaths) -> Any:
    """The skills installed under the state root for the "referenced skill exists" check, or
    `SkillsUnchecked` saying why that check cannot run (the one rule: palyra_ops/skillrefs.py)."""
    from palyra_ops.skillrefs import known_skills

    return known_skills(paths.root)


def print_warnings(warnings: list[Any], stream: Any = None) -> None:
    """Checks that could not run, one `warning:` line each (stderr by default: stdout may be JSON)."""
    out = stream or sys.stderr
    for w in warnings:
        out.write(f"warning: {w.format()}\n")
