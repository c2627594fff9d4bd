"""Checking a YAML config file against a table of keys, without coercing anything.

`config.KEYS` maps each dotted key path to a check; this module holds the checks (each returns None
for an acceptable value, else what was expected) and the walk that applies the table: an unknown
key, a string where a boolean or number belongs (`allow_remote: "false"` must never mean true), a
YAML 1.1 yes/no/on/off, or a value out of range becomes an error naming the key path and its
file:line:column, all of them reported at once. Kept apart from `config` so the table there stays
one line per key and this machinery can serve any such file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from palyra_ops.durations import format_duration_ms, parse_duration_ms
from palyra_ops.errors import PalyraError

# -- value checks -------------------------------------------------------------------------------------
# A check returns None when the value is acceptable, else what was expected (the message after
# "KEY: "). Values are checked as YAML produced them: nothing is converted before or after.

Check = Callable[[Any], "str | None"]


def describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def boolean(value: Any) -> str | None:
    """true or false only: YAML 1.1's yes/no/on/off are refused by the walker (see _value_problem)."""
    return None if isinstance(value, bool) else f"expected true or false, got {describe(value)}"


def string(*, choices: tuple[str, ...] | None = None, pattern: str | None = None, what: str = "a string") -> Check:
    rx = re.compile(pattern) if pattern else None

    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return f"expected {what}, got {describe(value)}"
        if choices is not None and value not in choices:
            return f"{value!r} is not one of {', '.join(choices)}"
        if rx is not None and not rx.fullmatch(value):
            return f"expected {what}, got {value!r}"
        return None

    return check


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    def check(value: Any) -> str | None:
        rng = _range_text(lo, hi)
        if not isinstance(value, int) or isinstance(value, bool):
            return f"expected an integer{rng}, got {describe(value)}"
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return f"expected an integer{rng}, got {value}"
        return None

    return check


def number(lo: float | None = None, hi: float | None = None, *, above: float | None = None) -> Check:
    def check(value: Any) -> str | None:
        rng = f" greater than {above:g}" if above is not None else _range_text(lo, hi)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"expected a number{rng}, got {describe(value)}"
        if (lo is not None and value < lo) or (hi is not None and value > hi) or (above is not None and value <= above):
            return f"expected a number{rng}, got {value}"
        return None

    return check


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" between {_num(lo)} and {_num(hi)}"
    if lo is not None:
        return f" >= {_num(lo)}"
    if hi is not None:
        return f" <= {_num(hi)}"
    return ""


def duration(*, min_ms: int = 1, zero_off: bool = False) -> Check:
    """A duration string (`30s`, `1h30m`); `zero_off`: `0` (number or string) switches the thing off."""

    def check(value: Any) -> str | None:
        if zero_off and (value == 0 and not isinstance(value, bool) or value == "0"):
            return None
        if not isinstance(value, str):
            off = " (or 0 to turn it off)" if zero_off else ""
            return f"expected a duration such as 30s, 5m or 1h30m{off}, got {describe(value)}"
        try:
            ms = parse_duration_ms(value)
        except ValueError as exc:
            return str(exc)
        if ms < min_ms:
            return f"must be at least {format_duration_ms(min_ms)}, got {value!r}"
        return None

    return check


def size(value: Any) -> str | None:
    from palyra_ops.memory.maintenance import parse_size_bytes

    if isinstance(value, bool):
        return f"expected a size such as 1048576, 512KiB or 256MB, got {describe(value)}"
    try:
        parse_size_bytes(value)
    except PalyraError:
        return f"expected a size such as 1048576, 512KiB or 256MB, got {describe(value)}"
    return None


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_ref(value: Any) -> str | None:
    if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str) and ENV_NAME.fullmatch(value["env"]):
        return None
    return f"secrets are only accepted as {{env: NAME}} references, got {describe(value)}"


def url(value: Any) -> str | None:
    if isinstance(value, str) and re.match(r"^https?://[^\s/]+", value):
        return None
    return f"expected an http:// or https:// URL, got {describe(value)}"


def nullable(check: Check) -> Check:
    def inner(value: Any) -> str | None:
        return None if value is None else check(value)

    return inner


def one_of(*checks: Check) -> Check:
    """The first check's message when none accepts the value."""

    def inner(value: Any) -> str | None:
        errors = [c(value) for c in checks]
        return None if any(e is None for e in errors) else errors[0]

    return inner


