"""Reconcile: turn a plan (or an API edit) into journal writes, idempotently.

This is the one code path that writes desired state, shared by `palyra-ops apply`, the daemon's
directory watcher and the console API, in the controller-runtime spirit: read desired and actual,
write the difference, and converge to a no-op on the second run.

Job bookkeeping rules (docs/gitops.md):
- a schedule that is new or changed (fingerprint differs) gets `next_run_at` recomputed from *now*:
  an edit never fires by itself and never replays times before it;
- an unchanged schedule keeps its next run (and history) — also when its file was renamed;
- a routine going from disabled to enabled is also recomputed from now, so re-enabling after a week
  does not look like a week of misfires.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from palyra_ops import fsmodes
from palyra_ops import schedule as sched
from palyra_ops.clock import Clock
from palyra_ops.errors import NotFound, StalePlan, ValidationFailed
from palyra_ops.failpoints import failpoint
from palyra_ops.gitinfo import GitInfo, git_info
from palyra_ops.journal import JobRecord, Journal, ResourceWrite, Snapshot, StoredResource, Txn, read_snapshot
from palyra_ops.model import Resource, Routine
from palyra_ops.plan import Plan, body_source, compute_plan, schedule_from_spec
from palyra_ops.plan_select import Selection
from palyra_ops.schema_files import schema_path
from palyra_ops.source import FileDocuments, SkillsUnchecked, SourceSet, load_directory


@dataclass(frozen=True)
class ApplyResult:
    added: int
    changed: int
    deleted: int
    serial: int
    git: GitInfo | None

    @property
    def total(self) -> int:
        return self.added + self.changed + self.deleted


# -- desired state from a directory ------------------------------------------------------------------


class _ResourceCache:
    """file sha256 → [(kind, name, hash)], one JSON file beside the journal.

    JSON rather than pickle, like the source cache: loading a cache must never be a way to run code.
    A cached hash decides whether plan sees a change, so the file is only read when nobody else could
    have written it (see `fsmodes`); otherwise it is ignored and rewritten privately.
    """

    VERSION = 2

    def __init__(self, directory: Path, *, readonly: bool = False) -> None:
        self.path = Path(directory) / "resources.json"
        self.entries: dict[str, list[tuple[str, str, str]]] = {}
        self.dirty = False
        self.readonly = readonly
        self.usable = fsmodes.cache_dir(Path(directory).parent.parent, Path(directory), create=not readonly)
        if not self.usable:
            return
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.loads(fh.read()) if fsmodes.trusted_fd(fh.fileno()) else {}
            if data.get("version") == self.VERSION and data.get("schema") == _schema_fingerprint():
                self.entries = {k: [tuple(r) for r in v] for k, v in data["entries"].items()}
            elif not data:
                self.dirty = True  # distrusted: rewrite it
        except (OSError, AttributeError, KeyError, TypeError, ValueError):
            self.entries = {}

    def get(self, sha: str) -> list[tuple[str, str, str]] | None:
        return self.entries.get(sha)

    def put(self, sha: str, rows: list[tuple[str, str, str]]) -> None:
        self.entries[sha] = rows
        self.dirty = True

    def save(self, keep: set[str]) -> None:
        stale = set(self.entries) - keep
        for sha in stale:
            del self.entries[sha]
        if self.readonly or not self.usable or not (self.dirty or stale):
            return
        try:
            data = {"version": self.VERSION, "schema": _schema_fingerprint(), "entries": self.entries}
            fsmodes.write_private(self.path, json.dumps(data, separators=(",", ":")))
        except OSError:
            pass  # a cache that cannot be written only costs speed


def _schema_fingerprint() -> str:
    """Canonical forms come from the schema's defaults and model.py's code: a change to either must
    invalidate the cached hashes."""
    import hashlib

    from palyra_ops import model

    return hashlib.sha256(schema_path().read_bytes() + Path(model.__file__).read_bytes()).hexdigest()


def cache_dir_for(journal_path: Path | str) -> Path:
    """Parsed+validated files are cached beside the journal (a PostgreSQL journal's: under the
    state root, `StatePaths.source_cache`), keyed by content hash."""
    from palyra_ops.journal.faults import side_base

    return side_base(journal_path).parent / "cache" / "source"


@dataclass
class Loaded:
    """A directory read for planning: the journal's snapshot, the directory's files and findings, and
    its desired objects in canonical form (gathered file by file while loading)."""

    snapshot: Snapshot
    source: SourceSet
    desired: list[Resource]


#: one document's object as `_Desired.prepare` sends it: (kind, name, "known", "", hash, None) when
#: the journal holds it at that hash, else (kind, name, "made", canonical JSON, hash, routine core)
_Made = tuple[str, str, str, str, str, dict[str, Any] | None]
#: a file's objects, and whether they came from the resource cache (nothing to write back to it)
_Prepared = tuple[bool, list[_Made]]


class _Desired:
    """`load_directory`'s `on_file` for plan: each file's documents become compact canonical
    resources as soon as the file is checked, so a directory's bodies are never all held at once.

    With the resource cache (file sha256 → [(kind, name, hash)]), a file checked before is not
    canonicalised again for an object the journal already holds at that hash: plan will show it as
    up to date, so the stored canonical JSON stands in for it. `prepare` (maybe in the forked child
    of a parallel load) canonicalises; `accept` keeps the results here.
    """

    def __init__(self, snapshot: Snapshot, cache: _ResourceCache | None) -> None:
        self.snapshot = snapshot
        self.cache = cache
        self.by_file: dict[str, list[Resource]] = {}

    def prepare(self, rel: str, sha: str, docs: FileDocuments) -> _Prepared:
        hit = self.cache.get(sha) if self.cache is not None else None
        if hit is not None and len(hit) == len(docs):
            return True, [self._known(k, n, h, rel, body) for (k, n, h), (_, _, body) in zip(hit, docs, strict=True)]
        return False, [self._made(body, rel) for _, _, body in docs]

    def accept(self, rel: str, sha: str, prepared: object) -> None:
        from_cache, items = prepared  # type: ignore[misc]  # what `prepare` returned
        made: list[Resource] = []
        for kind, name, how, canonical, h, core in items:
            if how == "known":
                stored = self.snapshot.resources[(kind, name)]
                # the stored object's own strings stand in: nothing of an unchanged object is held twice
                made.append(Resource(stored.kind, stored.name, source_file=stored.source_file,
                                     canonical=stored.body_json, hash=stored.hash).compact())
            else:
                made.append(Resource.compacted(kind, name, rel, canonical, h, core))
        if self.cache is not None and not from_cache:
            self.cache.put(sha, [(r.kind, r.name, r.hash) for r in made])
        self.by_file[rel] = made

    @staticmethod
    def _made(body: dict[str, Any], rel: str) -> _Made:
        r = Resource.from_document(body, source_file=rel).compact()
        return r.kind, r.name, "made", r.canonical, r.hash, r.kept_core

    def _known(self, kind: str, name: str, hash: str, rel: str, body: dict[str, Any]) -> _Made:
        stored = self.snapshot.resources.get((kind, name))
        if (stored is not None and stored.hash == hash and stored.managed and stored.source_file == rel
                and not stored.drifted):
            return kind, name, "known", "", hash, None
        return self._made(body, rel)

    def resources(self, source: SourceSet) -> list[Resource]:
        """The objects of the files that stayed valid (a cross-file finding comes after `add`)."""
        if self.cache is not None:
            self.cache.save(keep={rep.sha256 for rep in source.files.values()})
        return [r for rel, made in self.by_file.items() if rel in source.files and source.files[rel].ok
                for r in made]


def load_for_plan(
    directory: Path,
    journal_path: Path | str,
    *,
    known_skills: set[str] | SkillsUnchecked | None = None,
    display_root: str | None = None,
    read_only: bool = False,
    workers: int = 1,
) -> Loaded:
    """Read the journal's snapshot, then load and validate the directory into desired objects.

    The journal first: one that cannot be read (a URL, a directory, a file as parent) fails before
    the source cache beside it is written. `read_only` (`plan`, `status`): use the caches beside the
    journal but never create or write them. `workers=2`: check a large directory on two cores
    (`source.parallel`; CLI commands only, it forks).
    """
    with _gc_paused():
        snapshot = read_snapshot(journal_path)
        cache_dir = cache_dir_for(journal_path)
        desired = _Desired(snapshot, _ResourceCache(cache_dir, readonly=read_only))
        source = load_directory(Path(directory), display_root=display_root, cache_dir=cache_dir,
                                known_skills=known_skills, cache_readonly=read_only, on_file=desired,
                                workers=workers)
        return Loaded(snapshot, source, desired.resources(source))


def plan_loaded(
    loaded: Loaded,
    directory: Path,
    journal_path: Path | str,
    *,
    clock: Clock | None = None,
    prune_unmanaged: bool = False,
    allow_empty: bool = False,
    isolate_invalid: bool = False,
    display_root: str | None = None,
    selection: Selection | None = None,
    warn: bool = True,
) -> Plan:
    """Diff a loaded directory against its snapshot (see `plan_directory`); `warn=False`: no plan
    warnings (`compute_plan`)."""
    source = loaded.source
    protected: set[str] = set()
    if not source.ok:
        if not isolate_invalid:
            raise ValidationFailed(source.diagnostics)
        protected = {f for f, rep in source.files.items() if not rep.ok}
    with _gc_paused():
        return compute_plan(
            loaded.desired,
            loaded.snapshot,
            dir=display_root or str(directory),
            journal_path=str(journal_path),
            clock=clock,
            prune_unmanaged=prune_unmanaged,
            allow_empty=allow_empty,
            dir_exists=Path(directory).is_dir(),
            protected_files=protected,
            selection=selection,
            warn=warn,
        )


def plan_directory(
    directory: Path,
    journal_path: Path | str,
    *,
    clock: Clock | None = None,
    prune_unmanaged: bool = False,
    allow_empty: bool = False,
    isolate_invalid: bool = False,
    known_skills: set[str] | SkillsUnchecked | None = None,
    display_root: str | None = None,
    read_only: bool = False,
    selection: Selection | None = None,
    workers: int = 1,
) -> tuple[Plan, SourceSet]:
    """Validate the directory and diff it against the journal.

    Invalid input raises `ValidationFailed` (nothing is planned) unless `isolate_invalid`, the
    watcher's mode, where invalid files keep their last good objects and the rest still plans.
    `read_only` (`plan`, `status`): use the caches beside the journal but never create or write them.
    `selection`: `--target`/`--exclude` (plan_select).
    """
    loaded = load_for_plan(directory, journal_path, known_skills=known_skills, display_root=display_root,
                           read_only=read_only, workers=workers)
    plan = plan_loaded(loaded, directory, journal_path, clock=clock, prune_unmanaged=prune_unmanaged,
                       allow_empty=allow_empty, isolate_invalid=isolate_invalid, display_root=display_root,
                       selection=selection)
    return plan, loaded.source


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Planning allocates ~10 objects per routine and frees none of them until it returns; the
    cyclic GC would re-scan that growing heap many times over for nothing (measured: up to 40% of
    a 10,000-routine plan), so it is paused for the duration."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# -- applying a plan ---------------------------------------------------------------------------------


def apply_plan(
    journal: Journal,
    plan: Plan,
    *,
    directory: Path | None = None,
    origin: str = "cli",
    before_commit: Callable[[], None] | None = None,
) -> ApplyResult:
    """Write every change of `plan` in one transaction, or nothing.

    Refuses a stale plan: one computed against another journal (lineage) or an older state of this
    one (serial) — including a plan made when the journal did not exist yet. `before_commit` runs
    last inside the transaction (apply's preview written beside the writes: if it raises, nothing
    is applied).
    """
    now_ms = journal.clock.now_ms()
    git = git_info(directory) if directory is not None else None
    added = changed = deleted = 0
    with journal.transaction() as c:
        lineage, serial = journal.identity(c)
        if plan.lineage is not None and plan.lineage != lineage:
            raise StalePlan(
                "stale plan: it was made against a different journal (lineage "
                f"{plan.lineage[:8]}…, this journal is {lineage[:8]}…); run plan again"
            )
        if serial != plan.serial:
            raise StalePlan(
                f"stale plan: the journal changed since the plan was made (serial {plan.serial} → {serial}); run plan again"
            )
        if not plan.has_changes:
            return ApplyResult(0, 0, 0, serial, git)
        todo = [ch for ch in plan.changes if ch.is_change]
        for ch in todo:
            if ch.moved_from is not None:  # first, so the batch below finds the job under its new name
                journal.rename_routine(c, ch.moved_from, ch.name)
        batch = _Batch(journal, c, now_ms, [ch.name for ch in todo if ch.kind == "Routine" and ch.action != "delete"])
        for i, ch in enumerate(todo):
            if i == len(todo) // 2:
                batch.flush()  # half of it written inside the open transaction: the crash test's moment
                failpoint("apply.mid_transaction")
            if ch.action == "delete":
                batch.delete(ch.kind, ch.name)
                deleted += 1
                continue
            src = body_source(ch, "after")  # a planned Resource carries its canonical JSON already
            if not isinstance(src, Resource) or src.source_file != ch.source_file:
                assert ch.after is not None
                src = Resource(kind=ch.kind, name=ch.name, body=ch.after, source_file=ch.source_file)
            batch.put(src)
            if ch.action == "create":
                added += 1
            else:
                changed += 1
        batch.flush()
        new_serial = journal.bump_serial(c)
        journal.add_apply_log(
            c,
            applied_at_ms=now_ms,
            serial=new_serial,
            source_dir=str(directory) if directory is not None else plan.dir,
            added=added,
            changed=changed,
            deleted=deleted,
            git_commit=git.commit if git else None,
            git_dirty=int(git.dirty) if git else None,
            origin=origin,
        )
        if before_commit is not None:
            before_commit()
    return ApplyResult(added, changed, deleted, new_serial, git)


class _Batch:
    """Apply's writes, sent in batches (`executemany`) inside its one transaction.

    An apply of 100,000 creates used to cost five statements per routine (read the job, check it
    exists, write it, write the object, ...); here the jobs are read in one query and the writes go
    out a few thousand rows per statement. Same rows, same transaction, same all-or-nothing.
    """

    SIZE = 4096

    def __init__(self, journal: Journal, c: Txn, now_ms: int, routine_ids: list[str]) -> None:
        self.journal, self.c, self.now_ms = journal, c, now_ms
        self.jobs = journal.jobs_for(c, routine_ids) if routine_ids else {}
        self.resources: list[ResourceWrite] = []
        self.job_writes: list[tuple[str, dict[str, Any]]] = []
        self.deletes: list[tuple[str, str]] = []
        #: a new job's fields by its routine's (shared) core: the same for every create with that core
        self._new_jobs: dict[int, dict[str, Any]] = {}

    def put(self, res: Resource) -> None:
        canonical, h = res.canonical, res.hash
        self.resources.append(ResourceWrite(res.kind, res.name, canonical, h, True, h, res.source_file))
        if res.kind == "Routine":
            job = self.jobs.get(res.name)
            core = res.kept_core  # alive while the plan is: its id names it for the whole batch
            if job is None and core is not None and core["spec"].get("approval", "none") != "before_enable":
                fields = self._new_jobs.get(id(core))
                if fields is None:  # no approval to write, no job to read: fields of the core alone
                    fields = self._new_jobs[id(core)] = _job_fields(self.journal, self.c, res, None, self.now_ms)
            else:
                fields = _job_fields(self.journal, self.c, res, job, self.now_ms)
            self.job_writes.append((res.name, fields))
        if len(self.resources) >= self.SIZE:
            self.flush()

    def delete(self, kind: str, name: str) -> None:
        self.deletes.append((kind, name))
        if len(self.deletes) >= self.SIZE:
            self.flush()

    def flush(self) -> None:
        if self.deletes:
            self.journal.delete_resources(self.c, self.deletes)
        if self.resources:
            self.journal.put_resources(self.c, self.resources)
        if self.job_writes:
            self.journal.put_jobs(self.c, self.job_writes, existing=self.jobs)
        self.resources, self.job_writes, self.deletes = [], [], []


def _write_job(journal: Journal, c: Txn, res: Resource, prev: StoredResource | None, now_ms: int) -> None:
    journal.put_job(c, res.name, **_job_fields(journal, c, res, journal.get_job(res.name), now_ms))


def _job_fields(journal: Journal, c: Txn, res: Resource, job: JobRecord | None, now_ms: int) -> dict[str, Any]:
    """The job row's new fields for `res` (and its approval, written here) given its current `job`."""
    trigger_kind, approval, enabled, schedule, dst = _scheduling(res)
    fields: dict[str, Any] = {"trigger_kind": trigger_kind}

    approval_state = job["approval_state"] if job else "none"
    if approval == "before_enable":
        if approval_state not in ("approved", "pending"):
            journal.add_approval(c, routine_id=res.name, kind="before_enable")
            approval_state = "pending"
    elif approval_state == "pending" and job is not None:
        journal.cancel_pending_approvals(c, res.name, "before_enable")
        approval_state = "none"
    fields["approval_state"] = approval_state
    effective = enabled and approval_state not in ("pending", "denied")
    was_enabled = bool(job["enabled"]) if job else False
    fields["enabled"] = int(effective)

    s = schedule_from_spec(schedule, dst) if schedule else None
    fp = _fingerprint(s) if s else None
    schedule_changed = job is None or job.get("schedule_fingerprint") != fp
    if s is None:
        fields.update(schedule_fingerprint=None, anchor_ms=None, next_run_at_unix_ms=None)
    elif schedule_changed or (effective and not was_enabled):
        fields.update(schedule_fingerprint=fp, anchor_ms=now_ms, next_run_at_unix_ms=_first_fire(s, now_ms))
    return fields


