"""The hostile/invalid input corpus, reusable by any test that must prove bad input is refused.

Each case is a routine directory under `tests/corpus/<case>/` plus `expected.txt`: the exact
diagnostics (`Diagnostic.format()`, file paths relative to the case directory) that loading it must
produce, one per line, in report order. A few cases cannot live in git (a file over the size limit)
and are generated on demand into a temporary directory.

    for name, directory, expected in iter_cases():
        source = load_directory(directory, display_root="")
        assert [d.format() for d in source.diagnostics] == expected
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def _generated(root: Path) -> Iterator[tuple[str, Path, list[str]]]:
    from palyra_ops.source import MAX_FILE_BYTES

    big = root / "oversized"
    big.mkdir(parents=True, exist_ok=True)
    filler = "# padding\n" * (MAX_FILE_BYTES // 10 + 1)
    (big / "huge.yaml").write_text("apiVersion: palyra/v1\n" + filler)
    yield "oversized", big, [f"huge.yaml: file is larger than {MAX_FILE_BYTES} bytes (1 MiB); refusing to read it"]


def iter_cases(tmp_root: Path | None = None) -> Iterator[tuple[str, Path, list[str]]]:
    """(case name, routine directory, expected diagnostic lines) for every corpus case.

    Generated cases are written under `tmp_root` (a fresh temporary directory when omitted).
    """
    for case in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        expected = (case / "expected.txt").read_text(encoding="utf-8").splitlines()
        yield case.name, case, expected
    yield from _generated(tmp_root if tmp_root is not None else Path(tempfile.mkdtemp(prefix="palyra-corpus-")))