# -- the walk over a file's data ------------------------------------------------------------------------

Patterns = list[tuple[tuple[str, ...], Check]]


def patterns(keys: dict[str, Check]) -> Patterns:
    """`KEYS` as (path pattern, check) pairs, the form the walk matches against."""
    return [(tuple(k.split(".")), c) for k, c in keys.items()]


def _match(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    return len(pattern) == len(path) and all(p in ("*", q) for p, q in zip(pattern, path, strict=True))


def _children(table: Patterns, path: tuple[str, ...]) -> list[str]:
    """Names allowed directly under the mapping at `path` (`NAME` for a wildcard)."""
    out: list[str] = []
    for pattern, _ in table:
        if len(pattern) > len(path) and _match(pattern[: len(path)], path):
            name = pattern[len(path)]
            name = "NAME" if name == "*" else name
            if name not in out:
                out.append(name)
    return out


@dataclass
class Source:
    """Where config values came from, for error messages: `file:line:col` per key path."""

    name: str = "config"
    positions: dict[tuple[str, ...], tuple[int, int]] = field(default_factory=dict)
    #: the text of plain scalars YAML read as booleans, to refuse yes/no/on/off
    bool_words: dict[tuple[str, ...], str] = field(default_factory=dict)

    def where(self, path: tuple[str, ...]) -> str:
        while path and path not in self.positions:
            path = path[:-1]
        pos = self.positions.get(path)
        return f"{self.name}:{pos[0]}:{pos[1]}" if pos else self.name

    def error(self, path: tuple[str, ...], message: str) -> str:
        return f"{self.where(path)}: {'.'.join(path)}: {message}" if path else f"{self.where(path)}: {message}"


def check_tree(data: Any, table: Patterns, src: Source) -> None:
    """Every key known, every value of the right type and range; all problems in one PalyraError."""
    if not isinstance(data, dict):
        raise PalyraError(f"{src.name}: the config must be a mapping, got {describe(data)}")
    errors: list[str] = []
    _walk(data, (), table, src, errors)
    if errors:
        raise PalyraError("\n".join(errors))


def _value_problem(check: Check, value: Any, word: str | None) -> str | None:
    problem = check(value)
    if problem is None and check is boolean and word is not None and word.lower() not in ("true", "false"):
        return f"write true or false, not {word!r} (YAML 1.1 reads it as a boolean, YAML 1.2 as a string)"
    return problem


def _walk(mapping: dict[Any, Any], path: tuple[str, ...], table: Patterns, src: Source, errors: list[str]) -> None:
    for raw_key, value in mapping.items():
        key = path + (str(raw_key),)
        check = next((c for pattern, c in table if _match(pattern, key)), None)
        if check is not None:
            problem = _value_problem(check, value, src.bool_words.get(key))
            if problem is not None:
                errors.append(src.error(key, problem))
            continue
        allowed = _children(table, key)
        if not allowed:
            expected = _children(table, path)
            errors.append(src.error(key, f"unknown key; expected {', '.join(expected) if expected else 'nothing here'}"))
        elif isinstance(value, dict):  # a section
            _walk(value, key, table, src, errors)
        elif value is not None:
            errors.append(src.error(key, f"expected a mapping (with {', '.join(allowed)}), got {describe(value)}"))


def parse(text: str, name: str) -> tuple[Any, Source]:
    """YAML → data plus the position of every key (and duplicate keys refused)."""
    src = Source(name)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, src
        errors: list[str] = []
        _positions(node, (), src, errors)
        if errors:
            raise PalyraError("\n".join(errors))
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise PalyraError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise PalyraError(f"{name}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return data, src


def _positions(node: yaml.Node, path: tuple[str, ...], src: Source, errors: list[str]) -> None:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool" and not node.style:
        src.bool_words[path] = node.value
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
        sub = path + (key,)
        line = key_node.start_mark.line + 1
        if key in seen:
            errors.append(f"{src.name}:{line}:{key_node.start_mark.column + 1}: {'.'.join(sub)}: "
                          f"duplicate key (first at line {seen[key]})")
            continue
        seen[key] = line
        src.positions[sub] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
        _positions(value_node, sub, src, errors)
