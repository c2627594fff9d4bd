"""Full verification of a skill package, shared by install and by the periodic re-audit.

Install and re-audit run the very same checks, in the same order, so a skill that would be refused
today is quarantined tomorrow — whether its bytes changed, its publisher's key was revoked, or the
checks themselves became stricter.

Import rules (WASI preview 1, see docs/skills.md): stdio, clocks, randomness, args and environ are
always importable (language runtimes import them unconditionally; the environment is empty unless an
`env` capability is declared *and* granted). Directory and path functions need a declared
`filesystem` capability. `palyra_http.fetch` needs a declared `http` capability. Sockets and
`poll_oneoff` are refused: sockets bypass the host allow-list and a blocking sleep in the host
could not be interrupted by the wall-clock deadline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from palyra_ops.errors import PalyraError
from palyra_ops.skills.manifest import Capabilities, Manifest, format_size
from palyra_ops.skills.package import (
    Signature,
    collect_files,
    compare_files,
    read_manifest,
    read_signature,
    verify_signature,
)
from palyra_ops.skills.truststore import TrustStore

WASI = "wasi_snapshot_preview1"
HTTP_MODULE = "palyra_http"
MAX_IMPORTS = 128
MAX_EXPORTS = 128
WASM_PAGE = 65536

WASI_BASE = frozenset({
    "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get", "clock_time_get",
    "fd_close", "fd_fdstat_get", "fd_fdstat_set_flags", "fd_prestat_get", "fd_prestat_dir_name",
    "fd_read", "fd_write", "fd_seek", "fd_tell", "fd_filestat_get", "fd_sync", "fd_datasync",
    "proc_exit", "random_get", "sched_yield",
})
WASI_FILESYSTEM = frozenset({
    "path_create_directory", "path_filestat_get", "path_filestat_set_times", "path_link", "path_open",
    "path_readlink", "path_remove_directory", "path_rename", "path_symlink", "path_unlink_file",
    "fd_readdir", "fd_advise", "fd_allocate", "fd_filestat_set_size", "fd_filestat_set_times",
    "fd_pread", "fd_pwrite", "fd_renumber", "fd_fdstat_set_rights",
})
WASI_REFUSED = {
    "poll_oneoff": "blocking waits in the host cannot be interrupted by the wall-clock deadline",
    "sock_accept": "sockets are not available; declare http hosts and use palyra_http.fetch",
    "sock_recv": "sockets are not available; declare http hosts and use palyra_http.fetch",
    "sock_send": "sockets are not available; declare http hosts and use palyra_http.fetch",
    "sock_shutdown": "sockets are not available; declare http hosts and use palyra_http.fetch",
    "proc_raise": "signals are not supported",
}

_engine: wasmtime.Engine | None = None


def _validation_engine() -> wasmtime.Engine:
    global _engine
    if _engine is None:
        _engine = wasmtime.Engine()
    return _engine


@dataclass(frozen=True)
class VerifiedPackage:
    manifest: Manifest
    signature: Signature
    files: dict[str, str]
    payload_sha256: str
    module_sha256: str  # of the entry module: the pin the runner checks before every compile


def check_module(wasm: bytes, rel: str, manifest: Manifest, *, entry: bool) -> None:
    """Validity, import/export limits and capability match of one module; raises PalyraError."""
    module = _compile(wasm, rel)
    imports = module.imports
    exports = module.exports
    if len(imports) > MAX_IMPORTS:
        raise PalyraError(f"module {rel!r} has {len(imports)} imports; at most {MAX_IMPORTS} are allowed", code="invalid_module")
    if len(exports) > MAX_EXPORTS:
        raise PalyraError(f"module {rel!r} has {len(exports)} exports; at most {MAX_EXPORTS} are allowed", code="invalid_module")
    for imp in imports:
        _check_import(imp, rel, manifest.capabilities)
    for mem in exports:
        if isinstance(mem.type, wasmtime.MemoryType):
            _check_memory(mem.type, rel, manifest)
    if entry:
        _check_entry_exports(exports, rel)


def _compile(wasm: bytes, rel: str) -> wasmtime.Module:
    engine = _validation_engine()
    try:
        wasmtime.Module.validate(engine, wasm)
        return wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise PalyraError(f"module {rel!r} is not valid WebAssembly: {first}", code="invalid_module") from None


def _check_import(imp: wasmtime.ImportType, rel: str, caps: Capabilities) -> None:
    """An import must be a host function the sandbox provides and the manifest's capabilities allow."""
    what = f"{imp.module}.{imp.name}"
    if not isinstance(imp.type, wasmtime.FuncType):
        raise PalyraError(f"module {rel!r} imports {what}, which is not a function; only host functions may be imported", code="capability")
    if imp.module == WASI:
        refusal = _wasi_refusal(imp.name or "", caps)
        if refusal:
            raise PalyraError(f"module {rel!r} imports {refusal.format(what=what)}", code="capability")
        return
    if imp.module == HTTP_MODULE and imp.name == "fetch":
        if not caps.http:
            raise PalyraError(f"module {rel!r} imports {what} but the manifest declares no http capability", code="capability")
        return
    raise PalyraError(f"module {rel!r} imports {what}, which the sandbox does not provide", code="capability")