def _scheduling(res: Resource) -> tuple[str, str, bool, dict[str, Any] | None, dict[str, str]]:
    """(trigger kind, approval, enabled, schedule, dst policy) as `Routine.from_resource` reads them.

    A planned routine answers from its kept core (`Resource.core`: no decode of the whole body, the
    typed view of every field is not needed here); anything else (a saved plan's body, an API edit)
    goes through the typed view as before, which also refuses a body that is not a routine's."""
    core = res.kept_core
    if core is None:
        r = Routine.from_resource(res)
        return r.trigger_kind, r.approval, r.enabled, r.schedule, r.policies.dst
    spec = core["spec"]
    trigger = spec["trigger"]
    kind = trigger["kind"]
    return (kind, spec.get("approval", "none"), bool(spec.get("enabled", True)),
            trigger.get("schedule") if kind == "schedule" else None,
            {"gap": "shift", "fold": "first", **spec.get("policies", {}).get("dst", {})})


@lru_cache(maxsize=1024)
def _first_fire(s: sched.Schedule, now_ms: int) -> int | None:
    """A new schedule's first fire after the apply instant, anchored there (shared by equal schedules)."""
    return s.next_after(now_ms, now_ms)


@lru_cache(maxsize=1024)
def _fingerprint(s: sched.Schedule) -> str:
    return s.fingerprint()


