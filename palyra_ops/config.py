"""Daemon configuration: command-line flags over an optional `palyra.yaml`.

Precedence is flag > config file > default, the usual operator expectation: a config file checked in
next to the routines describes the deployment, and a flag overrides it for one run. Secrets (backend
API keys, webhook integration secrets) are only ever *references* to environment variables, read when
used, so the config file is safe to commit.

Every key of the file is type-checked against `KEYS` (one line per key) before anything is built:
an unknown key, a string where a boolean or number belongs (`allow_remote: "false"` must never mean
true), or a value out of range is an error naming the key path and its file:line:column, and all of
them are reported at once. Nothing is coerced.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from palyra_ops.durations import format_duration_ms, parse_duration_ms
from palyra_ops.errors import PalyraError

DEFAULT_LISTEN = "127.0.0.1:7142"
BACKEND_KINDS = ("echo", "http", "openai")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class EnvRef:
    """`{env: NAME}`: a secret read from the daemon's environment when it is needed."""

    env: str

    def resolve(self, what: str) -> str:
        value = os.environ.get(self.env)
        if value is None:
            raise PalyraError(f"{what}: environment variable {self.env} is not set")
        return value


@dataclass(frozen=True)
class BackendConfig:
    kind: str = "echo"
    url: str | None = None
    model: str | None = None
    api_key: EnvRef | None = None
    timeout_ms: int = 60_000


@dataclass(frozen=True)
class IntegrationConfig:
    name: str
    secret: EnvRef | None = None


@dataclass(frozen=True)
class DeliveryConfig:
    """Where deliveries may go (docs/security.md): file channels stay under `file_root` (None: the
    state root's `deliveries/`); webhook channels never reach link-local addresses unless allowed."""

    file_root: Path | None = None
    allow_link_local_targets: bool = False


@dataclass(frozen=True)
class SkillsConfig:
    """SPEC §8: how often the daemon re-audits installed skills; 0 disables the re-audit."""

    audit_interval_ms: int = 6 * 3_600_000


@dataclass(frozen=True)
class WatcherConfig:
    """`--watch` behaviour (docs/watcher.md)."""

    self_heal: bool = False
    rescan_interval_ms: int = 5 * 60_000
    debounce_ms: int = 150


