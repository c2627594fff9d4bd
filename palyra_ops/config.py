"""Daemon configuration: command-line flags over an optional `palyra.yaml`.

Precedence is flag > config file > default, the usual operator expectation: a config file checked in
next to the routines describes the deployment, and a flag overrides it for one run. Secrets (backend
API keys, webhook integration secrets) are only ever *references* to environment variables, read when
used, so the config file is safe to commit.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from palyra_ops.durations import parse_duration_ms
from palyra_ops.errors import PalyraError

DEFAULT_LISTEN = "127.0.0.1:7142"
BACKEND_KINDS = ("echo", "http", "openai")


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


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`); a clear error instead of a socket traceback later."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or not port_text:
            raise PalyraError(f"--listen {text!r}: expected [IPV6]:PORT")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise PalyraError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:7142")
    try:
        port = int(port_text)
    except ValueError:
        raise PalyraError(f"--listen {text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise PalyraError(f"--listen {text!r}: port {port} is out of range 0..65535")
    return host, port


def _env_ref(value: Any, where: str) -> EnvRef | None:
    if value is None:
        return None
    if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str):
        return EnvRef(value["env"])
    raise PalyraError(f"{where}: secrets are only accepted as {{env: NAME}} references")


def _skills_config(section: Any, flag: Any, where: str) -> SkillsConfig:
    """`skills: {audit_interval: 6h}` or `--skills-audit-interval`; `0` turns the re-audit off (an
    operator who installs nothing but wants no periodic hashing), anything else must be a duration."""
    s = section or {}
    if not isinstance(s, dict):
        raise PalyraError(f"{where}: skills must be a mapping")
    unknown = sorted(set(s) - {"audit_interval"})
    if unknown:
        raise PalyraError(f"{where}: unknown skills key(s): {', '.join(unknown)}; expected audit_interval")
    value = flag if flag is not None else s.get("audit_interval", "6h")
    what = "--skills-audit-interval" if flag is not None else f"{where}: skills.audit_interval"
    if str(value).strip() == "0":
        return SkillsConfig(audit_interval_ms=0)
    return SkillsConfig(audit_interval_ms=_duration(value, what))


def _duration(value: Any, where: str) -> int:
    try:
        return parse_duration_ms(str(value))
    except ValueError as exc:
        raise PalyraError(f"{where}: {exc}") from None


_TOP_KEYS = {"listen", "journal", "dir", "watch", "allow_remote", "state_root", "backend", "integrations",
             "memory", "skills", "dispatch", "log_level", "watcher"}


def load_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PalyraError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise PalyraError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PalyraError(f"{path}: the config must be a mapping")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise PalyraError(f"{path}: unknown config key(s): {', '.join(unknown)}; expected {', '.join(sorted(_TOP_KEYS))}")
    return data


def build_config(file_data: dict[str, Any] | None = None, *, base_dir: Path | None = None, **flags: Any) -> DaemonConfig:
    """Merge flags (None = not given) over the config file's values.

    Relative paths in the file are relative to the file's directory (`base_dir`), as in most tools,
    so `palyra-ops daemon --config deploy/palyra.yaml` works from anywhere.
    """
    data = dict(file_data or {})
    where = "config"

    def rel(p: Any) -> Path:
        path = Path(str(p)).expanduser()
        return path if path.is_absolute() or base_dir is None else base_dir / path

    listen = flags.get("listen") or data.get("listen") or DEFAULT_LISTEN
    host, port = parse_listen(str(listen))

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

    b = data.get("backend") or {}
    if not isinstance(b, dict):
        raise PalyraError(f"{where}: backend must be a mapping")
    kind = flags.get("backend") or b.get("kind", "echo")
    if kind not in BACKEND_KINDS:
        raise PalyraError(f"{where}: backend.kind {kind!r} is not one of {', '.join(BACKEND_KINDS)}")
    backend = BackendConfig(
        kind=kind,
        url=flags.get("backend_url") or b.get("url"),
        model=b.get("model"),
        api_key=_env_ref(b.get("api_key"), f"{where}: backend.api_key"),
        timeout_ms=_duration(b.get("timeout", "60s"), f"{where}: backend.timeout"),
    )
    if backend.kind in ("http", "openai") and not backend.url:
        raise PalyraError(f"{where}: backend.kind {backend.kind} needs backend.url")

    integrations: dict[str, IntegrationConfig] = {}
    for name, spec in (data.get("integrations") or {}).items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise PalyraError(f"{where}: integrations.{name} must be a mapping")
        integrations[str(name)] = IntegrationConfig(str(name), _env_ref(spec.get("secret"), f"{where}: integrations.{name}.secret"))

    # one parser for the memory section: the memory library's, which knows every key it uses
    from palyra_ops.memory.maintenance import MemoryConfig as _MemoryConfig

    try:
        memory = _MemoryConfig.from_dict(data.get("memory"))
    except PalyraError as exc:
        raise PalyraError(f"{where}: {exc.message}") from None
    skills = _skills_config(data.get("skills"), flags.get("skills_audit_interval"), where)
    d = data.get("dispatch") or {}
    w = data.get("watcher") or {}
    if not isinstance(w, dict):
        raise PalyraError(f"{where}: watcher must be a mapping")
    unknown_w = sorted(set(w) - {"self_heal", "rescan_interval", "debounce"})
    if unknown_w:
        raise PalyraError(f"{where}: unknown watcher key(s): {', '.join(unknown_w)}; expected debounce, rescan_interval, self_heal")
    self_heal = flags.get("self_heal")
    rescan = flags.get("rescan_interval") or w.get("rescan_interval", "5m")
    watcher = WatcherConfig(
        self_heal=bool(self_heal) if self_heal else bool(w.get("self_heal", False)),
        rescan_interval_ms=_duration(rescan, f"{where}: watcher.rescan_interval"),
        debounce_ms=_duration(w.get("debounce", "150ms"), f"{where}: watcher.debounce"),
    )

    watch = flags.get("watch")
    allow_remote = flags.get("allow_remote")
    return DaemonConfig(
        host=host,
        port=port,
        journal=Path(journal) if journal is not None else None,
        dir=Path(dir_) if dir_ is not None else Path("routines.d"),
        watch=bool(watch) if watch else bool(data.get("watch", False)),
        allow_remote=bool(allow_remote) if allow_remote else bool(data.get("allow_remote", False)),
        state_root=Path(state_root) if state_root is not None else None,
        backend=backend,
        integrations=integrations,
        memory=memory,
        skills=skills,
        watcher=watcher,
        dispatch_clients=int(d.get("clients", 4)),
        dispatch_concurrency=int(d.get("concurrency", 8)),
        keep_alive_ms=_duration(d.get("keep_alive", "20s"), f"{where}: dispatch.keep_alive"),
        log_level=str(flags.get("log_level") or data.get("log_level", "info")),
    )


def load_config(config_path: Path | None = None, **flags: Any) -> DaemonConfig:
    if config_path is None:
        return build_config(None, **flags)
    return build_config(load_config_file(config_path), base_dir=config_path.parent, **flags)
