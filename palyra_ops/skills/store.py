"""Installed skills: verified copies under `<state_root>/skills/installed/<id>/` and a JSON index.

The index (`<state_root>/skills/index.json`) pins, per skill, the payload hash and the entry module's
SHA-256 accepted at install, the capabilities granted by that install, and the quarantine state.
The CLI and the daemon may both touch it, so every mutation happens under an advisory file lock and
is written atomically; reads are cheap (cached by file stat) because the runner checks the index
before every run to honour a quarantine set by another process.

A skill is executed only from its installed copy, never from where it was installed from, so
deleting or editing the source package later changes nothing — and editing the copy is exactly
what the re-audit (and the runner's pre-run hash check) catch.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palyra_ops.clock import Clock, SystemClock, rfc3339
from palyra_ops.errors import Conflict, NotFound, PalyraError
from palyra_ops.fsmodes import open_private, private_dir
from palyra_ops.skills.manifest import Manifest, Quotas, parse_manifest_data, semver_key
from palyra_ops.skills.package import SIGNATURE_FILE, collect_files, open_package
from palyra_ops.skills.truststore import TRUST_FILE, TrustStore, atomic_write_json, read_json_doc
from palyra_ops.skills.verify import VerifiedPackage, verify_package_dir

INDEX_FILE = "index.json"
STATUS_ACTIVE = "active"
STATUS_QUARANTINED = "quarantined"


@dataclass(frozen=True)
class InstalledSkill:
    id: str
    version: str
    publisher: str
    public_key: str
    module_sha256: str
    payload_sha256: str
    capabilities: tuple[str, ...]  # granted by the install; the re-audit refuses anything beyond
    manifest: Manifest
    path: Path  # the installed copy
    installed_at_ms: int
    status: str = STATUS_ACTIVE
    quarantine_reason: str | None = None
    quarantined_at_ms: int | None = None
    last_audit_at_ms: int | None = None
    last_audit_ok: bool | None = None
    last_audit_reason: str | None = None

    @property
    def quarantined(self) -> bool:
        return self.status == STATUS_QUARANTINED

    @property
    def quotas(self) -> Quotas:
        return self.manifest.quotas

    @property
    def module_path(self) -> Path:
        return self.path / self.manifest.entry

    def to_json(self) -> dict[str, Any]:
        """Stable shape for `skills list --output json` and the daemon's API."""
        return {
            "id": self.id,
            "version": self.version,
            "publisher": self.publisher,
            "key": self.public_key,
            "sha256": self.module_sha256,
            "payload_sha256": self.payload_sha256,
            "entry": self.manifest.entry,
            "capabilities": list(self.capabilities),
            "quotas": self.manifest.quotas.to_json(),
            "status": self.status,
            "quarantine_reason": self.quarantine_reason,
            "quarantined_at": rfc3339(self.quarantined_at_ms),
            "installed_at": rfc3339(self.installed_at_ms),
            "last_audit_at": rfc3339(self.last_audit_at_ms),
            "last_audit_ok": self.last_audit_ok,
            "last_audit_reason": self.last_audit_reason,
        }


@dataclass(frozen=True)
class AuditResult:
    skill_id: str
    ok: bool
    reason: str | None
    newly_quarantined: bool

    def to_json(self) -> dict[str, Any]:
        return {"skill_id": self.skill_id, "ok": self.ok, "reason": self.reason, "newly_quarantined": self.newly_quarantined}


def _record(v: VerifiedPackage, path: Path, now_ms: int) -> dict[str, Any]:
    return {
        "id": v.manifest.id,
        "version": v.manifest.version,
        "publisher": v.manifest.publisher,
        "public_key": v.signature.public_key,
        "module_sha256": v.module_sha256,
        "payload_sha256": v.payload_sha256,
        "capabilities": v.manifest.capabilities.names(),
        "manifest": v.manifest.to_json(),
        "dir": path.name,
        "installed_at_ms": now_ms,
        "status": STATUS_ACTIVE,
        "quarantine_reason": None,
        "quarantined_at_ms": None,
        "last_audit_at_ms": now_ms,
        "last_audit_ok": True,
        "last_audit_reason": None,
    }


