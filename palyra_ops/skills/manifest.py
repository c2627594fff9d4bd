"""The skill manifest (`skill.yaml`): identity, entry module, declared capabilities and quotas.

The manifest is the only place a skill says what it needs. Everything the sandbox later grants is
derived from it (and narrowed by policy), so parsing is strict: unknown fields, duplicate keys,
odd paths and out-of-range quotas are refused with a message naming the field, rather than being
silently ignored and surprising an operator at run time.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import yaml

from palyra_ops.durations import format_duration_ms, parse_duration_ms
from palyra_ops.errors import PalyraError

MANIFEST_FILE = "skill.yaml"
MAX_MANIFEST_BYTES = 64 * 1024

#: same shape as a routine name, so a skill id is also a safe directory name
ID_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$(?!\n)", re.ASCII)
PUBLISHER_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$(?!\n)", re.ASCII)
#: Semantic Versioning 2.0.0 (the regex from semver.org)
SEMVER_PATTERN = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$(?!\n)",
    re.ASCII,
)
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$(?!\n)", re.ASCII)
#: a DNS host name, optionally `*.` wildcard-prefixed, optionally with a port
HOST_PATTERN = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:\d{1,5})?$(?!\n)",
    re.ASCII,
)

DEFAULT_FUEL = 100_000_000
MAX_FUEL = 100_000_000_000
DEFAULT_MEMORY = 64 * 1024 * 1024
MAX_MEMORY = 4 * 1024 * 1024 * 1024
MIN_MEMORY = 64 * 1024
DEFAULT_WALL_MS = 5_000
MAX_WALL_MS = 10 * 60_000
MIN_WALL_MS = 10

_SIZE = re.compile(r"([0-9]{1,15}) *(B|KiB|MiB|GiB|K|M|G|KB|MB|GB)?", re.ASCII)  # fullmatch
_SIZE_UNITS = {
    None: 1, "B": 1,
    "K": 1024, "KiB": 1024, "KB": 1000,
    "M": 1024**2, "MiB": 1024**2, "MB": 1000**2,
    "G": 1024**3, "GiB": 1024**3, "GB": 1000**3,
}

_TOP_KEYS = {"id", "version", "publisher", "entry", "modules", "description", "capabilities", "quotas"}
_CAP_KEYS = ("filesystem", "http", "env")
_QUOTA_KEYS = ("fuel", "memory", "wall_time")


def parse_size(value: object) -> int:
    """Byte sizes as an integer or `16MiB`-style text; raises ValueError with the offending value."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE.fullmatch(value.strip(" \t"))
        if m:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    raise ValueError(f"invalid size {value!r}: expected bytes or e.g. 512KiB, 16MiB, 1GiB")


def format_size(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


@dataclass(frozen=True)
class FilesystemRoot:
    path: str  # absolute host path, mounted at the same path in the guest
    writable: bool = False

    @property
    def capability(self) -> str:
        return f"fs-rw:{self.path}" if self.writable else f"fs:{self.path}"


@dataclass(frozen=True)
class Capabilities:
    filesystem: tuple[FilesystemRoot, ...] = ()
    http: tuple[str, ...] = ()
    env: tuple[str, ...] = ()

    def names(self) -> list[str]:
        """Capability strings (`fs:/srv/data`, `fs-rw:/tmp/x`, `http:api.example.com`, `env:TOKEN`).

        These strings are what policy grants (`skill.capability:<id>:<cap>`) and what the runner's
        `granted` set holds, so they must be stable and unambiguous.
        """
        return (
            [r.capability for r in self.filesystem]
            + [f"http:{h}" for h in self.http]
            + [f"env:{e}" for e in self.env]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "filesystem": [{"path": r.path, "writable": r.writable} for r in self.filesystem],
            "http": list(self.http),
            "env": list(self.env),
        }


@dataclass(frozen=True)
class Quotas:
    fuel: int = DEFAULT_FUEL
    memory_bytes: int = DEFAULT_MEMORY
    wall_time_ms: int = DEFAULT_WALL_MS

    def to_json(self) -> dict[str, Any]:
        return {
            "fuel": self.fuel,
            "memory": format_size(self.memory_bytes),
            "wall_time": format_duration_ms(self.wall_time_ms),
        }


@dataclass(frozen=True)
class Manifest:
    id: str
    version: str
    publisher: str
    entry: str
    modules: tuple[str, ...] = ()  # every .wasm file in the package, entry included
    description: str = ""
    capabilities: Capabilities = field(default_factory=Capabilities)
    quotas: Quotas = field(default_factory=Quotas)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "publisher": self.publisher,
            "entry": self.entry,
            "modules": list(self.modules),
            "description": self.description,
            "capabilities": self.capabilities.to_json(),
            "quotas": self.quotas.to_json(),
        }


