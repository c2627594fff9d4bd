"""The YAML dialect of routine files: the YAML 1.2 core schema, strict, with hard limits.

Routine files are untrusted input, so the dialect is reduced to what JSON can carry: plain scalars
resolve by the YAML 1.2 core schema (no YAML 1.1 timestamps, yes/no booleans, sexagesimal ints or
merge keys), any other tag is refused, integers are 64-bit and floats finite (run inputs, plans and
the journal are JSON and SQLite), and an alias graph that would expand past `MAX_EXPANDED_NODES` is
refused before it is built. A refusal is a `Refused` carrying the node that positions the error.

Speed matters (plan re-reads the whole directory): libyaml's C parser, a memoised resolver and one
direct recursive constructor instead of SafeConstructor's generic machinery.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterator
from typing import Any

from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from palyra_ops.durations import show

#: how deep the pure-Python composer may nest: it recurses in Python (a few frames a level), so
#: without a limit of its own a deep document would end in RecursionError instead of a diagnostic
MAX_PURE_DEPTH = 200


class PureParser(Reader, Scanner, Parser, Composer):
    """PyYAML's pure-Python parser and composer, with CParser's constructor signature.

    pip builds PyYAML without its C extension where no wheel fits and libyaml's headers are missing,
    so this is a real path (slower; same documents and positions, other wording for syntax errors);
    the tests run the whole corpus on it. libyaml refuses nesting deeper than 1000 levels with a
    syntax error; this parser does the same at `MAX_PURE_DEPTH`.
    """

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_PURE_DEPTH:
                raise ComposerError(None, None, "exceeded maximum nesting depth", self.peek_event().start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


try:
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml (see PureParser)
    CParser = PureParser  # type: ignore[assignment, misc]

#: a document whose node graph expands (through aliases) to more nodes than this is an alias bomb
MAX_EXPANDED_NODES = 100_000

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_CORE_TAGS = "str, int, float, bool, null, seq, map"

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution). Unlike PyYAML's YAML 1.1
# resolver there are no timestamps (an unquoted `at:` stays the string the user wrote), no yes/no/on/off
# booleans (`on:` is a key, not True), no sexagesimal ints and no merge keys. .inf/.nan stay strings
# because run inputs and plans are JSON, which cannot carry them.
_BOOL_VALUES = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULL_VALUES = frozenset({"", "~", "null", "Null", "NULL"})
_INT_RE = re.compile(r"[-+]?[0-9]+|0o[0-7]{1,22}|0x[0-9a-fA-F]{1,16}")
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_FLOAT_RE = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
#: a plain scalar starting with anything else is a string: the common case costs one set lookup
_NON_STR_FIRST = frozenset("-+.0123456789~nNtTfF")
_RESOLVE_CACHE: dict[str, str] = {}
_RESOLVE_CACHE_MAX = 8192


def describe(value: Any) -> str:
    """A loaded value as a message shows it: strings quoted, JSON spelling, containers by kind."""
    if isinstance(value, str):
        return repr(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _classify_plain(value: str) -> str:
    if value in _NULL_VALUES:
        return _NULL
    if value in _BOOL_VALUES:
        return _BOOL
    if _INT_RE.fullmatch(value):
        return _INT
    if _FLOAT_RE.fullmatch(value):
        return _FLOAT
    return _STR


class CoreResolver(BaseResolver):
    """Resolves untagged scalars by the YAML 1.2 core schema, memoising repeated plain values."""

    # No path resolvers are ever added here, so PyYAML's descend/ascend_resolver, called around
    # every node the composer builds, would only return: C builtins that ignore their arguments
    # stand in for them (no Python frame per node; ~12% of composing 100,000 routines).
    descend_resolver = operator.is_  # (parent, index)
    ascend_resolver = ().__len__  # ()

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:  # type: ignore[override]
        if kind is ScalarNode:
            if not implicit[0] or (value and value[0] not in _NON_STR_FIRST):
                return _STR
            tag = _RESOLVE_CACHE.get(value)
            if tag is None:
                tag = _classify_plain(value)
                if len(_RESOLVE_CACHE) < _RESOLVE_CACHE_MAX:
                    _RESOLVE_CACHE[value] = tag
            return tag
        return _MAP if kind is MappingNode else _SEQ


class Refused(Exception):
    """A document the strict constructor will not build; carries the node to position the error."""

    def __init__(self, node: Node, message: str, *, at_document: bool = False) -> None:
        super().__init__(message)
        self.node = node
        self.message = message
        self.at_document = at_document


def _short_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:") :] if tag.startswith("tag:yaml.org,2002:") else tag


def _not_allowed(node: Node, on: str = "") -> Refused:
    where = f" on a {on}" if on else ""
    return Refused(node, f"tag {_short_tag(node.tag)!r} is not allowed{where} (YAML core schema only: {_CORE_TAGS})")


def _int_scalar(node: ScalarNode) -> int:
    value = node.value
    if not _INT_RE.fullmatch(value):
        raise Refused(node, f"{value!r} is not an integer")
    # routine data is JSON and SQLite: 64-bit integers, and never int() on thousands of digits
    number = int(value, 0) if value[:2] in ("0o", "0x") else int(value) if len(value) <= 20 else None
    if number is None or not INT64_MIN <= number <= INT64_MAX:
        raise Refused(node, f"{show(value)} is out of range for an integer ({INT64_MIN} to {INT64_MAX})")
    return number


def _float_scalar(node: ScalarNode) -> float:
    value = node.value
    number = float(value) if _FLOAT_RE.fullmatch(value) else math.inf
    if not math.isfinite(number):
        raise Refused(node, f"{show(value)} is not a finite number")
    return number


def _bool_scalar(node: ScalarNode) -> bool:
    if node.value not in _BOOL_VALUES:
        raise Refused(node, f"{node.value!r} is not a boolean (true or false)")
    return _BOOL_VALUES[node.value]


def _null_scalar(node: ScalarNode) -> None:
    if node.value not in _NULL_VALUES:
        raise Refused(node, f"{node.value!r} is not null")


_SCALARS: dict[str, Callable[[ScalarNode], Any]] = {
    _STR: lambda node: node.value,
    _INT: _int_scalar,
    _FLOAT: _float_scalar,
    _BOOL: _bool_scalar,
    _NULL: _null_scalar,
}


class StrictConstructor(SafeConstructor):
    """Builds plain JSON values from composed nodes, refusing anything outside the core schema.

    SafeConstructor's generic machinery (state generators, per-node memo, merge flattening) exists to
    support recursive structures and YAML 1.1 extras we refuse anyway; one direct recursive pass is
    both stricter and several times faster. Aliases are expanded (the alias-bomb check bounds that),
    so the result is a tree with no shared mutable parts.
    """

    def construct_document(self, node: Node) -> Any:  # type: ignore[override]
        try:
            return self._build(node)
        except RecursionError:
            raise Refused(node, "document is nested too deeply", at_document=True) from None

    def _build(self, node: Node) -> Any:
        cls = node.__class__
        if cls is MappingNode:
            return self._mapping(node)  # type: ignore[arg-type]
        if cls is SequenceNode:
            if node.tag != _SEQ:
                raise _not_allowed(node, "sequence")
            build = self._build
            return [item.value if item.tag is _STR else build(item) for item in node.value]
        scalar = _SCALARS.get(node.tag)
        if scalar is None:
            raise _not_allowed(node)
        return scalar(node)  # type: ignore[arg-type]

    def _mapping(self, node: MappingNode) -> dict[str, Any]:
        if node.tag != _MAP:
            raise _not_allowed(node, "mapping")
        out: dict[str, Any] = {}
        build = self._build
        for key_node, value_node in node.value:
            key = self._key(key_node)
            if key in out:
                first = next(k for k, _ in node.value if k.value == key and k is not key_node)
                raise Refused(
                    key_node,
                    f"duplicate key {key!r} (first defined at line {first.start_mark.line + 1}, column {first.start_mark.column + 1})",
                )
            out[key] = value_node.value if value_node.tag is _STR else build(value_node)
        return out

    def _key(self, key_node: Node) -> str:
        if key_node.tag is _STR:
            if key_node.value == "<<" and not key_node.style:  # plain style: '' from libyaml, None from PyYAML
                raise Refused(key_node, "merge keys (<<) are not supported; write the fields out")
            return key_node.value  # type: ignore[no-any-return]
        key = self._build(key_node)
        if not isinstance(key, str):
            raise Refused(key_node, f"mapping key {describe(key)} must be a string (quote it)")
        return key


def _make_loader(parser: type, name: str, doc: str) -> type:
    def __init__(self: Any, stream: str) -> None:
        parser.__init__(self, stream)
        StrictConstructor.__init__(self)
        CoreResolver.__init__(self)

    return type(name, (parser, StrictConstructor, CoreResolver), {"__init__": __init__, "__doc__": doc})


StrictLoader = _make_loader(
    CParser, "StrictLoader", "libyaml's C parser and composer + the strict constructor + the core-schema resolver."
)
#: the same dialect on PyYAML's pure-Python parser: what StrictLoader is where libyaml is missing
PureStrictLoader = _make_loader(PureParser, "PureStrictLoader", "The strict dialect on PyYAML's pure-Python parser.")


def _child_groups(node: Node) -> Iterator[tuple[Node, ...]]:
    """What a node holds, a mapping's (key, value) pairs or a sequence's items one by one."""
    if isinstance(node, MappingNode):
        yield from node.value
    elif isinstance(node, SequenceNode):
        for item in node.value:
            yield (item,)


def check_expanded_size(root: Node, limit: int = MAX_EXPANDED_NODES) -> None:
    """Refuse a document whose aliases expand past `limit` nodes, or that contains itself.

    Counted on the composed graph with memoisation, so a billion-laughs document costs time linear
    in its *written* size to reject.
    """
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        known = memo.get(key)
        if known is not None:
            return known
        if key in active:
            raise Refused(node, "recursive alias: the node contains itself")
        active.add(key)
        total = 1
        for group in _child_groups(node):
            total += sum(size(child) for child in group)
            if total > limit:
                break
        active.discard(key)
        if total > limit:
            raise Refused(
                root, f"document expands to more than {limit} nodes through aliases (alias bomb?)", at_document=True
            )
        memo[key] = total
        return total

    try:
        size(root)
    except RecursionError:
        raise Refused(root, "document is nested too deeply", at_document=True) from None
