"""The YAML dialect of routine files: YAML 1.2 core schema on libyaml, strict and positioned."""

from __future__ import annotations

from pathlib import Path

import pytest

from palyra_ops.source import StrictLoader, load_directory

ROUTINE = """apiVersion: palyra/v1
kind: Routine
metadata: {{name: r}}
spec:
  prompt: hi
  trigger:
    kind: schedule
    schedule:
{schedule}
"""


def _load(text: str) -> object:
    loader = StrictLoader(text)
    try:
        return loader.construct_document(loader.get_single_node())
    finally:
        loader.dispose()


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2026-12-24T18:00:00+01:00", "2026-12-24T18:00:00+01:00"),  # no implicit timestamps
        ("2026-12-24", "2026-12-24"),
        ("yes", "yes"),  # YAML 1.1 booleans are strings in 1.2 core
        ("on", "on"),
        ("No", "No"),
        ("true", True),
        ("FALSE", False),
        ("~", None),
        ("null", None),
        ("", None),
        ("010", 10),  # decimal, not YAML 1.1 octal
        ("0o17", 15),
        ("0x1F", 31),
        ("-3", -3),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        (".inf", ".inf"),  # not JSON: stays a string
        (".nan", ".nan"),
        ("1_000", "1_000"),
        ("12:30", "12:30"),  # no sexagesimal ints
        ("'true'", "true"),
        ("!!str 5", "5"),
        ("!!int '7'", 7),
    ],
)
def test_scalars_resolve_by_the_core_schema(text: str, value: object) -> None:
    assert _load(f"k: {text}\n") == {"k": value}


def test_unquoted_at_timestamp_stays_a_string_through_validation(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(ROUTINE.format(schedule="      at: 2026-12-24T18:00:00+01:00"))
    source = load_directory(tmp_path)
    assert source.ok, [d.format() for d in source.diagnostics]
    assert source.documents[0].body["spec"]["trigger"]["schedule"]["at"] == "2026-12-24T18:00:00+01:00"


def test_small_aliases_are_expanded_into_independent_values() -> None:
    data = _load("a: &x {k: [1, 2]}\nb: *x\n")
    assert data == {"a": {"k": [1, 2]}, "b": {"k": [1, 2]}}
    assert data["a"] is not data["b"]  # type: ignore[index]


def test_on_is_a_plain_key() -> None:
    assert _load("on: push\n") == {"on": "push"}


def test_columns_count_characters_not_bytes(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        'apiVersion: palyra/v1\nkind: Routine\nmetadata: {name: r, description: "žluťoučký kůň"}\n'
        "spec:\n  prompt: hi\n  trigger: {kind: manual}\n  policies: {description: žž, concurrency: sometimes}\n"
    )
    diags = [d.format() for d in load_directory(tmp_path, display_root="").diagnostics]
    assert diags == [
        "r.yaml:7:14: spec.policies.description: unknown field; expected one of the known fields: concurrency, "
        "misfire, misfire_grace, max_catch_up, pause_after_failures, retry, jitter, cooldown, timeout, dst",
        "r.yaml:7:44: spec.policies.concurrency: 'sometimes' is not one of allow, forbid, replace, queue_one",
    ]


def test_invalid_utf8_position_counts_characters_before_the_bad_byte(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_bytes("a: ž\nb: žž".encode() + b"\xff\n")
    assert [d.format() for d in load_directory(tmp_path, display_root="").diagnostics] == [
        "r.yaml:2:6: invalid UTF-8 (byte 0xff); routine files must be UTF-8"
    ]


def test_duplicate_key_in_a_nested_mapping_names_both_positions(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("apiVersion: palyra/v1\nkind: Channel\nmetadata: {name: c}\nspec: {type: log, level: info, level: debug}\n")
    assert [d.format() for d in load_directory(tmp_path, display_root="").diagnostics] == [
        "r.yaml:4:32: spec: duplicate key 'level' (first defined at line 4, column 19)"
    ]


def test_errors_in_one_document_do_not_hide_the_next(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "a: !!binary aGk=\n---\napiVersion: palyra/v1\nkind: Channel\nmetadata: {name: c}\nspec: {type: lg}\n"
    )
    assert [d.format() for d in load_directory(tmp_path, display_root="").diagnostics] == [
        "r.yaml:1:4: a: tag '!!binary' is not allowed (YAML core schema only: str, int, float, bool, null, seq, map)",
        "r.yaml:6:14: spec.type: 'lg' is not one of webhook, file, log (did you mean 'log'?)",
    ]


def test_empty_documents_and_comment_only_files_define_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    (tmp_path / "stray.yaml").write_text("---\n---\n")
    source = load_directory(tmp_path)
    assert source.ok and source.documents == [] and len(source.files) == 2


def test_the_dialect_is_the_same_on_the_pure_python_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PyYAML built without libyaml falls back to its pure-Python parser: every corpus case must give
    the same diagnostics there (syntax errors in that parser's own words, at the same line), and a
    too-deep document a diagnostic rather than a RecursionError."""
    from corpus_cases import iter_cases

    import palyra_ops.source.file as file_mod
    from palyra_ops.source.yaml_strict import PureStrictLoader

    samples = Path(__file__).resolve().parent.parent / "routines.d"
    with_c = load_directory(samples, display_root="")
    monkeypatch.setattr(file_mod, "StrictLoader", PureStrictLoader)
    pure = load_directory(samples, display_root="")
    assert with_c.ok and pure.documents == with_c.documents and pure.files == with_c.files
    for name, directory, expected in iter_cases(tmp_path):
        got = [d.format() for d in load_directory(directory, display_root="").diagnostics]
        syntax = [e.split(": YAML syntax error: ")[0].rsplit(":", 1)[0] for e in expected if ": YAML syntax error: " in e]
        if syntax:
            assert [g.split(": YAML syntax error: ")[0].rsplit(":", 1)[0] for g in got] == syntax, name
        else:
            assert got == expected, name
