"""Daemon configuration: command-line flags over an optional `palyra.yaml`.

Precedence is flag > config file > default, the usual operator expectation: a config file checked in
next to the routines describes the deployment, and a flag overrides it for one run. Secrets (backend
API keys, webhook integration secrets) are only ever *references* to environment variables, read when
used, so the config file is safe to commit.

Every key of the file is type-checked against `KEYS` (one line per key, checks in `config_checks`)
before anything is built: an unknown key, a string where a boolean or number belongs
(`allow_remote: "false"` must never mean true), or a value out of range is an error naming the key
path and its file:line:column, and all of them are reported at once. Nothing is coerced.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from palyra_ops.config_checks import (
    ENV_NAME,
    Check,
    Source,
    boolean,
    check_tree,
    duration,
    env_ref,
    integer,
    nullable,
    number,
    one_of,
    parse,
    patterns,
    size,
    string,
    url,
)
from palyra_ops.durations import parse_duration_ms
from palyra_ops.errors import PalyraError
from palyra_ops.logfmt import LOG_FORMATS
from palyra_ops.tracing import TRACING_MODES

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
class ClusterConfig:
    """Several daemons on one journal (docs/ha.md): how often a daemon renews its lease, and how
    long a silent daemon counts as alive before a peer fails its active runs (`daemon_lost`)."""

    heartbeat_interval_ms: int = 1000
    lease_ms: int = 5000
    #: how often the scheduler polls the journal for other processes' changes (apply from the CLI,
    #: a peer's API); on PostgreSQL they are also pushed (LISTEN/NOTIFY) and this is the fallback,
    #: at least every 2 s
    poll_interval_ms: int = 250


@dataclass(frozen=True)
class DaemonConfig:
    host: str = "127.0.0.1"
    port: int = 7142
    journal: Path | str | None = None  # None: $PALYRA_STATE_ROOT/journal.sqlite3; str: a postgresql:// URL
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
    #: `text`, or `json` lines (SPEC §12: one line per run either way)
    log_format: str = "text"
    #: `off` (trace context is still carried along) or `otel` (spans to the OpenTelemetry provider)
    tracing: str = "off"
    #: SPEC §6: request bodies above this are refused with 413 before they are read in full
    max_body_bytes: int = 1 << 20
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

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
    "log_format": string(choices=LOG_FORMATS),
    "tracing": string(choices=TRACING_MODES),
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
    "memory.embedder.api_key_env": nullable(string(pattern=ENV_NAME.pattern, what="an environment variable name")),
    "memory.embedder.version": one_of(string(), integer(0)),
    "memory.embedder.timeout_s": number(above=0),
    "skills.audit_interval": duration(zero_off=True),
    "dispatch.clients": integer(1, 64),
    "dispatch.concurrency": integer(1, 1024),
    "dispatch.keep_alive": duration(),
    "watcher.self_heal": boolean,
    "watcher.rescan_interval": duration(),
    "watcher.debounce": duration(min_ms=0),
    "cluster.heartbeat_interval": duration(min_ms=50),
    "cluster.lease": duration(min_ms=200),
    "cluster.poll_interval": duration(min_ms=10),
    "max_body_bytes": integer(1024, 1 << 30),
    "delivery.file_root": string(what="a path"),
    "delivery.allow_link_local_targets": boolean,
}

_TABLE = patterns(KEYS)


def check_config(data: Any, source: Source | None = None) -> None:
    """Every key known, every value of the right type and range; all problems in one PalyraError."""
    check_tree(data, _TABLE, source or Source())


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


def _load_file(path: Path) -> tuple[dict[str, Any], Source]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PalyraError(f"{path}: cannot read config: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PalyraError(f"{path}: the config is not UTF-8 text") from None
    data, src = parse(text, str(path))
    check_config(data, src)
    return data, src


def build_config(file_data: dict[str, Any] | None = None, *, base_dir: Path | None = None,
                 source: Source | None = None, **flags: Any) -> DaemonConfig:
    """Merge flags (None = not given) over the config file's values.

    Relative paths in the file are relative to the file's directory (`base_dir`), as in most tools,
    so `palyra-ops daemon --config deploy/palyra.yaml` works from anywhere.
    """
    src = source or Source()
    data = dict(file_data or {})
    check_config(data, src)
    merge = _Merge(data, flags, src, base_dir)
    host, port = merge.listen()
    journal, dir_, state_root = merge.paths()
    d = merge.section("dispatch")
    dl = merge.section("delivery")
    return DaemonConfig(
        host=host,
        port=port,
        journal=journal,
        dir=dir_,
        watch=True if flags.get("watch") else data.get("watch", False),
        allow_remote=True if flags.get("allow_remote") else data.get("allow_remote", False),
        state_root=state_root,
        backend=merge.backend(),
        integrations={
            str(name): IntegrationConfig(str(name), _env_ref((spec or {}).get("secret")))
            for name, spec in merge.section("integrations").items()
        },
        memory=merge.memory(),
        skills=merge.skills(),
        watcher=merge.watcher(),
        dispatch_clients=d.get("clients", 4),
        dispatch_concurrency=d.get("concurrency", 8),
        keep_alive_ms=_ms(d.get("keep_alive", "20s")),
        log_level=str(flags.get("log_level") or data.get("log_level", "info")),
        log_format=str(flags.get("log_format") or data.get("log_format", "text")),
        tracing=str(flags.get("tracing") or data.get("tracing", "off")),
        max_body_bytes=merge.max_body_bytes(),
        delivery=DeliveryConfig(file_root=merge.rel(dl["file_root"]) if dl.get("file_root") else None,
                                allow_link_local_targets=dl.get("allow_link_local_targets", False)),
        cluster=merge.cluster(),
    )


@dataclass
class _Merge:
    """Flags over already checked file data, one setting group at a time."""

    data: dict[str, Any]
    flags: dict[str, Any]
    src: Source
    base_dir: Path | None

    def section(self, name: str) -> dict[str, Any]:
        return self.data.get(name) or {}

    def rel(self, p: Any) -> Path:
        path = Path(str(p)).expanduser()
        return path if path.is_absolute() or self.base_dir is None else self.base_dir / path

    def listen(self) -> tuple[str, int]:
        if self.flags.get("listen"):
            return parse_listen(str(self.flags["listen"]))
        if "listen" not in self.data:
            return parse_listen(DEFAULT_LISTEN)
        try:
            return parse_listen(self.data["listen"], "listen")
        except PalyraError as exc:
            raise PalyraError(f"{self.src.where(('listen',))}: {exc.message}") from None

    def paths(self) -> tuple[Path | str | None, Path, Path | None]:
        """(journal, routine dir, state root); a flag as given, a file's value relative to the file
        (a `postgresql://` URL as it is)."""
        from palyra_ops.journal.faults import journal_location

        journal = self.flags.get("journal")
        if journal is None and self.data.get("journal"):
            loc = journal_location(str(self.data["journal"]))  # another URL is refused, not taken for a path
            journal = loc if isinstance(loc, str) else self.rel(loc)
        dir_ = self.flags.get("dir")
        if dir_ is None and self.data.get("dir"):
            dir_ = self.rel(self.data["dir"])
        state_root = self.flags.get("state_root")
        if state_root is None and self.data.get("state_root"):
            state_root = self.rel(self.data["state_root"])
        return (journal_location(journal) if journal is not None else None, Path(dir_) if dir_ is not None else Path("routines.d"),
                Path(state_root) if state_root is not None else None)

    def backend(self) -> BackendConfig:
        b = self.section("backend")
        kind = self.flags.get("backend") or b.get("kind", "echo")
        if kind not in BACKEND_KINDS:
            raise PalyraError(f"--backend {kind!r} is not one of {', '.join(BACKEND_KINDS)}")
        backend = BackendConfig(
            kind=kind,
            url=self.flags.get("backend_url") or b.get("url"),
            model=b.get("model"),
            api_key=_env_ref(b.get("api_key")),
            timeout_ms=_ms(b.get("timeout", "60s")),
        )
        if backend.kind in ("http", "openai") and not backend.url:
            needs = f"backend kind {backend.kind} needs backend.url (or --backend-url)"
            raise PalyraError(self.src.error(("backend", "kind"), needs))
        return backend

    def memory(self) -> Any:
        # one parser for the memory section: the memory library's, which knows every key it uses
        from palyra_ops.memory.maintenance import MemoryConfig as _MemoryConfig

        try:
            return _MemoryConfig.from_dict(self.data.get("memory"))
        except PalyraError as exc:
            raise PalyraError(f"{self.src.where(('memory',))}: {exc.message}") from None

    def skills(self) -> SkillsConfig:
        flag = self.flags.get("skills_audit_interval")
        if flag is not None:
            return SkillsConfig(_flag_duration(flag, "--skills-audit-interval", zero_off=True))
        return SkillsConfig(_ms(self.section("skills").get("audit_interval", "6h")))

    def watcher(self) -> WatcherConfig:
        w = self.section("watcher")
        rescan = self.flags.get("rescan_interval")
        return WatcherConfig(
            self_heal=True if self.flags.get("self_heal") else w.get("self_heal", False),
            rescan_interval_ms=(_flag_duration(rescan, "--rescan-interval") if rescan else _ms(w.get("rescan_interval", "5m"))),
            debounce_ms=_ms(w.get("debounce", "150ms")),
        )

    def cluster(self) -> ClusterConfig:
        c = self.section("cluster")
        cfg = ClusterConfig(heartbeat_interval_ms=_ms(c.get("heartbeat_interval", "1s")), lease_ms=_ms(c.get("lease", "5s")),
                            poll_interval_ms=_ms(c.get("poll_interval", "250ms")))
        if cfg.lease_ms < 2 * cfg.heartbeat_interval_ms:
            raise PalyraError(f"{self.src.where(('cluster', 'lease'))}: cluster.lease ({c.get('lease', '5s')}) must be at least twice"
                              f" cluster.heartbeat_interval ({c.get('heartbeat_interval', '1s')})")
        return cfg

    def max_body_bytes(self) -> int:
        flag = self.flags.get("max_body_bytes")
        if flag is None:
            return int(self.data.get("max_body_bytes", 1 << 20))
        problem = KEYS["max_body_bytes"](flag)
        if problem is not None:
            raise PalyraError(f"--max-body-bytes: {problem}")
        return int(flag)


def load_config(config_path: Path | None = None, **flags: Any) -> DaemonConfig:
    if config_path is None:
        return build_config(None, **flags)
    data, src = _load_file(config_path)
    return build_config(data, base_dir=config_path.parent, source=src, **flags)
