"""`cli._common.emit`: every `--output` of every command goes through it (SPEC §7)."""

from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import palyra_ops.cli
from palyra_ops.cli._common import FORMATS, add_output_flag, as_json, emit, listing, nothing


@dataclass
class Thing:
    name: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "note": "ünïcode → kept"}


def test_text_uses_the_commands_view_and_ends_with_one_newline(capsys: pytest.CaptureFixture[str]) -> None:
    emit(Thing("a"), "text", lambda t: f"thing {t.name}")
    emit(Thing("b"), "text", lambda t: f"thing {t.name}\n")
    emit(Thing("c"), "text", lambda t: "line\n\n")  # a view's own trailing blank line is kept
    assert capsys.readouterr().out == "thing a\nthing b\nline\n\n"


def test_json_is_the_objects_to_json_or_the_value(capsys: pytest.CaptureFixture[str]) -> None:
    emit(Thing("a"), "json", lambda t: "not this")
    emit([{"x": 1}], "json", lambda t: "not this")
    assert capsys.readouterr().out == (
        '{\n  "name": "a",\n  "note": "ünïcode → kept"\n}\n'
        '[\n  {\n    "x": 1\n  }\n]\n'
    )
    assert as_json({"b": 1, "a": 2}) == '{\n  "b": 1,\n  "a": 2\n}\n'  # key order as built, not sorted


def test_a_format_may_have_its_own_view_or_show_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    views = {"text": nothing, "json": lambda t: as_json({"wrapped": t.name})}
    emit(Thing("a"), "text", views)
    emit(Thing("a"), "json", views)
    assert capsys.readouterr().out == '{\n  "wrapped": "a"\n}\n'


def test_listing_says_so_when_there_is_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    view = listing("no routines", lambda items: "\n".join(items))
    emit([], "text", view)
    emit(["a", "b"], "text", view)
    emit([], "json", view)
    assert capsys.readouterr().out == "no routines\na\nb\n[]\n"


def test_output_flag_offers_every_format() -> None:
    parser = argparse.ArgumentParser()
    add_output_flag(parser)
    assert list(FORMATS) == ["text", "json"]
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