# -- edits through the API (unmanaged objects, drift) ------------------------------------------------


def upsert_resource(journal: Journal, resource: Resource, *, origin: str = "api") -> tuple[StoredResource, bool]:
    """Create or update one object outside git.

    A new object is *unmanaged* (plan leaves it alone); a managed one keeps its `applied_hash`, so it
    now shows as drift and the next apply restores the git version (SPEC §3).
    Returns (stored object, created?).
    """
    now_ms = journal.clock.now_ms()
    with journal.transaction() as c:
        prev = journal.get_resource(resource.kind, resource.name)
        journal.put_resource(
            c,
            kind=resource.kind,
            name=resource.name,
            body=resource.canonical,
            hash=resource.hash,
            managed=prev.managed if prev else False,
            applied_hash=prev.applied_hash if prev else None,
            source_file=prev.source_file if prev else None,
        )
        if resource.kind == "Routine":
            _write_job(journal, c, resource, prev, now_ms)
        journal.bump_serial(c)
    stored = journal.get_resource(resource.kind, resource.name)
    assert stored is not None
    return stored, prev is None


def set_enabled(journal: Journal, name: str, enabled: bool) -> StoredResource:
    stored = journal.get_resource("Routine", name)
    if stored is None:
        raise NotFound(f"routine {name!r} does not exist")
    body = {"metadata": stored.body.get("metadata", {}), "spec": {**stored.body["spec"], "enabled": enabled}}
    res = Resource(kind="Routine", name=name, body=body, source_file=stored.source_file)
    if res.hash == stored.hash:
        return stored
    return upsert_resource(journal, res)[0]


def delete_resource(journal: Journal, kind: str, name: str) -> None:
    """Delete through the API. A managed object comes back at the next apply (it is still in git)."""
    with journal.transaction() as c:
        if journal.get_resource(kind, name) is None:
            raise NotFound(f"{kind.lower()} {name!r} does not exist")
        journal.delete_resource(c, kind, name)
        journal.bump_serial(c)


def apply_directory(journal: Journal, directory: Path, *, origin: str = "cli", **plan_options: Any) -> tuple[Plan, ApplyResult]:
    """Plan and apply in one go (the watcher and `make run` use this)."""
    plan, _ = plan_directory(directory, journal.location, clock=journal.clock, **plan_options)
    return plan, apply_plan(journal, plan, directory=directory, origin=origin)


__all__ = [
    "ApplyResult",
    "Loaded",
    "apply_directory",
    "apply_plan",
    "delete_resource",
    "load_for_plan",
    "plan_directory",
    "plan_loaded",
    "set_enabled",
    "upsert_resource",
]