@dataclass(frozen=True)
class DaemonConfig:
    host: str = "127.0.0.1"
    port: int = 7142
    journal: Path | None = None  # None: $PALYRA_STATE_ROOT/journal.sqlite3
    dir: Path | None = Path("routines.d")
    watch: bool = False
    allow_remote: bool = False
    state_root: Path | None = None
    backend: BackendConfig = field(default_factory=BackendConfig)
    integrations: dict[str, IntegrationConfig] = field(default_factory=dict)
    memory: Any = None  # palyra_ops.memory.maintenance.MemoryConfig (default filled in __post_init__)
    skills: SkillsConfig = field(default_factory=SkillsConfig)
    watcher: WatcherConfig = field(default_factory=WatcherConfig)
    #: loopback dispatch: number of pooled keep-alive clients and the in-flight cap
    dispatch_clients: int = 4
    dispatch_concurrency: int = 8
    #: the HTTP server's keep-alive idle timeout; the loopback pool retires idle connections well
    #: before it (gateway.loopback_keepalive_s), so it never reuses one the server is closing
    keep_alive_ms: int = 20_000
    log_level: str = "info"
    #: SPEC §6: request bodies above this are refused with 413 before they are read in full
    max_body_bytes: int = 1 << 20
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)

    def __post_init__(self) -> None:
        if self.memory is None:  # imported lazily: the memory library pulls in numpy
            from palyra_ops.memory.maintenance import MemoryConfig

            object.__setattr__(self, "memory", MemoryConfig())

    @property
    def listen(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(text: str, what: str = "--listen") -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`); a clear error instead of a socket traceback later."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or not port_text:
            raise PalyraError(f"{what} {text!r}: expected [IPV6]:PORT")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise PalyraError(f"{what} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:7142")
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise PalyraError(f"{what} {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise PalyraError(f"{what} {text!r}: port {port} is out of range 0..65535")
    return host, port


# -- value checks -------------------------------------------------------------------------------------
# A check returns None when the value is acceptable, else what was expected (the message after
# "KEY: "). Values are checked as YAML produced them: nothing is converted before or after.

Check = Callable[[Any], "str | None"]


def _describe(value: Any) -> str:
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
    """true or false only: YAML 1.1's yes/no/on/off are refused by the walker (see _check_value)."""
    return None if isinstance(value, bool) else f"expected true or false, got {_describe(value)}"


def string(*, choices: tuple[str, ...] | None = None, pattern: str | None = None, what: str = "a string") -> Check:
    rx = re.compile(pattern) if pattern else None

    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return f"expected {what}, got {_describe(value)}"
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
            return f"expected an integer{rng}, got {_describe(value)}"
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return f"expected an integer{rng}, got {value}"
        return None

    return check


def number(lo: float | None = None, hi: float | None = None, *, above: float | None = None) -> Check:
    def check(value: Any) -> str | None:
        rng = f" greater than {above:g}" if above is not None else _range_text(lo, hi)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"expected a number{rng}, got {_describe(value)}"
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
            return f"expected a duration such as 30s, 5m or 1h30m{off}, got {_describe(value)}"
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
        return f"expected a size such as 1048576, 512KiB or 256MB, got {_describe(value)}"
    try:
        parse_size_bytes(value)
    except PalyraError:
        return f"expected a size such as 1048576, 512KiB or 256MB, got {_describe(value)}"
    return None


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_ref(value: Any) -> str | None:
    if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str) and _ENV_NAME.fullmatch(value["env"]):
        return None
    return f"secrets are only accepted as {{env: NAME}} references, got {_describe(value)}"


def url(value: Any) -> str | None:
    if isinstance(value, str) and re.match(r"^https?://[^\s/]+", value):
        return None
    return f"expected an http:// or https:// URL, got {_describe(value)}"


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


# -- the config file's keys: ONE LINE PER KEY -------------------------------------------------------------
# Dotted key path → check. `*` stands for any name (`integrations.github.secret`). A mapping is implied
# by the keys below it (and may be empty or null); any key not listed here is an error naming it.
# Adding a config key = adding its line here, then reading `data` in build_config as before.

KEYS: dict[str, Check] = {
    "listen": string(what="HOST:PORT, e.g. 127.0.0.1:7142"),
    "journal": string(what="a path"),
    "dir": string(what="a path"),
    "watch": boolean,
    "allow_remote": boolean,
    "state_root": string(what="a path"),
    "log_level": string(choices=LOG_LEVELS),
    "backend.kind": string(choices=BACKEND_KINDS),
    "backend.url": url,
    "backend.model": string(),
    "backend.api_key": nullable(env_ref),
    "backend.timeout": duration(),
    "integrations.*.secret": nullable(env_ref),
    "memory.retention.max_age": nullable(duration()),
    "memory.retention.max_items": nullable(integer(0)),
    "memory.retention.max_bytes": nullable(size),
    "memory.retention.default_ttl": nullable(duration()),
    "memory.intervals.maintenance": duration(),
    "memory.intervals.backfill": duration(),
    "memory.batch": integer(1, 2048),
    "memory.vacuum.min_free_bytes": size,
    "memory.vacuum.min_free_ratio": number(0, 1),
    "memory.embedder.kind": string(choices=("hashing", "openai")),
    "memory.embedder.dim": integer(1, 65536),
    "memory.embedder.model": string(),
    "memory.embedder.base_url": url,
    "memory.embedder.api_key_env": nullable(string(pattern=_ENV_NAME.pattern, what="an environment variable name")),
    "memory.embedder.version": one_of(string(), integer(0)),
    "memory.embedder.timeout_s": number(above=0),
    "skills.audit_interval": duration(zero_off=True),
    "dispatch.clients": integer(1, 64),
    "dispatch.concurrency": integer(1, 1024),
    "dispatch.keep_alive": duration(),
    "watcher.self_heal": boolean,
    "watcher.rescan_interval": duration(),
    "watcher.debounce": duration(min_ms=0),
    "max_body_bytes": integer(1024, 1 << 30),
    "delivery.file_root": string(what="a path"),
    "delivery.allow_link_local_targets": boolean,
}

_PATTERNS: list[tuple[tuple[str, ...], Check]] = []


def _patterns() -> list[tuple[tuple[str, ...], Check]]:
    if len(_PATTERNS) != len(KEYS):
        _PATTERNS[:] = [(tuple(k.split(".")), c) for k, c in KEYS.items()]
    return _PATTERNS


def _match(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    return len(pattern) == len(path) and all(p in ("*", q) for p, q in zip(pattern, path, strict=True))


def _children(path: tuple[str, ...]) -> list[str]:
    """Names allowed directly under the mapping at `path` (`NAME` for a wildcard)."""
    out: list[str] = []
    for pattern, _ in _patterns():
        if len(pattern) > len(path) and _match(pattern[: len(path)], path):
            name = pattern[len(path)]
            name = "NAME" if name == "*" else name
            if name not in out:
                out.append(name)
    return out


@dataclass
class _Source:
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


def check_config(data: Any, source: _Source | None = None) -> None:
    """Every key known, every value of the right type and range; all problems in one PalyraError."""
    src = source or _Source()
    if not isinstance(data, dict):
        raise PalyraError(f"{src.name}: the config must be a mapping, got {_describe(data)}")
    errors: list[str] = []
    _walk(data, (), src, errors)
    if errors:
        raise PalyraError("\n".join(errors))


def _walk(mapping: dict[Any, Any], path: tuple[str, ...], src: _Source, errors: list[str]) -> None:
    for raw_key, value in mapping.items():
        key = path + (str(raw_key),)
        check = next((c for pattern, c in _patterns() if _match(pattern, key)), None)
        if check is not None:
            problem = check(value)
            word = src.bool_words.get(key)
            if problem is None and check is boolean and word is not None and word.lower() not in ("true", "false"):
                problem = f"write true or false, not {word!r} (YAML 1.1 reads it as a boolean, YAML 1.2 as a string)"
            if problem is not None:
                errors.append(src.error(key, problem))
            continue
        allowed = _children(key)
        if allowed:  # a section
            if value is None:
                continue
            if not isinstance(value, dict):
                errors.append(src.error(key, f"expected a mapping (with {', '.join(allowed)}), got {_describe(value)}"))
                continue
            _walk(value, key, src, errors)
            continue
        expected = _children(path)
        errors.append(src.error(key, f"unknown key; expected {', '.join(expected) if expected else 'nothing here'}"))


def _parse(text: str, name: str) -> tuple[Any, _Source]:
    """YAML → data plus the position of every key (and duplicate keys refused)."""
    src = _Source(name)
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


def _positions(node: yaml.Node, path: tuple[str, ...], src: _Source, errors: list[str]) -> None:
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


def _env_ref(value: Any) -> EnvRef | None:
    return EnvRef(value["env"]) if isinstance(value, dict) else None


def _ms(value: Any) -> int:
    """A value already checked by KEYS: a duration string, or 0."""
    return 0 if value in (0, "0") else parse_duration_ms(value)


def _flag_duration(value: Any, flag: str, *, zero_off: bool = False) -> int:
    problem = duration(zero_off=zero_off)(value)
    if problem is not None:
        raise PalyraError(f"{flag}: {problem}")
    return _ms(value)


def load_config_file(path: Path) -> dict[str, Any]:
    """The file's data, already type-checked (errors name file:line:column and the key path)."""
    data, _ = _load_file(path)
    return data


def _load_file(path: Path) -> tuple[dict[str, Any], _Source]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PalyraError(f"{path}: cannot read config: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PalyraError(f"{path}: the config is not UTF-8 text") from None
    data, src = _parse(text, str(path))
    check_config(data, src)
    return data, src


def build_config(file_data: dict[str, Any] | None = None, *, base_dir: Path | None = None,
                 source: _Source | None = None, **flags: Any) -> DaemonConfig:
    """Merge flags (None = not given) over the config file's values.

    Relative paths in the file are relative to the file's directory (`base_dir`), as in most tools,
    so `palyra-ops daemon --config deploy/palyra.yaml` works from anywhere.
    """
    src = source or _Source()
    data = dict(file_data or {})
    check_config(data, src)

    def section(name: str) -> dict[str, Any]:
        return data.get(name) or {}

    def rel(p: Any) -> Path:
        path = Path(str(p)).expanduser()
        return path if path.is_absolute() or base_dir is None else base_dir / path

    if flags.get("listen"):
        host, port = parse_listen(str(flags["listen"]))
    elif "listen" in data:
        try:
            host, port = parse_listen(data["listen"], "listen")
        except PalyraError as exc:
            raise PalyraError(f"{src.where(('listen',))}: {exc.message}") from None
    else:
        host, port = parse_listen(DEFAULT_LISTEN)

    journal = flags.get("journal")
    if journal is None and data.get("journal"):
        from palyra_ops.journal.faults import check_location

        journal = rel(check_location(str(data["journal"])))  # a URL is refused, not taken for a path
    dir_ = flags.get("dir")
    if dir_ is None and data.get("dir"):
        dir_ = rel(data["dir"])
    state_root = flags.get("state_root")
    if state_root is None and data.get("state_root"):
        state_root = rel(data["state_root"])

    b = section("backend")
    kind = flags.get("backend") or b.get("kind", "echo")
    if kind not in BACKEND_KINDS:
        raise PalyraError(f"--backend {kind!r} is not one of {', '.join(BACKEND_KINDS)}")
    backend = BackendConfig(
        kind=kind,
        url=flags.get("backend_url") or b.get("url"),
        model=b.get("model"),
        api_key=_env_ref(b.get("api_key")),
        timeout_ms=_ms(b.get("timeout", "60s")),
    )
    if backend.kind in ("http", "openai") and not backend.url:
        raise PalyraError(src.error(("backend", "kind"), f"backend kind {backend.kind} needs backend.url (or --backend-url)"))

    integrations = {
        str(name): IntegrationConfig(str(name), _env_ref((spec or {}).get("secret")))
        for name, spec in section("integrations").items()
    }

    # one parser for the memory section: the memory library's, which knows every key it uses
    from palyra_ops.memory.maintenance import MemoryConfig as _MemoryConfig

    try:
        memory = _MemoryConfig.from_dict(data.get("memory"))
    except PalyraError as exc:
        raise PalyraError(f"{src.where(('memory',))}: {exc.message}") from None

    s = section("skills")
    if flags.get("skills_audit_interval") is not None:
        audit_ms = _flag_duration(flags["skills_audit_interval"], "--skills-audit-interval", zero_off=True)
    else:
        audit_ms = _ms(s.get("audit_interval", "6h"))

    w = section("watcher")
    rescan = flags.get("rescan_interval")
    watcher = WatcherConfig(
        self_heal=True if flags.get("self_heal") else w.get("self_heal", False),
        rescan_interval_ms=(_flag_duration(rescan, "--rescan-interval") if rescan else _ms(w.get("rescan_interval", "5m"))),
        debounce_ms=_ms(w.get("debounce", "150ms")),
    )

    d = section("dispatch")
    max_body = flags.get("max_body_bytes")
    if max_body is not None:
        problem = KEYS["max_body_bytes"](max_body)
        if problem is not None:
            raise PalyraError(f"--max-body-bytes: {problem}")
    else:
        max_body = data.get("max_body_bytes", 1 << 20)
    dl = section("delivery")
    delivery = DeliveryConfig(file_root=rel(dl["file_root"]) if dl.get("file_root") else None,
                              allow_link_local_targets=dl.get("allow_link_local_targets", False))
    return DaemonConfig(
        host=host,
        port=port,
        journal=Path(journal) if journal is not None else None,
        dir=Path(dir_) if dir_ is not None else Path("routines.d"),
        watch=True if flags.get("watch") else data.get("watch", False),
        allow_remote=True if flags.get("allow_remote") else data.get("allow_remote", False),
        state_root=Path(state_root) if state_root is not None else None,
        backend=backend,
        integrations=integrations,
        memory=memory,
        skills=SkillsConfig(audit_interval_ms=audit_ms),
        watcher=watcher,
        dispatch_clients=d.get("clients", 4),
        dispatch_concurrency=d.get("concurrency", 8),
        keep_alive_ms=_ms(d.get("keep_alive", "20s")),
        log_level=str(flags.get("log_level") or data.get("log_level", "info")),
        max_body_bytes=int(max_body),
        delivery=delivery,
    )


def load_config(config_path: Path | None = None, **flags: Any) -> DaemonConfig:
    if config_path is None:
        return build_config(None, **flags)
    data, src = _load_file(config_path)
    return build_config(data, base_dir=config_path.parent, source=src, **flags)
