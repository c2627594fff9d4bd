"""`cli._common.emit`: every `--output` of every command goes through it (SPEC §7)."""

from __future__ import annotations

import argparse
import ast
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import palyra_ops.cli
from palyra_ops.cli._common import WRITERS, Lazy, add_output_flag, emit, emit_progress, listing


@dataclass
class Thing:
    name: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "note": "ünïcode → kept"}


def written(value: object, fmt: str, render: Callable[[Any], str]) -> str:
    out = io.StringIO()
    emit(value, fmt, render, stream=out)
    return out.getvalue()


def test_text_is_the_commands_view_ending_in_one_newline() -> None:
    assert written(Thing("a"), "text", lambda t: f"thing {t.name}") == "thing a\n"
    assert written(Thing("b"), "text", lambda t: f"thing {t.name}\n") == "thing b\n"
    assert written(Thing("c"), "text", lambda t: "line\n\n") == "line\n\n"  # a view's own blank line stays
    assert written(Thing("d"), "text", lambda t: "") == ""  # a view with nothing to say prints nothing


def test_json_is_the_objects_to_json_or_the_value_itself() -> None:
    assert written(Thing("a"), "json", lambda t: "not this") == '{\n  "name": "a",\n  "note": "ünïcode → kept"\n}\n'
    assert written([{"b": 1, "a": 2}], "json", lambda t: "not this") == '[\n  {\n    "b": 1,\n    "a": 2\n  }\n]\n'
    built: list[int] = []
    lazy = Lazy(lambda: built.append(1) or {"ok": True})
    assert written(lazy, "text", lambda _: "text only") == "text only\n" and built == []  # never built for text
    assert written(lazy, "json", lambda _: "") == '{\n  "ok": true\n}\n' and built == [1]


def test_listing_says_so_when_there_is_nothing() -> None:
    view = listing("no routines", lambda items: "\n".join(items))
    assert written([], "text", view) == "no routines\n"
    assert written(["a", "b"], "text", view) == "a\nb\n"
    assert written([], "json", view) == "[]\n"


def test_progress_is_shown_only_in_text(capsys: pytest.CaptureFixture[str]) -> None:
    emit_progress("json", lambda: "the plan")
    emit_progress("text", lambda: "the plan")
    assert capsys.readouterr().out == "the plan\n"


def test_output_flag_offers_every_writer() -> None:
    parser = argparse.ArgumentParser()
    add_output_flag(parser)
    assert list(WRITERS) == ["text", "json"]
    assert parser.parse_args(["-o", "json"]).output == "json"
    assert parser.parse_args([]).output == "text"


def test_no_command_compares_the_output_format_itself() -> None:
    """One `emit` instead of `if args.output == "json"` in every command (27 of them before)."""
    hits = []
    for path in sorted(Path(palyra_ops.cli.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and any(
                isinstance(side, ast.Attribute) and side.attr == "output" for side in (node.left, *node.comparators)
            ):
                hits.append(f"{path.name}:{node.lineno}")
    assert hits == []