class _StrictLoader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys: a second `capabilities:` must not win silently."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            mark = key_node.start_mark
            raise PalyraError(f"{MANIFEST_FILE}:{mark.line + 1}:{mark.column + 1}: duplicate key {key!r}")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _bad(path: str, message: str) -> PalyraError:
    return PalyraError(f"{MANIFEST_FILE}: {path}: {message}")


def _unknown(obj: dict, allowed: Collection[str], where: str) -> None:
    extra = sorted(str(k) for k in obj if k not in allowed)
    if extra:
        prefix = f"{where}." if where else ""
        raise _bad(f"{prefix}{extra[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _req_str(obj: dict, key: str, pattern: re.Pattern[str] | None, what: str) -> str:
    value = obj.get(key)
    if value is None:
        raise _bad(key, "is required")
    if not isinstance(value, str):
        raise _bad(key, f"expected a string, got {type(value).__name__}")
    if pattern is not None and not pattern.match(value):
        raise _bad(key, f"{value!r} is not {what}")
    return value


def check_module_path(value: object, where: str) -> str:
    """A package-relative POSIX path to a `.wasm` file, never escaping the package."""
    if not isinstance(value, str) or not value:
        raise _bad(where, "expected a relative path to a .wasm file")
    norm = posixpath.normpath(value)
    if value.startswith("/") or "\\" in value or norm.startswith("..") or norm != value:
        raise _bad(where, f"{value!r} must be a normalised path inside the package")
    if not value.endswith(".wasm"):
        raise _bad(where, f"{value!r} is not a .wasm file")
    return value


def _section(raw: object, name: str, keys: tuple[str, ...]) -> dict | None:
    """A manifest section: None when absent, else a mapping holding only `keys`."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad(name, f"expected a mapping with {', '.join(keys)}")
    _unknown(raw, keys, name)
    return raw


def _parse_capabilities(raw: object) -> Capabilities:
    raw = _section(raw, "capabilities", _CAP_KEYS)
    if raw is None:
        return Capabilities()
    roots = [_filesystem_root(item, f"capabilities.filesystem[{i}]") for i, item in enumerate(raw.get("filesystem") or [])]
    hosts = _names(raw, "http", HOST_PATTERN, "is not a host name (e.g. api.example.com)")
    envs = _names(raw, "env", ENV_NAME_PATTERN, "is not an environment variable name")
    for key, items in (("filesystem", [r.path for r in roots]), ("http", hosts), ("env", envs)):
        if len(set(items)) != len(items):
            raise _bad(f"capabilities.{key}", "lists an entry twice")
    return Capabilities(tuple(roots), tuple(hosts), tuple(envs))


def _filesystem_root(item: object, where: str) -> FilesystemRoot:
    if isinstance(item, str):
        item = {"path": item}
    if not isinstance(item, dict):
        raise _bad(where, "expected a path or {path, writable}")
    _unknown(item, {"path", "writable"}, where)
    path = item.get("path")
    if not isinstance(path, str) or not path.startswith("/") or posixpath.normpath(path) != path:
        raise _bad(f"{where}.path", f"{path!r} must be an absolute, normalised path")
    if path == "/":
        raise _bad(f"{where}.path", "the whole file system ('/') cannot be granted")
    writable = item.get("writable", False)
    if not isinstance(writable, bool):
        raise _bad(f"{where}.writable", "expected true or false")
    return FilesystemRoot(path, writable)


def _names(raw: dict, key: str, pattern: re.Pattern[str], problem: str) -> list[str]:
    """`capabilities.<key>`: a list of names each matching `pattern`."""
    names: list[str] = []
    for i, name in enumerate(raw.get(key) or []):
        if not isinstance(name, str) or not pattern.match(name):
            raise _bad(f"capabilities.{key}[{i}]", f"{name!r} {problem}")
        names.append(name)
    return names


def _parse_quotas(raw: object) -> Quotas:
    raw = _section(raw, "quotas", _QUOTA_KEYS)
    if raw is None:
        return Quotas()
    fuel = raw.get("fuel", DEFAULT_FUEL)
    if isinstance(fuel, bool) or not isinstance(fuel, int) or not 1 <= fuel <= MAX_FUEL:
        raise _bad("quotas.fuel", f"{fuel!r} must be an integer in 1..{MAX_FUEL}")
    try:
        memory = parse_size(raw.get("memory", DEFAULT_MEMORY))
    except ValueError as exc:
        raise _bad("quotas.memory", str(exc)) from None
    if not MIN_MEMORY <= memory <= MAX_MEMORY:
        raise _bad("quotas.memory", f"{format_size(memory)} must be between 64KiB and 4GiB")
    wall = raw.get("wall_time", format_duration_ms(DEFAULT_WALL_MS))
    try:
        wall_ms = parse_duration_ms(wall)
    except ValueError as exc:
        raise _bad("quotas.wall_time", str(exc)) from None
    if not MIN_WALL_MS <= wall_ms <= MAX_WALL_MS:
        raise _bad("quotas.wall_time", f"{wall} must be between 10ms and 10m")
    return Quotas(fuel, memory, wall_ms)


def parse_manifest(text: bytes) -> Manifest:
    """Parse and check `skill.yaml` bytes; raises PalyraError naming the field at fault."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise PalyraError(f"{MANIFEST_FILE}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise PalyraError(f"{MANIFEST_FILE}: not UTF-8 text") from None
    try:
        raw = yaml.load(decoded, Loader=_StrictLoader)  # noqa: S506 - strict safe loader
    except yaml.YAMLError as exc:
        raise PalyraError(f"{MANIFEST_FILE}: not valid YAML: {exc}") from None
    return parse_manifest_data(raw)


def parse_manifest_data(raw: object) -> Manifest:
    """Check an already-loaded manifest mapping (also used to rebuild one from the installed index)."""
    if not isinstance(raw, dict):
        raise PalyraError(f"{MANIFEST_FILE}: expected a mapping at the top level")
    _unknown(raw, _TOP_KEYS, "")
    skill_id = _req_str(raw, "id", ID_PATTERN, "a valid skill id (lower-case letters, digits, '.', '_', '-')")
    version = raw.get("version")
    if version is not None and not isinstance(version, str):
        raise _bad("version", f"expected a semantic version such as 1.2.0 as text, got the number {version!r} (quote it)")
    if not isinstance(version, str) or not SEMVER_PATTERN.match(version):
        raise _bad("version", f"{version!r} is not a semantic version such as 1.2.0")
    publisher = _req_str(raw, "publisher", PUBLISHER_PATTERN, "a valid publisher name")
    entry = check_module_path(raw.get("entry"), "entry")
    modules_raw = raw.get("modules") or []
    if not isinstance(modules_raw, list):
        raise _bad("modules", "expected a list of .wasm paths")
    modules = [check_module_path(m, f"modules[{i}]") for i, m in enumerate(modules_raw)]
    if entry not in modules:
        modules.insert(0, entry)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _bad("description", "expected a string")
    return Manifest(
        id=skill_id,
        version=version,
        publisher=publisher,
        entry=entry,
        modules=tuple(modules),
        description=description,
        capabilities=_parse_capabilities(raw.get("capabilities")),
        quotas=_parse_quotas(raw.get("quotas")),
    )


def semver_key(version: str) -> tuple:
    """Sort key by SemVer precedence (pre-releases before the release; build metadata ignored)."""
    m = SEMVER_PATTERN.match(version)
    if not m:
        raise ValueError(f"{version!r} is not a semantic version")
    core = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    pre = m.group(4)
    if pre is None:
        return (core, 1, ())
    parts = tuple((0, int(p), "") if p.isascii() and p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (core, 0, parts)
