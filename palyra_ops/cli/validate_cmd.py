"""`palyra-ops validate [DIR]`: schema + semantic checks of a routine directory, nothing applied.

The report goes to stdout (it is the command's output, also under pre-commit); exit 0 when the
directory is valid, 1 when it is not or cannot be read. `--output json` is the stable diagnostics
document described in docs/format.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from palyra_ops.cli._common import Lazy, add_output_flag, emit, installed_skills, state_paths, use_colour
from palyra_ops.errors import Diagnostic, PalyraError
from palyra_ops.source import SourceSet, load_directory

#: bump only with an incompatible change of the JSON document (fields may be added freely)
JSON_FORMAT_VERSION = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check routine files (schema, semantics, cross-file references)",
        description="Validate every *.yaml/*.yml file under DIR (default routines.d). Nothing is applied.",
    )
    parser.add_argument("directory", nargs="?", type=Path, metavar="DIR", help="routine directory (default: routines.d)")
    parser.add_argument("--dir", dest="dir_flag", type=Path, default=None, help="routine directory (same as DIR)")
    add_output_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    directory: Path = args.directory or args.dir_flag or Path("routines.d")
    if not directory.exists() and not directory.is_symlink():
        raise PalyraError(f"routine directory {directory} does not exist")
    source = load_directory(directory, known_skills=installed_skills(state_paths(args)))
    emit(Lazy(lambda: to_json(source, str(directory))), args.output,
         lambda _: render_text(source, colour=use_colour(sys.stdout)))
    return 0 if source.ok else 1


def to_json(source: SourceSet, shown_root: str) -> dict[str, object]:
    """The stable diagnostics document (docs/format.md, "validate --output json")."""
    kinds = _count_kinds(source)
    return {
        "format_version": JSON_FORMAT_VERSION,
        "valid": source.ok,
        "directory": shown_root,
        "summary": {
            "files": len(source.files),
            "invalid_files": sum(1 for f in source.files.values() if not f.ok),
            "documents": len(source.documents),
            "routines": kinds.get("Routine", 0),
            "channels": kinds.get("Channel", 0),
            "policies": kinds.get("Policy", 0),
            "errors": len(source.diagnostics),
        },
        "diagnostics": [d.to_json() | {"text": d.format()} for d in source.diagnostics],
        "warnings": [d.to_json() | {"text": d.format()} for d in source.warnings],
        "files": [
            {
                "file": f.file,
                "display": f.display,
                "sha256": f.sha256,
                "valid": f.ok,
                "errors": len(f.diagnostics),
                "documents": [{"kind": k, "name": n} for k, n in f.names],
            }
            for f in source.files.values()
        ],
    }


def _count_kinds(source: SourceSet) -> dict[str, int]:
    counts: dict[str, int] = {}
    for doc in source.documents:
        counts[doc.kind] = counts.get(doc.kind, 0) + 1
    return counts


def render_text(source: SourceSet, *, colour: bool = False) -> str:
    """Each diagnostic with its source line and a caret under the column, then a summary line."""
    red, bold, dim, green, reset = ("\x1b[31m", "\x1b[1m", "\x1b[2m", "\x1b[32m", "\x1b[0m") if colour else ("",) * 5
    out: list[str] = []
    for diag in source.diagnostics:
        out.append(f"{bold}{_where(diag)}{reset}: {red}{_what(diag)}{reset}")
        if diag.line and diag.source_line:
            gutter = f"{diag.line:>5} | "
            out.append(f"{dim}{gutter}{reset}{diag.source_line.expandtabs(1)}")
            if diag.column:
                out.append(f"{dim}{' ' * (len(gutter) - 2)}| {reset}{' ' * (diag.column - 1)}{red}^{reset}")
    for warn in source.warnings:  # a check that could not run: said, never silently passed
        out.append(f"{bold}{_where(warn)}{reset}: warning: {_what(warn)}")
    n_files = len(source.files)
    kinds = _count_kinds(source)
    checked = _plural(n_files, "file", "files")
    if source.ok:
        parts = [_plural(kinds.get(k, 0), one, many) for k, one, many in _KINDS]
        docs = _plural(len(source.documents), "document", "documents")
        warned = f" {_plural(len(source.warnings), 'warning', 'warnings')}." if source.warnings else ""
        out.append(f"{green}Valid:{reset} {checked}, {docs} ({', '.join(parts)}).{warned}")
    else:
        n = len(source.diagnostics)
        bad = sum(1 for f in source.files.values() if not f.ok)
        out.append(f"{red}Invalid:{reset} {_plural(n, 'error', 'errors')} in {bad} of {checked}.")
    return "\n".join(out) + "\n"


_KINDS = (("Routine", "routine", "routines"), ("Channel", "channel", "channels"), ("Policy", "policy", "policies"))


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _where(diag: Diagnostic) -> str:
    return f"{diag.file}:{diag.line}:{diag.column}" if diag.line else diag.file


def _what(diag: Diagnostic) -> str:
    return f"{diag.path}: {diag.message}" if diag.path else diag.message
