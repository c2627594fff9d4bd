"""Every hostile or invalid input of tests/corpus is refused with the exact message, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_cases import iter_cases

from palyra_ops.cli import main
from palyra_ops.source import load_directory

CASES = list(iter_cases())


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize(("name", "directory", "expected"), CASES, ids=[c[0] for c in CASES])
def test_case_reports_exactly_the_expected_diagnostics(name: str, directory: Path, expected: list[str]) -> None:
    source = load_directory(directory, display_root="")
    assert [d.format() for d in source.diagnostics] == expected
    assert expected, "a corpus case must produce at least one error"
    assert not source.ok
    bad_files = {f.file for f in source.files.values() if not f.ok}
    assert not any(d.file in bad_files for d in source.documents), "documents of an invalid file leak out"
    for diag in source.diagnostics:
        if diag.line:
            assert diag.column >= 1


@pytest.mark.parametrize(("name", "directory", "expected"), CASES, ids=[c[0] for c in CASES])
def test_case_fails_validate_with_exit_1(
    name: str, directory: Path, expected: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(directory)
    assert main(["validate", "."]) == 1
    out = capsys.readouterr().out
    for line in expected:
        assert line in out
    assert "Traceback" not in out
