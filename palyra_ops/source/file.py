"""One routine file on its own: its bytes, its documents, where each finding is in it.

Everything here depends only on the file's content, so the result (`FileResult`) is what the
directory caches by content hash. Bytes are refused before parsing when they cannot be routine text
(too large, UTF-16, binary, invalid UTF-8); each document is built by the strict dialect, checked
by `findings`, and every finding is positioned at line:column of the node it is about.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from palyra_ops.source.findings import document_findings, format_path
from palyra_ops.source.yaml_strict import Refused, StrictLoader, check_expanded_size

#: files larger than this are refused unread: routine files are small, and a cap bounds memory/time
MAX_FILE_BYTES = 1 << 20

#: (line, column, path, message, code, source_line); line 0 = the whole file
Diag = tuple[int, int, str, str, str, str]


@dataclass
class Doc:
    index: int
    line: int
    column: int
    kind: str | None
    name: str | None
    body: Any


@dataclass
class FileResult:
    docs: list[Doc]
    diags: list[Diag]

    def to_json(self) -> str:
        return json.dumps(
            {
                "docs": [[d.index, d.line, d.column, d.kind, d.name, d.body] for d in self.docs],
                "diags": self.diags,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> FileResult:
        raw = json.loads(text)
        return cls(docs=[Doc(*d) for d in raw["docs"]], diags=[tuple(x) for x in raw["diags"]])  # type: ignore[misc]


def _identity(body: Any) -> tuple[str | None, str | None]:
    if not isinstance(body, dict):
        return None, None
    kind = body.get("kind")
    meta = body.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return (kind if isinstance(kind, str) else None), (name if isinstance(name, str) else None)


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return line, column


def _walk(node: Node, path: Iterable[Any]) -> tuple[Node | None, Node]:
    """Follow a JSON path through a node graph: (key node of the last step, node reached)."""
    key_node = None
    for part in path:
        if isinstance(node, MappingNode):
            for k, v in node.value:
                if isinstance(k, ScalarNode) and k.value == part:
                    key_node, node = k, v
                    break
            else:
                break
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            key_node, node = None, node.value[part]
        else:
            break
    return key_node, node


def position(root: Node, path: tuple[Any, ...], anchor: str) -> tuple[int, int]:
    """1-based line:column of a finding in the document `root` (see `Finding` for the anchors)."""
    if anchor == "doc":
        mark = root.start_mark
    elif anchor == "self":
        mark = _walk(root, path)[1].start_mark
    elif anchor == "node":
        # a missing field is reported at the mapping that should hold it
        _, node = _walk(root, path[:-1])
        mark = node.start_mark
    else:
        key_node, node = _walk(root, path)
        mark = key_node.start_mark if anchor == "key" and key_node is not None else node.start_mark
    return mark.line + 1, mark.column + 1


class Lines:
    """Source lines of a file, split only when a finding needs one."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._lines: list[str] | None = None

    def get(self, line: int) -> str:
        if self._lines is None:
            self._lines = self.text.splitlines()
        return self._lines[line - 1] if 0 < line <= len(self._lines) else ""


def _labelled_children(node: Node) -> Iterable[tuple[Any, Node, Node | None]]:
    """(path step, child, its key node) for a mapping's values and a sequence's items."""
    if isinstance(node, MappingNode):
        for k, v in node.value:
            yield (k.value if isinstance(k, ScalarNode) else "?"), v, k
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            yield i, item, None


def _path_to(root: Node, target: Node) -> str:
    """JSON path of `target` inside `root` (only called to describe a refused node)."""

    def search(node: Node, path: list[Any], depth: int) -> list[Any] | None:
        if node is target:
            return path
        if depth > 200:
            return None
        for label, child, key in _labelled_children(node):
            if key is target:
                return path
            found = search(child, [*path, label], depth + 1)
            if found is not None:
                return found
        return None

    found = search(root, [], 0)
    return format_path(found) if found else ""


def _refuse_bytes(data: bytes) -> Diag | None:
    """Why these bytes are not routine text at all, before any parsing."""
    if len(data) > MAX_FILE_BYTES:
        return (0, 0, "", f"file is larger than {MAX_FILE_BYTES} bytes (1 MiB); refusing to read it", "too_large", "")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return (1, 1, "", "UTF-16 text; routine files must be UTF-8", "encoding", "")
    nul = data.find(b"\0")
    if nul >= 0:
        line, col = _byte_position(data, nul)
        return (line, col, "", "binary file (NUL byte); routine files must be UTF-8 YAML text", "binary", "")
    return None


def _decode(data: bytes) -> str | Diag:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _byte_position(data, exc.start)
        return (line, col, "", f"invalid UTF-8 (byte 0x{data[exc.start]:02x}); routine files must be UTF-8", "encoding", "")


def _syntax_error(exc: yaml.YAMLError, lines: Lines) -> Diag:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return (0, 0, "", f"YAML error: {exc}", "yaml", "")
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    problem = exc.problem or "invalid YAML"
    if exc.context and exc.context_mark and exc.context_mark is not mark:
        problem = f"{problem} ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    return (line, col, "", f"YAML syntax error: {problem}", "yaml", lines.get(line))


def _check_document(loader: Any, node: Node, index: int, may_alias: bool, lines: Lines, result: FileResult) -> None:
    """Build, check and position one composed document into `result`."""
    start = (node.start_mark.line + 1, node.start_mark.column + 1)
    try:
        if may_alias:
            check_expanded_size(node)
        body = loader.construct_document(node)
    except Refused as exc:
        mark = node.start_mark if exc.at_document else exc.node.start_mark
        path = "" if exc.at_document else _path_to(node, exc.node)
        result.diags.append((mark.line + 1, mark.column + 1, path, exc.message, "yaml", lines.get(mark.line + 1)))
        result.docs.append(Doc(index, *start, None, None, None))
        return
    if body is None:  # an empty document (a stray `---`): nothing to define
        return
    result.docs.append(Doc(index, *start, *_identity(body), body))
    for path_t, anchor, message in document_findings(body):
        line, col = position(node, path_t, anchor)
        result.diags.append((line, col, format_path(path_t), message, "invalid", lines.get(line)))


def check_file(data: bytes) -> FileResult:
    """Everything that can be said about one file on its own (cached by content)."""
    result = FileResult([], [])
    refused = _refuse_bytes(data)
    text = _decode(data) if refused is None else refused
    if not isinstance(text, str):
        result.diags.append(text)
        return result
    lines = Lines(text)
    loader = StrictLoader(text)
    may_alias = "&" in text
    index = 0
    try:
        while loader.check_node():
            _check_document(loader, loader.get_node(), index, may_alias, lines, result)
            index += 1
    except yaml.YAMLError as exc:
        result.diags.append(_syntax_error(exc, lines))
    finally:
        loader.dispose()
    return result


def composed_documents(text: str) -> list[Node | None]:
    """Composed root node of every document of a valid file (to position cross-file findings)."""
    loader = StrictLoader(text)
    try:
        out: list[Node | None] = []
        while loader.check_node():
            out.append(loader.get_node())
        return out
    finally:
        loader.dispose()