class SkillStore:
    """The installed-skills index plus the trust store, both under `<state_root>/skills/`."""

    def __init__(self, state_root: Path, *, clock: Clock | None = None) -> None:
        self.root = Path(state_root) / "skills"
        self.installed_dir = self.root / "installed"
        self.index_path = self.root / INDEX_FILE
        self.clock = clock or SystemClock()
        self.trust = TrustStore(self.root / TRUST_FILE, clock=self.clock)
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: dict[str, InstalledSkill] = {}
        self._mutex = threading.Lock()

    # --- index I/O ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Exclusive read-modify-write of the index across threads and processes."""
        with self._mutex:
            fd = open_private(self.root / ".lock")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                doc = self._read_doc()
                yield doc
                atomic_write_json(self.index_path, doc)
            finally:
                os.close(fd)  # closing releases the flock

    def _read_doc(self) -> dict[str, Any]:
        return read_json_doc(self.index_path, "skills", "skills index")

    def _skill(self, rec: dict[str, Any]) -> InstalledSkill:
        return InstalledSkill(
            id=rec["id"],
            version=rec["version"],
            publisher=rec["publisher"],
            public_key=rec["public_key"],
            module_sha256=rec["module_sha256"],
            payload_sha256=rec["payload_sha256"],
            capabilities=tuple(rec["capabilities"]),
            manifest=parse_manifest_data(rec["manifest"]),
            path=self.installed_dir / rec["dir"],
            installed_at_ms=rec["installed_at_ms"],
            status=rec["status"],
            quarantine_reason=rec.get("quarantine_reason"),
            quarantined_at_ms=rec.get("quarantined_at_ms"),
            last_audit_at_ms=rec.get("last_audit_at_ms"),
            last_audit_ok=rec.get("last_audit_ok"),
            last_audit_reason=rec.get("last_audit_reason"),
        )

    def _all(self) -> dict[str, InstalledSkill]:
        try:
            st = self.index_path.stat()
        except FileNotFoundError:
            return {}
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._mutex:
            if key != self._cache_key:
                doc = self._read_doc()
                self._cache = {sid: self._skill(rec) for sid, rec in sorted(doc["skills"].items())}
                self._cache_key = key
            return self._cache

    # --- queries -----------------------------------------------------------------------------------

    def list(self) -> list[InstalledSkill]:
        return list(self._all().values())

    def get(self, skill_id: str) -> InstalledSkill | None:
        return self._all().get(skill_id)

    def ids(self) -> set[str]:
        return set(self._all())

    def _require(self, doc: dict[str, Any], skill_id: str) -> dict[str, Any]:
        rec = doc["skills"].get(skill_id)
        if rec is None:
            raise NotFound(f"skill {skill_id!r} is not installed")
        return rec

    # --- install / remove --------------------------------------------------------------------------

    def install(self, path: Path, *, force: bool = False) -> InstalledSkill:
        """Verify the package at `path` and install a pinned copy; idempotent for the same payload.

        Refuses to replace a quarantined skill (release or remove it first, so a quarantine is never
        lifted as a side effect) and to downgrade unless `force`.
        """
        with open_package(Path(path)) as src:
            verified = verify_package_dir(src, self.trust)
            m = verified.manifest
            with self._locked() as doc:
                old = doc["skills"].get(m.id)
                if old is not None:
                    if old["status"] == STATUS_QUARANTINED:
                        raise Conflict(
                            f"skill {m.id!r} is quarantined ({old.get('quarantine_reason')}); release or remove it first"
                        )
                    if old["payload_sha256"] == verified.payload_sha256:
                        return self._skill(old)
                    if not force and semver_key(m.version) < semver_key(old["version"]):
                        raise Conflict(
                            f"skill {m.id!r} {old['version']} is installed; refusing to downgrade to {m.version} without --force"
                        )
                dest = self._copy(src, verified)
                doc["skills"][m.id] = _record(verified, dest, self.clock.now_ms())
                old_dir = self.installed_dir / old["dir"] if old is not None else None
            if old_dir is not None and old_dir != dest:
                shutil.rmtree(old_dir, ignore_errors=True)
        return self._skill(doc["skills"][m.id])

    def _copy(self, src: Path, verified: VerifiedPackage) -> Path:
        """Copy into a fresh directory and re-hash the copy, so what was verified is what is pinned."""
        private_dir(self.installed_dir)
        dest = self.installed_dir / f"{verified.manifest.id}-{uuid.uuid4().hex[:12]}"
        os.mkdir(dest, 0o700)
        os.chmod(dest, 0o700)
        try:
            for rel in [*verified.files, SIGNATURE_FILE]:
                target = dest / rel
                private_dir(target.parent)
                shutil.copyfile(src / rel, target)
                os.chmod(target, 0o400)  # read-only and owner-only: the copy is never edited
            if collect_files(dest) != verified.files:
                raise PalyraError("package changed while being installed; try again")
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        return dest

    def remove(self, skill_id: str) -> None:
        with self._locked() as doc:
            rec = self._require(doc, skill_id)
            del doc["skills"][skill_id]
        shutil.rmtree(self.installed_dir / rec["dir"], ignore_errors=True)

    # --- quarantine --------------------------------------------------------------------------------

    def quarantine(self, skill_id: str, reason: str) -> None:
        """Stop a skill from running until released; keeps the first reason if already quarantined."""
        with self._locked() as doc:
            rec = self._require(doc, skill_id)
            if rec["status"] != STATUS_QUARANTINED:
                rec.update(status=STATUS_QUARANTINED, quarantine_reason=reason, quarantined_at_ms=self.clock.now_ms())

    def release(self, skill_id: str) -> None:
        """Lift a quarantine, but only if the installed copy verifies again today.

        Releasing a skill that still fails would let tampered code run until the next audit.
        """
        skill = self.get(skill_id)
        if skill is None:
            raise NotFound(f"skill {skill_id!r} is not installed")
        problem = self.verify_installed(skill)
        if problem is not None:
            raise PalyraError(f"cannot release skill {skill_id!r}: {problem}; reinstall or remove it")
        with self._locked() as doc:
            rec = self._require(doc, skill_id)
            rec.update(status=STATUS_ACTIVE, quarantine_reason=None, quarantined_at_ms=None)

    # --- audit -------------------------------------------------------------------------------------

    def verify_installed(self, skill: InstalledSkill) -> str | None:
        """Re-run every install check on the installed copy plus the pins; None when it passes."""
        try:
            v = verify_package_dir(skill.path, self.trust)
        except PalyraError as exc:
            return exc.message
        except OSError as exc:
            return f"installed copy unreadable: {exc.strerror or exc}"
        if v.manifest.id != skill.id:
            return f"installed copy now declares id {v.manifest.id!r}"
        if v.payload_sha256 != skill.payload_sha256:
            return "package payload differs from the one pinned at install (re-signed or replaced)"
        if v.module_sha256 != skill.module_sha256:
            return "entry module sha256 differs from the one pinned at install"
        beyond = sorted(set(v.manifest.capabilities.names()) - set(skill.capabilities))
        if beyond:
            return f"asks for capabilities beyond its grant: {', '.join(beyond)}"
        return None

    def audit(self) -> list[AuditResult]:
        """Re-verify every installed skill; quarantine each failure (`newly_quarantined` marks new ones).

        The daemon emits `skill.quarantined` for each newly quarantined result.
        """
        results: list[AuditResult] = []
        for skill in self.list():
            problem = self.verify_installed(skill)
            now = self.clock.now_ms()
            newly = False
            with self._locked() as doc:
                rec = doc["skills"].get(skill.id)
                if rec is None:  # removed meanwhile
                    continue
                rec.update(last_audit_at_ms=now, last_audit_ok=problem is None, last_audit_reason=problem)
                if problem is not None and rec["status"] != STATUS_QUARANTINED:
                    rec.update(
                        status=STATUS_QUARANTINED,
                        quarantine_reason=f"re-audit failed: {problem}",
                        quarantined_at_ms=now,
                    )
                    newly = True
            results.append(AuditResult(skill.id, problem is None, problem, newly))
        return results
