"""A routine directory: which files are in it, their cached per-file results, the cross-file checks.

Discovery is strict about what counts as part of the directory (hidden entries skipped, symlinks
followed only inside it), per-file results are cached on disk by content, schema and code so that
re-validating after one edit parses one file, and the checks that need more than one file (unique
names, channel and skill references) run here over all of them.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from yaml.nodes import Node

from palyra_ops import __version__, fsmodes
from palyra_ops.errors import Diagnostic, PalyraError
from palyra_ops.source import parallel
from palyra_ops.source.file import (
    MAX_FILE_BYTES,
    Doc,
    FileResult,
    Lines,
    check_file,
    composed_documents,
    position,
)
from palyra_ops.source.findings import (
    SkillsUnchecked,
    format_path,
    reference_findings,
    reference_stub,
    schema_path,
)
from palyra_ops.source.parallel import can_fork, run_split, usable_cores

#: bump when the cached per-file payload changes shape or meaning
CACHE_FORMAT = 1

_YAML_SUFFIXES = (".yaml", ".yml")


# ---------------------------------------------------------------------------------------------------
# public data


@dataclass(frozen=True)
class Document:
    file: str  # path relative to the routine dir, POSIX ("team/sre.yaml") — identity of the file
    display: str  # path as shown to the user, e.g. "routines.d/team/sre.yaml"
    index: int  # 0-based document index within the file
    line: int  # 1-based position of the document start
    column: int
    kind: str
    name: str
    body: dict  # the whole document as loaded (apiVersion/kind/metadata/spec), plain JSON types


@dataclass(frozen=True)
class FileReport:
    file: str
    display: str
    sha256: str
    ok: bool
    diagnostics: list[Diagnostic]
    names: list[tuple[str, str]]  # (kind, name) the file defines (best effort even when invalid)


@dataclass
class SourceSet:
    root: Path
    documents: list[Document] = field(default_factory=list)  # only from files with no errors
    files: dict[str, FileReport] = field(default_factory=dict)  # every discovered file
    diagnostics: list[Diagnostic] = field(default_factory=list)  # all of them, sorted
    #: checks that could not run (e.g. skill references without a skills index); never make it invalid
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.diagnostics


def iter_documents(source: SourceSet, kind: str | None = None) -> Iterator[Document]:
    """Documents of the set, optionally of one kind, in file then document order."""
    return (d for d in source.documents if kind is None or d.kind == kind)


# ---------------------------------------------------------------------------------------------------
# discovery

#: what a directory entry is to discovery, and the detail: a directory's real path, a refusal's reason
_Entry = tuple[Literal["file", "dir", "refused", "skip"], str]


def _symlink_entry(entry: os.DirEntry[str], root_real: str, is_yaml: bool) -> _Entry:
    target = os.path.realpath(entry.path)
    if not os.path.exists(target):
        return ("refused", f"broken symlink (points to {os.readlink(entry.path)})") if is_yaml else ("skip", "")
    is_dir = os.path.isdir(target)
    if not (target == root_real or target.startswith(root_real + os.sep)):
        if is_dir or is_yaml:
            link = os.readlink(entry.path)
            return "refused", f"symlink leaves the routine directory (points to {link}); refusing to follow it"
        return "skip", ""
    if is_dir:
        return "dir", target
    return ("file", "") if is_yaml else ("skip", "")


def _entry(entry: os.DirEntry[str], root_real: str) -> _Entry:
    is_yaml = entry.name.endswith(_YAML_SUFFIXES)
    if entry.is_symlink():
        return _symlink_entry(entry, root_real, is_yaml)
    if entry.is_dir(follow_symlinks=False):
        return "dir", os.path.realpath(entry.path)
    return ("file", "") if is_yaml and entry.is_file(follow_symlinks=False) else ("skip", "")


def _discover(root: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """(relative POSIX path, path) of every routine file, and (relative path, problem) of refused ones.

    Hidden entries are skipped (editors' swap files, `.git`). A symlink is followed only when its
    target stays inside the directory; one that leaves it is refused, since validating and applying
    files from elsewhere would make the git history lie about what runs.
    """
    root_real = os.path.realpath(root)
    files: list[tuple[str, Path]] = []
    refused: list[tuple[str, str]] = []
    visited = {root_real}
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            refused.append((prefix.rstrip("/") or ".", f"cannot read directory: {exc.strerror}"))
            continue
        subdirs: list[tuple[Path, str]] = []
        for entry in (e for e in entries if not e.name.startswith(".")):
            rel = prefix + entry.name
            what, detail = _entry(entry, root_real)
            if what == "refused":
                refused.append((rel, detail))
            elif what == "file":
                files.append((rel, Path(entry.path)))
            elif what == "dir" and detail not in visited:
                visited.add(detail)
                subdirs.append((Path(entry.path), rel + "/"))
        stack.extend(reversed(subdirs))
    files.sort()
    return files, refused


def _read(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(MAX_FILE_BYTES + 1)


# ---------------------------------------------------------------------------------------------------
# the per-file cache


@lru_cache(maxsize=1)
def _schema_hash() -> str:
    return hashlib.sha256(schema_path().read_bytes()).hexdigest()


@lru_cache(maxsize=1)
def _code_hash() -> str:
    """The validation code itself is part of the cache key: a fixed check must not be masked by a
    cached verdict while the package version stays the same."""
    h = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    checks = [package / "targets.py", package / "durations.py", *sorted((package / "schedule").glob("*.py"))]
    for p in [*sorted((package / "source").glob("*.py")), *checks]:
        h.update(p.read_bytes())
    return h.hexdigest()


class _Cache:
    """Per-file results on disk, keyed by (content sha256, schema hash, package version, code hash).

    JSON rather than pickle/marshal: the cache directory is just a directory, and loading it must not
    be a way to run code. A damaged entry is a miss, a failed write is ignored. A cached result is
    what `apply` applies, so it is only read from directories and files nobody else could have
    written (`fsmodes.cache_dir`, `fsmodes.trusted_fd`); an untrusted cache is ignored and rebuilt.
    Read-only commands (`readonly`) use a trusted cache but never create or write one (SPEC §4).
    """

    def __init__(self, directory: Path, *, readonly: bool = False) -> None:
        self.dir = directory / f"source-v{CACHE_FORMAT}"
        self.salt = f"{CACHE_FORMAT}:{__version__}:{_schema_hash()}:{_code_hash()}:"
        self.readonly = readonly
        self.usable = fsmodes.cache_dir(directory.parent.parent, self.dir, create=not readonly)
        self._trusted_dirs: dict[Path, bool] = {}

    def _path(self, sha: str) -> Path:
        key = hashlib.sha256((self.salt + sha).encode()).hexdigest()
        return self.dir / key[:2] / f"{key}.json"

    def _dir_ok(self, d: Path) -> bool:
        ok = self._trusted_dirs.get(d)
        if ok is None:
            ok = self._trusted_dirs[d] = fsmodes.cache_dir(self.dir, d, create=not self.readonly)
        return ok

    def ready_all(self) -> None:
        """Check (and, writable, make) every fan-out level now, e.g. before a fork."""
        if self.usable:
            for i in range(256):
                self._dir_ok(self.dir / f"{i:02x}")

    def has(self, sha: str) -> bool:
        """Whether an entry for this content exists (not whether it is trusted or readable)."""
        return self.usable and self._path(sha).exists()

    def get(self, sha: str) -> FileResult | None:
        if not self.usable:
            return None
        path = self._path(sha)
        try:
            if not self._dir_ok(path.parent):
                return None
            with open(path, encoding="utf-8") as fh:
                if not fsmodes.trusted_fd(fh.fileno()):
                    return None  # put() replaces it with a private file
                return FileResult.from_json(fh.read())
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, sha: str, result: FileResult) -> None:
        if self.readonly or not self.usable:
            return
        path = self._path(sha)
        try:
            if self._dir_ok(path.parent):
                fsmodes.write_private(path, result.to_json(), durable=False)  # a cache: a torn entry is a miss
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------------
# loading

_PerFile = dict[str, tuple[str, Path, FileResult]]  # rel → (sha256, path, result)
_FileDiags = dict[str, list[Diagnostic]]
_Display = Callable[[str], str]
#: (kind, name, body) of each document of one file
FileDocuments = list[tuple[str, str, dict[str, Any]]]
#: a file's own outcome: (content sha256, result, what `FileConsumer.prepare` made), or why it is unread
_Checked = tuple[str, FileResult, object] | str


class FileConsumer(Protocol):
    """Takes each valid file's documents while the directory loads, so their bodies are never all
    held at once (plan keeps compact canonical resources, forecast the scheduling fields).

    `prepare` may run in a forked child (`load_directory(workers=2)`): it must only compute, from
    the documents and state from before the load, a small picklable value; `accept` then gets that
    value in this process, file by file in file order."""

    def prepare(self, rel: str, sha: str, docs: FileDocuments) -> object: ...

    def accept(self, rel: str, sha: str, prepared: object) -> None: ...


def load_directory(
    root: Path,
    *,
    display_root: str | None = None,
    cache_dir: Path | None = None,
    known_skills: set[str] | SkillsUnchecked | None = None,
    cache_readonly: bool = False,
    on_file: FileConsumer | None = None,
    workers: int = 1,
) -> SourceSet:
    """Discover, parse and validate every routine file under `root`.

    Never raises for bad content: every problem becomes a Diagnostic. Raises PalyraError only when
    `root` exists but is not a readable directory. A missing or empty directory is an empty set; the
    callers decide whether that is acceptable (plan has --allow-empty).

    `on_file` (plan, forecast) is handed each file's documents as soon as that file is checked
    (`FileConsumer`); the set then keeps of each body only what the cross-file checks read
    (`reference_stub`) and lists no `documents` (the caller has them): the bodies of 100,000 routines are ~400 MB of dicts, one
    file's a few hundred KB. The caller must still look at `files[rel].ok` at the end: a cross-file
    finding can invalidate a file after it was handed over. `workers=2` (CLI commands only, see
    `parallel`): a directory of more than a MiB is checked on two cores; the result is the same.
    """
    # Loading builds hundreds of thousands of small acyclic containers; the cyclic GC would rescan
    # them over and over (a third of the warm path). Nothing here creates cycles, so pause it.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_directory(Path(root), display_root, cache_dir, known_skills, cache_readonly, on_file, workers)
    finally:
        if gc_was_enabled:
            gc.enable()


def _load_directory(root: Path, display_root: str | None, cache_dir: Path | None,
                    known_skills: set[str] | SkillsUnchecked | None, cache_readonly: bool = False,
                    on_file: FileConsumer | None = None, workers: int = 1) -> SourceSet:
    shown = str(root) if display_root is None else display_root
    result = SourceSet(root=root)
    if not root.exists() and not root.is_symlink():
        return result
    if not root.is_dir():
        raise PalyraError(f"{shown} is not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise PalyraError(f"cannot read routine directory {shown}")

    def display(rel: str) -> str:
        return str(Path(shown) / rel)

    found, refused = _discover(root)
    file_diags: _FileDiags = {}
    for rel, problem in refused:
        file_diags.setdefault(rel, []).append(Diagnostic(display(rel), 0, 0, "", problem, code="refused"))
    cache = _Cache(cache_dir, readonly=cache_readonly) if cache_dir is not None else None
    per_file = _check_files(found, cache, display, file_diags, on_file, workers)
    _cross_file(per_file, file_diags, display, known_skills, result.warnings)
    _assemble(result, per_file, file_diags, display, documents=on_file is None)
    return result


def _check_one(rel: str, path: Path, cache: _Cache | None, on_file: FileConsumer | None) -> _Checked:
    """One file's own result (from the cache where its content was checked before) and, with
    `on_file`, what its `prepare` made of the documents, which are then cut down to their reference
    stubs. May run in the forked child (`parallel`): what it returns crosses back pickled."""
    try:
        data = _read(path)
    except OSError as exc:
        return f"cannot read file: {exc.strerror}"
    sha = hashlib.sha256(data).hexdigest()
    checked = cache.get(sha) if cache is not None else None
    if checked is None:
        checked = check_file(data)
        if cache is not None:
            cache.put(sha, checked)
    prepared: object = None
    if on_file is not None:
        if not checked.diags:
            prepared = on_file.prepare(rel, sha, [(d.kind, d.name, d.body) for d in checked.docs if d.kind and d.name])
        for d in checked.docs:
            d.body = reference_stub(d.body)
    return sha, checked, prepared


def _parallel(found: list[tuple[str, Path]], workers: int, cache: _Cache | None) -> bool:
    """Two processes for a large directory that is not already in the cache: a warm load (a no-op
    plan) reads small cached verdicts, and a child would add its memory for little. Whether it is
    warm is judged by three files (first, middle, last): a wrong guess costs time, never a result."""
    if workers < 2 or len(found) < 2 or not can_fork() or usable_cores() < 2:
        return False
    size = 0
    for _, path in found:
        try:
            size += os.stat(path).st_size
        except OSError:
            pass
    if size < parallel.PARALLEL_MIN_BYTES:
        return False
    if cache is None or not cache.usable:
        return True
    try:
        sample = {0, len(found) // 2, len(found) - 1}
        return not all(cache.has(hashlib.sha256(_read(found[i][1])).hexdigest()) for i in sample)
    except OSError:  # reported by the load itself
        return True


def _check_files(found: list[tuple[str, Path]], cache: _Cache | None, display: _Display, file_diags: _FileDiags,
                 on_file: FileConsumer | None = None, workers: int = 1) -> _PerFile:
    """Each file's own result; with `on_file`, its accepted preparations, in file order. With
    `workers` >= 2 a large directory is checked by this process and a forked child together."""
    per_file: _PerFile = {}
    if _parallel(found, workers, cache):
        if cache is not None:
            cache.ready_all()  # made before the fork: the two must not race to create the same level
        outcomes = run_split(len(found), lambda i: _check_one(*found[i], cache, on_file))
    else:
        outcomes = None
    for i, (rel, path) in enumerate(found):
        outcome = outcomes[i] if outcomes is not None else _check_one(rel, path, cache, on_file)
        if isinstance(outcome, str):
            file_diags.setdefault(rel, []).append(Diagnostic(display(rel), 0, 0, "", outcome, code="refused"))
            continue
        sha, checked, prepared = outcome
        if on_file is not None and not checked.diags:
            on_file.accept(rel, sha, prepared)
        per_file[rel] = (sha, path, checked)
        shown_rel = display(rel)
        file_diags.setdefault(rel, []).extend(
            Diagnostic(shown_rel, line, col, path_s, msg, source_line=src, code=code)
            for line, col, path_s, msg, code, src in checked.diags
        )
        if outcomes is not None:
            outcomes[i] = None  # type: ignore[call-overload]  # let each file's preparation go once accepted
    return per_file


def _assemble(result: SourceSet, per_file: _PerFile, file_diags: _FileDiags, display: _Display,
              documents: bool = True) -> None:
    """A report per file; the documents of the files with no problem at all (unless an `on_file`
    caller took them already)."""
    for rel in sorted(set(per_file) | set(file_diags)):
        diags = sorted(file_diags.get(rel, []))
        sha, _, checked = per_file.get(rel, ("", Path(), FileResult([], [])))
        names = [(d.kind, d.name) for d in checked.docs if d.kind and d.name]
        report = FileReport(rel, display(rel), sha, not diags, diags, names)
        result.files[rel] = report
        result.diagnostics.extend(diags)
        if report.ok and documents:
            shown_rel = display(rel)
            result.documents.extend(
                Document(rel, shown_rel, d.index, d.line, d.column, d.kind, d.name, d.body)  # type: ignore[arg-type]
                for d in checked.docs
            )
    result.diagnostics.sort()
    result.warnings.sort()


# ---------------------------------------------------------------------------------------------------
# cross-file checks


class _Locator:
    """Positions findings in files whose documents were not composed this run (cached results).

    The file is read again here, only for a file with a cross-file finding, rather than every file's
    bytes being kept through the load (50 MB for 100,000 routines); if it changed since it was
    checked (its sha256 differs), positions are unknown and findings sit at their document's start.
    """

    def __init__(self, per_file: _PerFile, display: _Display) -> None:
        self.per_file = per_file
        self.display = display
        self._nodes: dict[str, tuple[list[Node | None], str]] = {}

    def _composed(self, rel: str) -> tuple[list[Node | None], str]:
        if rel not in self._nodes:
            sha, path, _ = self.per_file[rel]
            try:
                data = _read(path)
                if hashlib.sha256(data).hexdigest() != sha:
                    raise ValueError("changed since it was checked")
                self._nodes[rel] = (composed_documents(data.decode("utf-8")), data.decode("utf-8", errors="replace"))
            except (OSError, ValueError, yaml.YAMLError):  # UnicodeDecodeError is a ValueError
                self._nodes[rel] = ([], "")
        return self._nodes[rel]

    def locate(self, rel: str, index: int, path: tuple[Any, ...]) -> tuple[int, int, str]:
        """(line, column, source line) of `path` in document `index` of `rel`; 0, 0, "" if unknown."""
        nodes, text = self._composed(rel)
        node = nodes[index] if index < len(nodes) else None
        if node is None:
            return 0, 0, ""
        line, col = position(node, path, "value")
        return line, col, Lines(text).get(line)

    def diagnostic(self, rel: str, doc: Doc, path: tuple[Any, ...], message: str, code: str) -> Diagnostic:
        """At `path` where it can be found, else at the document's start."""
        line, col, src = self.locate(rel, doc.index, path)
        if not line:
            line, col = doc.line, doc.column
        return Diagnostic(self.display(rel), line, col, format_path(path), message, src, code)


def _named_documents(per_file: _PerFile) -> Iterator[tuple[str, Doc]]:
    for rel in sorted(per_file):
        for doc in per_file[rel][2].docs:
            if doc.kind is not None and doc.name is not None:
                yield rel, doc


def _unique_names(per_file: _PerFile, at: _Locator, file_diags: _FileDiags) -> list[str]:
    """Report every (kind, name) defined twice; the Channel names there are, sorted."""
    first: dict[tuple[str, str], tuple[str, Doc]] = {}
    for rel, doc in _named_documents(per_file):
        key = (doc.kind, doc.name)
        if key not in first:
            first[key] = (rel, doc)  # type: ignore[index]
            continue
        other_rel, other = first[key]  # type: ignore[index]
        line, col, _ = at.locate(other_rel, other.index, ("metadata", "name"))
        where = f"{at.display(other_rel)}:{line or other.line}:{col or other.column}"
        msg = f"duplicate {doc.kind} name {doc.name!r} (first defined at {where})"
        file_diags.setdefault(rel, []).append(at.diagnostic(rel, doc, ("metadata", "name"), msg, "duplicate"))
    return sorted(name for kind, name in first if kind == "Channel")


def _previous_names(per_file: _PerFile, at: _Locator, file_diags: _FileDiags) -> None:
    """A routine's `metadata.previous_names` must not name a live routine, nor a previous name of
    another one: either would make "which routine is it now" ambiguous (docs/plan-operator.md)."""
    live: dict[str, tuple[str, Doc]] = {}
    for rel, doc in _named_documents(per_file):
        if doc.kind == "Routine":
            live.setdefault(doc.name, (rel, doc))  # type: ignore[arg-type]
    claimed: dict[str, str] = {}
    for rel, doc in _named_documents(per_file):
        meta = doc.body.get("metadata") if doc.kind == "Routine" and isinstance(doc.body, dict) else None
        names = meta.get("previous_names") if isinstance(meta, dict) else None
        for i, old in enumerate(names if isinstance(names, list) else ()):
            if not isinstance(old, str) or old == doc.name:
                continue  # a per-document finding already
            if old in live:
                other_rel, other = live[old]
                line, col, _ = at.locate(other_rel, other.index, ("metadata", "name"))
                where = f"{at.display(other_rel)}:{line or other.line}:{col or other.column}"
                msg = f"{old!r} is the name of a live routine (defined at {where}); a previous name must not be in use"
            elif old in claimed:
                msg = f"{old!r} is already a previous name of routine {claimed[old]!r}"
            else:
                claimed[old] = doc.name  # type: ignore[assignment]
                continue
            path = ("metadata", "previous_names", i)
            file_diags.setdefault(rel, []).append(at.diagnostic(rel, doc, path, msg, "previous_name"))


def _cross_file(
    per_file: _PerFile,
    file_diags: _FileDiags,
    display: _Display,
    known_skills: set[str] | SkillsUnchecked | None,
    warnings: list[Diagnostic] | None = None,
) -> None:
    """Checks that need the whole directory: unique names, channel and skill references.

    Skill references: checked against `known_skills` (a set), reported as "not checked" warnings
    when it is `SkillsUnchecked`, not looked at when it is None (library callers that opt out).
    """
    at = _Locator(per_file, display)
    channels = _unique_names(per_file, at, file_diags)
    _previous_names(per_file, at, file_diags)
    for rel in sorted(per_file):
        for doc in per_file[rel][2].docs:
            if doc.kind != "Routine" or not isinstance(doc.body, dict):
                continue
            errors, unchecked = reference_findings(doc.body.get("spec"), channels, known_skills, "in the directory")
            for path, _, message in errors:
                file_diags.setdefault(rel, []).append(at.diagnostic(rel, doc, path, message, "reference"))
            if warnings is not None:
                warnings.extend(at.diagnostic(rel, doc, path, message, "unchecked") for path, _, message in unchecked)
