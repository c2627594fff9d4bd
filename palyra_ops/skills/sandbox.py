"""Running installed skills in wasmtime, with fuel, a wall-clock deadline and a memory cap.

One `SkillRunner` per daemon owns the Engine (fuel metering and epoch interruption on), a shared
Linker with WASI, an in-memory cache of compiled modules, the on-disk compile cache, and an epoch
ticker thread. Every run gets a fresh Store, so nothing leaks between runs: each run's fuel, memory
limit, deadline, stdin/stdout and preopened directories are its own.

ABI (docs/skills.md): the entry module is a WASI command (`_start`); stdin carries one JSON object
`{"prompt": ..., "trigger": {...}, "input": {...}}`; whatever it writes to stdout is the output (a
JSON object if it parses as one, else text); exit code 0 is success, anything else (or a trap) is a
failure whose reason includes the tail of stderr.

The runner never raises for skill misbehaviour: traps, exhausted fuel, deadlines, memory, bad output
and policy denials all come back as `SkillResult(ok=False, reason=...)`.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import platform
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import wasmtime
from wasmtime import _ffi as wffi

from palyra_ops.errors import PalyraError
from palyra_ops.fsmodes import private_dir, trusted
from palyra_ops.skills.manifest import format_size
from palyra_ops.skills.store import InstalledSkill, SkillStore
from palyra_ops.skills.verify import HTTP_MODULE

MAX_INPUT_BYTES = 1024 * 1024
MAX_OUTPUT_BYTES = 1024 * 1024
STDERR_TAIL = 2048
MEMORY_CACHE_ENTRIES = 64
TICK_MS = 5

#: settings that change generated code; part of the compile-cache key
_ENGINE_SETTINGS = {"consume_fuel": True, "epoch_interruption": True, "cranelift_opt_level": "speed"}


@dataclass(frozen=True)
class SkillResult:
    ok: bool
    output: str | dict | None
    reason: str | None
    fuel_used: int
    duration_ms: float
    #: True when the run was refused before starting (quarantine, capability not granted): the
    #: daemon records such runs as `denied`, not `failed`, and does not retry them
    denied: bool = False
    #: where the compiled module came from: "memory", "disk", "compiled" ("" when never loaded)
    cache: str = ""
    exit_code: int | None = None
    stderr: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "output": self.output, "reason": self.reason, "fuel_used": self.fuel_used,
            "duration_ms": round(self.duration_ms, 3), "denied": self.denied, "cache": self.cache,
            "exit_code": self.exit_code, "stderr": self.stderr,
        }


class _Failure(Exception):
    def __init__(self, reason: str, *, denied: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.denied = denied


@dataclass
class _Loaded:
    pre: wasmtime.InstancePre
    stat_key: tuple[int, int, int]


class _RunContext(threading.local):
    """Per-thread view of the run in progress, for host functions (one run per thread at a time)."""

    hosts: tuple[str, ...] = ()
    deadline: float = 0.0


def default_cache_dir(state_root: Path) -> Path:
    """Where the daemon and `skills run` keep compiled modules: `<state_root>/skills/cache`."""
    return Path(state_root) / "skills" / "cache"


def engine_fingerprint() -> str:
    """Identifies generated code: wasmtime version, our engine settings and the host CPU family."""
    doc = {"wasmtime": pkg_version("wasmtime"), "settings": _ENGINE_SETTINGS, "machine": platform.machine()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(host, p) if p.startswith("*.") else host == p for p in patterns)


class SkillRunner:
    def __init__(
        self,
        store: SkillStore,
        cache_dir: Path,
        *,
        on_quarantine: Callable[[str, str], None] | None = None,
        tick_ms: int = TICK_MS,
    ) -> None:
        self.store = store
        self.cache_dir = Path(cache_dir)
        self.on_quarantine = on_quarantine
        self.tick_ms = tick_ms
        self._prepare_cache_dir()
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        config.cranelift_opt_level = _ENGINE_SETTINGS["cranelift_opt_level"]
        self.engine = wasmtime.Engine(config)
        self.fingerprint = engine_fingerprint()
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        self.linker.define_func(
            HTTP_MODULE, "fetch",
            wasmtime.FuncType([wasmtime.ValType.i32()] * 4, [wasmtime.ValType.i32()]),
            self._http_fetch, access_caller=True,
        )
        self._modules: OrderedDict[str, _Loaded] = OrderedDict()
        self._modules_lock = threading.Lock()
        self._compile_locks: dict[str, threading.Lock] = {}
        self._ctx = _RunContext()
        # epoch ticker: runs only while at least one skill is executing, so an idle daemon stays idle
        self._active = 0
        self._cond = threading.Condition()
        self._closed = False
        self._ticker = threading.Thread(target=self._tick_loop, name="palyra-skill-epoch", daemon=True)
        self._ticker.start()

    def _prepare_cache_dir(self) -> None:
        """The cache holds native code that is loaded without re-validation, so it must be private."""
        private_dir(self.cache_dir)
        st = self.cache_dir.stat()
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PalyraError(
                f"compile cache {self.cache_dir} must be owned by this user and not group/world-writable"
            )

    # --- epoch ticker ------------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        interval = self.tick_ms / 1000
        while True:
            with self._cond:
                while self._active == 0 and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            time.sleep(interval)
            self.engine.increment_epoch()

    def _enter(self) -> None:
        with self._cond:
            self._active += 1
            self._cond.notify_all()

    def _leave(self) -> None:
        with self._cond:
            self._active -= 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._ticker.join(timeout=2)

    # --- module loading ----------------------------------------------------------------------------

    def cache_path(self, module_sha256: str) -> Path:
        return self.cache_dir / f"{module_sha256}-{self.fingerprint}.cwasm"

    def _load(self, skill: InstalledSkill) -> tuple[wasmtime.InstancePre, str]:
        """Compiled module for the skill's pinned entry module; refuses bytes that no longer match."""
        sha = skill.module_sha256
        try:
            st = skill.module_path.stat()
        except OSError as exc:
            raise _Failure(f"module of skill {skill.id!r} is unreadable: {exc.strerror}") from None
        stat_key = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._modules_lock:
            hit = self._modules.get(sha)
            if hit is not None and hit.stat_key == stat_key:
                self._modules.move_to_end(sha)
                return hit.pre, "memory"
            lock = self._compile_locks.setdefault(sha, threading.Lock())
        with lock:
            wasm = skill.module_path.read_bytes()
            if hashlib.sha256(wasm).hexdigest() != sha:
                reason = f"module {skill.manifest.entry!r} no longer matches the sha256 pinned at install"
                self._quarantine(skill.id, reason)
                raise _Failure(f"skill {skill.id!r} is quarantined: {reason}", denied=True)
            module, kind = self._compile_cached(sha, wasm)
            try:
                pre = self.linker.instantiate_pre(module)
            except wasmtime.WasmtimeError as exc:
                raise _Failure(f"cannot link module: {_first_line(exc)}") from None
            with self._modules_lock:
                self._modules[sha] = _Loaded(pre, stat_key)
                while len(self._modules) > MEMORY_CACHE_ENTRIES:
                    self._modules.popitem(last=False)
            return pre, kind

    def _compile_cached(self, sha: str, wasm: bytes) -> tuple[wasmtime.Module, str]:
        path = self.cache_path(sha)
        if path.exists() and not trusted(path):
            path.unlink(missing_ok=True)  # native code someone else could have written: never load it
        if path.exists():
            try:
                return wasmtime.Module.deserialize_file(self.engine, str(path)), "disk"
            except wasmtime.WasmtimeError:
                path.unlink(missing_ok=True)  # stale or corrupt: recompile below
        try:
            module = wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise _Failure(f"module does not compile: {_first_line(exc)}") from None
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(module.serialize())
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a cache we cannot write only costs speed
        return module, "compiled"

    def _quarantine(self, skill_id: str, reason: str) -> None:
        try:
            self.store.quarantine(skill_id, reason)
        except PalyraError:
            return
        if self.on_quarantine is not None:
            self.on_quarantine(skill_id, reason)

    # --- running -----------------------------------------------------------------------------------

    def run(self, skill_id: str, input: dict, *, granted: set[str]) -> SkillResult:
        """Run one skill to completion (blocking). See the module docstring for the ABI."""
        t0 = time.perf_counter()
        try:
            skill = self.store.get(skill_id)
        except PalyraError as exc:
            return SkillResult(False, None, exc.message, 0, _ms(t0))
        if skill is None:
            return SkillResult(False, None, f"skill {skill_id!r} is not installed", 0, _ms(t0), denied=True)
        if skill.quarantined:
            return SkillResult(
                False, None, f"skill {skill_id!r} is quarantined: {skill.quarantine_reason}", 0, _ms(t0), denied=True
            )
        for cap in skill.capabilities:
            if cap not in granted:
                return SkillResult(
                    False, None, f"capability {cap!r} of skill {skill_id!r} is not granted by policy", 0, _ms(t0),
                    denied=True,
                )
        try:
            stdin = json.dumps(input, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            return SkillResult(False, None, f"input is not JSON-serialisable: {exc}", 0, _ms(t0))
        if len(stdin) > MAX_INPUT_BYTES:
            return SkillResult(False, None, f"input is larger than {format_size(MAX_INPUT_BYTES)}", 0, _ms(t0))
        try:
            pre, cache = self._load(skill)
        except _Failure as f:
            return SkillResult(False, None, f.reason, 0, _ms(t0), denied=f.denied)
        return self._execute(skill, pre, cache, stdin, t0)

    def _wasi(self, skill: InstalledSkill, stdin: bytes, out: bytearray, err: bytearray) -> wasmtime.WasiConfig:
        wasi = wasmtime.WasiConfig()
        wasi.argv = [skill.id]
        caps = skill.manifest.capabilities
        wasi.env = [(name, os.environ[name]) for name in caps.env if name in os.environ]
        for root in caps.filesystem:
            if not os.path.isdir(root.path):
                raise _Failure(f"filesystem root {root.path} does not exist or is not a directory")
            wasi.preopen_dir(root.path, root.path, root.writable)
        vec = wffi.wasm_byte_vec_t()
        buf = ctypes.create_string_buffer(stdin, len(stdin))
        wffi.wasm_byte_vec_new(ctypes.byref(vec), len(stdin), ctypes.cast(buf, ctypes.POINTER(wffi.wasm_byte_t)))
        wffi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vec))  # takes ownership of the copy

        def on_stdout(data: bytes) -> int:
            if len(out) + len(data) > MAX_OUTPUT_BYTES + 1:
                out.extend(data[: MAX_OUTPUT_BYTES + 1 - len(out)])
                return -5  # EIO to the guest; reported as an oversized output below
            out.extend(data)
            return len(data)

        def on_stderr(data: bytes) -> int:
            err.extend(data)
            if len(err) > STDERR_TAIL * 2:
                del err[: len(err) - STDERR_TAIL]
            return len(data)

        wasi.stdout_custom = on_stdout
        wasi.stderr_custom = on_stderr
        return wasi

    def _execute(
        self, skill: InstalledSkill, pre: wasmtime.InstancePre, cache: str, stdin: bytes, t0: float
    ) -> SkillResult:
        q = skill.quotas
        out = bytearray()
        err = bytearray()
        store = wasmtime.Store(self.engine)
        try:
            store.set_wasi(self._wasi(skill, stdin, out, err))
        except _Failure as f:
            return SkillResult(False, None, f.reason, 0, _ms(t0), cache=cache)
        store.set_fuel(q.fuel)
        store.set_limits(memory_size=q.memory_bytes, table_elements=100_000, instances=1, tables=4, memories=1)
        store.set_epoch_deadline(math.ceil(q.wall_time_ms / self.tick_ms) + 1)
        self._ctx.hosts = tuple(skill.manifest.capabilities.http)
        self._ctx.deadline = time.monotonic() + q.wall_time_ms / 1000
        instance, exit_code, reason = self._run_start(store, pre, skill)
        fuel_used = q.fuel - store.get_fuel()
        stderr = _tail(err)
        if reason is None and exit_code != 0:
            reason = f"skill exited with code {exit_code}"
        if reason is None and len(out) > MAX_OUTPUT_BYTES:
            reason = f"output is larger than {format_size(MAX_OUTPUT_BYTES)}"
        if reason is not None:
            if not reason.startswith(("fuel exhausted", "wall-clock deadline")):
                reason += self._memory_note(store, instance, q.memory_bytes)
            if stderr:
                reason += f"; stderr: {stderr}"
            return SkillResult(False, None, reason, fuel_used, _ms(t0), cache=cache, exit_code=exit_code, stderr=stderr)
        output = _output(out)
        if output is None:
            return SkillResult(False, None, "output is not UTF-8 text", fuel_used, _ms(t0), cache=cache, exit_code=0, stderr=stderr)
        return SkillResult(True, output, None, fuel_used, _ms(t0), cache=cache, exit_code=0, stderr=stderr)

    def _run_start(
        self, store: wasmtime.Store, pre: wasmtime.InstancePre, skill: InstalledSkill
    ) -> tuple[wasmtime.Instance | None, int | None, str | None]:
        """Instantiate and run `_start`: (the instance if it was made, exit code, why it failed)."""
        instance: wasmtime.Instance | None = None
        self._enter()
        try:
            instance = pre.instantiate(store)
            start = instance.exports(store)["_start"]
            assert isinstance(start, wasmtime.Func)
            start(store)
            return instance, 0, None
        except wasmtime.ExitTrap as exc:
            return instance, exc.code, None
        except wasmtime.Trap as exc:
            return instance, None, self._trap_reason(exc, skill)
        except wasmtime.WasmtimeError as exc:
            return instance, None, f"{'instantiation failed' if instance is None else 'runtime error'}: {_first_line(exc)}"
        finally:
            self._leave()
            self._ctx.hosts = ()

    @staticmethod
    def _trap_reason(exc: wasmtime.Trap, skill: InstalledSkill) -> str:
        code = exc.trap_code
        q = skill.quotas
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return f"fuel exhausted (limit {q.fuel})"
        if code == wasmtime.TrapCode.INTERRUPT:
            return f"wall-clock deadline exceeded ({q.to_json()['wall_time']})"
        return f"trap: {_first_line(exc)}"

    @staticmethod
    def _memory_note(store: wasmtime.Store, instance: wasmtime.Instance | None, cap: int) -> str:
        """Name the memory cap when a failing skill sits at it: memory.grow past the cap returns -1,
        which the guest usually turns into a trap or exit code we would otherwise report bare."""
        if instance is None:
            return ""
        mem = instance.exports(store).get("memory")
        if isinstance(mem, wasmtime.Memory) and mem.data_len(store) + 65536 > cap:
            return f" (linear memory at its cap of {format_size(cap)}: memory.grow past the cap fails)"
        return ""

    # --- host functions ----------------------------------------------------------------------------

    def _http_fetch(self, caller: wasmtime.Caller, req_ptr: int, req_len: int, resp_ptr: int, resp_cap: int) -> int:
        """`palyra_http.fetch(req, req_len, resp, resp_cap) -> len`: snprintf-style, see docs/skills.md."""
        import httpx

        mem = caller.get("memory")
        if not isinstance(mem, wasmtime.Memory):
            raise wasmtime.Trap("palyra_http.fetch: module exports no memory")
        try:
            req = json.loads(bytes(mem.read(caller, req_ptr, req_ptr + req_len)))
            url = str(req["url"])
            parts = urlsplit(url)
            host = parts.hostname or ""
            if parts.scheme not in ("http", "https"):
                raise ValueError(f"scheme {parts.scheme!r} is not http or https")
            hostport = f"{host}:{parts.port}" if parts.port else host
            if not (host_allowed(host, self._ctx.hosts) or host_allowed(hostport, self._ctx.hosts)):
                resp: dict[str, Any] = {"status": 0, "error": f"host {host!r} is not among the skill's declared http hosts"}
            else:
                remaining = max(0.05, self._ctx.deadline - time.monotonic())
                r = httpx.request(
                    str(req.get("method", "GET")), url, headers=req.get("headers") or {},
                    content=(req.get("body") or "").encode(), timeout=remaining, follow_redirects=False,
                )
                resp = {"status": r.status_code, "headers": dict(r.headers), "body": r.text[:MAX_OUTPUT_BYTES]}
        except (ValueError, KeyError, TypeError) as exc:
            resp = {"status": 0, "error": f"bad request: {exc}"}
        except httpx.HTTPError as exc:
            resp = {"status": 0, "error": f"request failed: {exc}"}
        data = json.dumps(resp).encode()
        mem.write(caller, data[:resp_cap], resp_ptr)
        return len(data)


def _first_line(exc: BaseException) -> str:
    """The root cause of a wasmtime error, without the backtrace that precedes it."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    if "Caused by:" in text:
        causes = [ln.strip() for ln in text.split("Caused by:", 1)[1].splitlines() if ln.strip()]
        if causes:
            return causes[-1].removeprefix("wasm trap: ")
    return text.splitlines()[0]


def _tail(err: bytearray) -> str:
    return bytes(err[-STDERR_TAIL:]).decode("utf-8", "replace").strip()


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def _output(out: bytearray) -> str | dict | None:
    """What the skill wrote: a JSON object when it wrote one, else the text; None if not UTF-8."""
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    return text