def _wasi_refusal(name: str, caps: Capabilities) -> str:
    """Why a WASI function may not be imported ("" when it may), `{what}` standing for its name."""
    if name in WASI_BASE:
        return ""
    if name in WASI_FILESYSTEM:
        return "" if caps.filesystem else (
            "WASI filesystem function {what} but the manifest declares no filesystem capability"
        )
    if name in WASI_REFUSED:
        return "{what}: " + WASI_REFUSED[name]
    return "unknown WASI function {what}"


def _check_memory(mt: wasmtime.MemoryType, rel: str, manifest: Manifest) -> None:
    if mt.is_64 or mt.is_shared:
        raise PalyraError(f"module {rel!r}: 64-bit and shared memories are not supported", code="invalid_module")
    need = mt.limits.min * mt.page_size
    if need > manifest.quotas.memory_bytes:
        raise PalyraError(
            f"module {rel!r} needs {format_size(need)} of memory at start, above its quota of "
            f"{format_size(manifest.quotas.memory_bytes)}",
            code="invalid_module",
        )


def _check_entry_exports(exports: list[wasmtime.ExportType], rel: str) -> None:
    by_name = {e.name: e.type for e in exports}
    start = by_name.get("_start")
    if not isinstance(start, wasmtime.FuncType) or start.params or start.results:
        raise PalyraError(f"entry module {rel!r} must export a function _start with no parameters and results (a WASI command)", code="invalid_module")
    if not isinstance(by_name.get("memory"), wasmtime.MemoryType):
        raise PalyraError(f"entry module {rel!r} must export its linear memory as 'memory'", code="invalid_module")


def verify_package_dir(root: Path, trust: TrustStore) -> VerifiedPackage:
    """Every install-time check, in order; the first failure raises PalyraError with the reason."""
    signature = read_signature(root)
    manifest = read_manifest(root)
    if signature.publisher != manifest.publisher:
        raise PalyraError(
            f"signature is by publisher {signature.publisher!r} but the manifest names {manifest.publisher!r}",
            code="bad_signature",
        )
    keys = trust.keys_for(manifest.publisher)
    if keys is None:
        raise PalyraError(f"unknown publisher {manifest.publisher!r}: not in the trust store", code="unknown_publisher")
    verify_signature(signature, keys)
    files = collect_files(root)
    compare_files(signature.files, files)
    module_sha = ""
    for rel in manifest.modules:
        if rel not in files:
            raise PalyraError(f"manifest names module {rel!r}, which is not in the package", code="invalid_module")
        wasm = (root / rel).read_bytes()
        if hashlib.sha256(wasm).hexdigest() != files[rel]:  # changed between hashing and reading
            raise PalyraError(f"file {rel!r} changed while being verified", code="tampered")
        check_module(wasm, rel, manifest, entry=rel == manifest.entry)
        if rel == manifest.entry:
            module_sha = files[rel]
    return VerifiedPackage(manifest, signature, files, signature.payload_sha256, module_sha)
