"""Directory watcher: reconcile the routine directory into the journal on save (SPEC §5, `--watch`).

A controller in the controller-runtime sense: filesystem events never *do* anything, they only
mark the tree dirty and (re)arm a debounce timer; one worker thread then runs the very same
validate → plan → apply path as `palyra-ops apply` (`reconcile.plan_directory` / `apply_plan`).
Because a reconcile always re-reads the whole directory (cheap: per-file results are cached by
content hash), it does not matter which events arrived, how many, or in which order — an editor's
temp-file-and-rename, a `git checkout` touching a thousand files, or an inotify queue that
overflowed all converge to the same result. A periodic rescan covers events the OS never delivered.

Safety rules on top of the CLI path (docs/watcher.md):
- *last-good isolation*: a file that fails validation keeps its objects exactly as last applied
  (plan's `protected_files`); every other file still reconciles. A path that still exists but cannot
  be read as a regular file (a FIFO, a directory in its place) is treated the same way.
- a missing or emptied directory never prunes: the plan's empty-directory guard refuses, the watcher
  reports the error and keeps the last good state (`apply --allow-empty` is the deliberate way).
- drift (a managed routine edited through the API) is left alone unless `self_heal`, because an
  operator who paused a routine through the console should not see it silently re-enabled by an
  unrelated save. `apply` (or `--self-heal`) restores git.
- while a git operation holds `.git/index.lock` the reconcile waits, so a checkout that deletes a file
  and re-creates it under another name is seen as one move (history and next run kept), not as a
  delete followed by a create.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from palyra_ops.clock import Clock, SystemClock, rfc3339
from palyra_ops.errors import PalyraError, StalePlan
from palyra_ops.gitinfo import GitInfo, git_info, git_lock_present, in_git_work_tree
from palyra_ops.journal import Journal, open_journal
from palyra_ops.journal.faults import journal_location
from palyra_ops.lastgood import protect_paths, unreadable_paths, without_drift
from palyra_ops.plan import Change, Plan, PlanAction
from palyra_ops.reconcile import apply_plan, plan_directory
from palyra_ops.source import SkillsUnchecked, SourceSet
from palyra_ops.syncstatus import SyncState, file_states, overall
from palyra_ops.watchfs import DirectoryWatch

log = logging.getLogger("palyra_ops.watcher")

#: the skills a routine may reference, or why that cannot be checked (palyra_ops/skillrefs.py); the
#: daemon passes a callable so a skill installed while it runs counts at the next reconcile
KnownSkills = set[str] | SkillsUnchecked | None

#: per-file and overall states shown by `status` (SPEC §5 item 5; `palyra_ops.syncstatus`)
SYNCED, OUT_OF_SYNC, INVALID, ERROR, PENDING = (SyncState.SYNCED, SyncState.OUT_OF_SYNC, SyncState.INVALID,
                                                SyncState.ERROR, SyncState.PENDING)

EVENT_RELOADED = "routines.reloaded"
EVENT_INVALID = "routines.invalid"

#: how often the worker checks that the watched directory is still the one being watched (it may have
#: been deleted and re-created, which silently ends an inotify watch)
ROOT_CHECK_S = 1.0
#: the longest a git operation (index.lock present) may postpone a reconcile: a crashed git leaves a
#: stale lock behind, and the watcher must not stop working because of it
GIT_LOCK_MAX_WAIT_S = 30.0
#: backoff cap after an unexpected failure (e.g. the journal locked by a long transaction)
RETRY_MAX_S = 30.0
#: re-plan this many times when another process applied between our plan and our apply
STALE_RETRIES = 3


@dataclass
class ReconcileResult:
    """What one reconcile did; also the source of `Watcher.status()`."""

    reason: str
    started_at_ms: int
    duration_ms: int = 0
    state: SyncState = SYNCED
    applied: bool = False
    added: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    serial: int | None = None
    kept_invalid: list[str] = field(default_factory=list)  # object names kept at their last good version
    drift_pending: list[str] = field(default_factory=list)  # drifted routines left alone (no self-heal)
    healed: list[str] = field(default_factory=list)  # drifted routines put back to git (self-heal)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # relpath -> {state, diagnostics, objects}
    git: GitInfo | None = None
    error: str | None = None

    @property
    def invalid_files(self) -> dict[str, list[str]]:
        return {f: s["diagnostics"] for f, s in self.files.items() if s["state"] == INVALID}

    def counts(self) -> dict[str, int]:
        return {
            "added": self.added,
            "changed": self.changed,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "kept_invalid": len(self.kept_invalid),
            "drift_pending": len(self.drift_pending),
            "healed": len(self.healed),
            "files": len(self.files),
            "files_invalid": sum(1 for s in self.files.values() if s["state"] == INVALID),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "started_at": rfc3339(self.started_at_ms),
            "duration_ms": self.duration_ms,
            "state": self.state,
            "applied": self.applied,
            "serial": self.serial,
            "counts": self.counts(),
            "kept_invalid": self.kept_invalid,
            "drift_pending": self.drift_pending,
            "healed": self.healed,
            "files": self.files,
            "git": dataclasses.asdict(self.git) if self.git else None,
            "error": self.error,
        }


# -- the watcher ----------------------------------------------------------------------------------


@dataclass
class _Round:
    """One planning round of a reconcile: the plan to apply and what the report needs besides it."""

    plan: Plan
    source: SourceSet
    drift: list[Change]  # drift-only updates left alone (no self-heal)
    unreadable: dict[str, str]  # paths in place of routine files that could not be read, and why


class Watcher:
    """Keeps the journal in sync with a routine directory while the daemon runs with `--watch`.

    Thread model: the watchdog observer thread only calls `_mark_dirty`; one worker thread runs every
    reconcile; `reconcile_now` (tests, a console "reload" button) takes the same lock, so reconciles
    never overlap. The watcher has its own journal connection: SQLite serialises writers and
    `apply_plan` refuses a plan made stale by a concurrent `palyra-ops apply` (then we re-plan).
    """

    def __init__(
        self,
        directory: Path,
        journal_path: Path | str,
        *,
        clock: Clock | None = None,
        debounce_ms: int = 150,
        max_delay_ms: int = 3000,
        rescan_interval_s: float = 300,
        self_heal: bool = False,
        known_skills: KnownSkills | Callable[[], KnownSkills] = None,
        display_root: str | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        on_applied: Callable[[], None] | None = None,
        journal: Journal | None = None,
    ) -> None:
        """`max_delay_ms` bounds how long a never-ending stream of events can postpone a reconcile.

        `on_event(name, payload)` receives `routines.reloaded` / `routines.invalid` (the daemon routes
        them to `system_event` routines); without it they are recorded with `journal.add_event`.
        `on_applied()` is called after every apply that changed the journal (e.g. scheduler.wake).
        `journal` lets a caller share a connection; by default the watcher opens its own.
        """
        if debounce_ms < 0 or max_delay_ms < debounce_ms:
            raise PalyraError("watcher: need 0 <= debounce_ms <= max_delay_ms")
        if rescan_interval_s <= 0:
            raise PalyraError("watcher: rescan interval must be positive")
        self.directory = Path(directory).absolute()
        self.journal_path = journal_location(journal_path)  # a postgresql:// URL stays text
        self.clock: Clock = clock or SystemClock()
        self.debounce_s = debounce_ms / 1000
        self.max_delay_s = max_delay_ms / 1000
        self.rescan_interval_s = float(rescan_interval_s)
        self.self_heal = self_heal
        self.known_skills = known_skills
        self.display_root = display_root
        self.on_event = on_event
        self.on_applied = on_applied

        self._journal = journal
        self._own_journal = journal is None
        self._reconcile_lock = threading.Lock()
        self._cond = threading.Condition()
        self._dirty = False
        self._reasons: set[str] = set()
        self._first_event = 0.0
        self._last_event = 0.0
        self._git_wait_since: float | None = None
        self._next_rescan = time.monotonic() + self.rescan_interval_s
        self._retry_at: float | None = None
        self._failures = 0
        self._stopping = False
        self._worker: threading.Thread | None = None
        self.fs = DirectoryWatch(self.directory, lambda reason, immediate: self._mark_dirty(reason, immediate=immediate))
        self._in_git = in_git_work_tree(self.directory)

        self._last: ReconcileResult | None = None
        self._last_applied_at_ms: int | None = None
        self._last_invalid: dict[str, list[str]] = {}
        self._reconcile_count = 0
        self._warned: list[str] = []
        self._totals = {"added": 0, "changed": 0, "deleted": 0, "healed": 0}

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching, reconcile once (synchronously), then keep reconciling on change.

        The observer is started before the first reconcile so an edit made while it runs is not lost.
        """
        if self._worker is not None:
            return
        self._stopping = False
        self.fs.start()
        self.fs.check()
        self.reconcile_now("startup")
        self._worker = threading.Thread(target=self._run, name="palyra-watcher", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None
        self.fs.stop(timeout)
        with self._reconcile_lock:
            if self._journal is not None and self._own_journal:
                self._journal.close()
                self._journal = None

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no reconcile is pending or running (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                dirty = self._dirty
            if not dirty and not self._reconcile_lock.locked():
                return True
            time.sleep(0.01)
        return False

    # -- the worker --------------------------------------------------------------------------------

    def _mark_dirty(self, reason: str, *, immediate: bool = False) -> None:
        now = time.monotonic()
        with self._cond:
            if not self._dirty:
                self._first_event = now
                self._dirty = True
            self._last_event = now
            if immediate:
                self._first_event = now - self.max_delay_s
            self._reasons.add(reason)
            self._cond.notify_all()

    def _due_at(self) -> float:
        return min(self._last_event + self.debounce_s, self._first_event + self.max_delay_s)

    def _run(self) -> None:
        while not self._stopping:
            try:
                self.fs.check()
            except Exception:  # pragma: no cover - keep the worker alive whatever happens
                log.exception("watcher: checking the directory failed")
            reasons = self._wait_until_due()
            if reasons is None or self._git_postpones():
                continue
            with self._cond:
                self._dirty = False
                self._reasons.clear()
            try:
                self.reconcile_now(",".join(reasons))
            except Exception:  # pragma: no cover - reconcile_now already records errors
                log.exception("watcher: reconcile failed")

    def _wait_until_due(self) -> list[str] | None:
        """The reasons of a reconcile that is due now; else sleep until something may be (an event,
        the debounce, the rescan or retry timer, the next directory check) and return None."""
        with self._cond:
            if self._stopping:
                return None
            now = time.monotonic()
            for timer, reason in ((self._next_rescan, "rescan"), (self._retry_at, "retry")):
                if not self._dirty and timer is not None and now >= timer:
                    self._dirty, self._first_event, self._last_event = True, now - self.max_delay_s, now
                    self._reasons.add(reason)
            if self._dirty and now >= self._due_at():
                return sorted(self._reasons)
            wake = [self._next_rescan, now + ROOT_CHECK_S]
            if self._dirty:
                wake.append(self._due_at())
            if self._retry_at is not None:
                wake.append(self._retry_at)
            self._cond.wait(max(0.0, min(wake) - now))
            return None

    def _git_postpones(self) -> bool:
        """While a git command holds `index.lock`, wait another quiet period (at most
        GIT_LOCK_MAX_WAIT_S: a crashed git leaves a stale lock behind)."""
        if not (self._in_git and git_lock_present(self.directory)):
            self._git_wait_since = None
            return False
        now = time.monotonic()
        if self._git_wait_since is None:
            self._git_wait_since = now
        if now - self._git_wait_since < GIT_LOCK_MAX_WAIT_S:
            with self._cond:  # re-arm: check again after another quiet period
                self._last_event = now
                self._first_event = max(self._first_event, now - self.max_delay_s + self.debounce_s)
            return True
        log.warning("watcher: .git/index.lock present for %.0fs; reconciling anyway", now - self._git_wait_since)
        self._git_wait_since = None
        return False

    # -- reconcile ---------------------------------------------------------------------------------

    def _journal_conn(self) -> Journal:
        if self._journal is None:
            self._journal = open_journal(self.journal_path, clock=self.clock)
        return self._journal

    def reconcile_now(self, reason: str = "manual") -> ReconcileResult:
        """Validate → plan → apply once, synchronously; never raises for an expected failure."""
        with self._reconcile_lock:
            t0 = time.perf_counter()
            result = ReconcileResult(reason=reason, started_at_ms=self.clock.now_ms())
            try:
                self._reconcile(result)
                self._failures = 0
                self._retry_at = None
            except PalyraError as exc:
                result.state, result.error = ERROR, exc.message
                log.warning("watcher: %s", exc.message)
            except Exception as exc:  # the worker must survive a locked journal, a full disk, …
                result.state, result.error = ERROR, f"{type(exc).__name__}: {exc}"
                self._failures += 1
                delay = min(RETRY_MAX_S, 2.0 ** self._failures)
                self._retry_at = time.monotonic() + delay
                log.exception("watcher: reconcile failed; retrying in %.0fs", delay)
            if result.state == ERROR and self._last is not None and not result.files:
                result.files = self._last.files  # what we knew last; nothing changed in the journal
            result.duration_ms = int((time.perf_counter() - t0) * 1000)
            self._reconcile_count += 1
            self._last = result
            self._next_rescan = time.monotonic() + self.rescan_interval_s
        self._after(result)
        return result

    def _log_warnings(self, warnings: list[Any]) -> None:
        """Checks that could not run (e.g. skill references without a skills index), logged once
        per change rather than at every reconcile."""
        lines = [w.format() for w in warnings]
        if lines != self._warned:
            for line in lines:
                log.warning("%s", line)
            self._warned = lines

    def _reconcile(self, result: ReconcileResult) -> None:
        if not self.directory.is_dir():
            what = "is not a directory" if self.directory.exists() else "does not exist"
            raise PalyraError(
                f"routine directory {self.display_root or self.directory} {what}; "
                "nothing changed, the last good state stays (waiting for it to come back)"
            )
        journal = self._journal_conn()
        for attempt in range(STALE_RETRIES + 1):
            round_ = self._plan()
            try:
                self._apply(journal, round_.plan, result)
                break
            except StalePlan:
                if attempt == STALE_RETRIES:
                    raise
                log.info("watcher: journal changed while planning; planning again")
        if result.git is None and self._in_git:
            result.git = git_info(self.directory)
        self._report(result, round_)

    def _plan(self) -> _Round:
        """validate → plan, then the watcher's own policy: unreadable paths keep their objects and,
        without self-heal, drift is left alone."""
        plan, source = plan_directory(
            self.directory,
            self.journal_path,
            clock=self.clock,
            isolate_invalid=True,
            # a callable is asked on every reconcile: a skill installed while the daemon runs counts
            known_skills=self.known_skills() if callable(self.known_skills) else self.known_skills,
            display_root=self.display_root,
        )
        self._log_warnings(source.warnings)
        unreadable = unreadable_paths(self.directory, source, plan)
        plan, _ = protect_paths(plan, unreadable)
        drift: list[Change] = []
        if not self.self_heal:
            plan, drift = without_drift(plan)
        return _Round(plan, source, drift, unreadable)

    def _apply(self, journal: Journal, plan: Plan, result: ReconcileResult) -> None:
        if not plan.has_changes:
            result.serial = plan.serial
            return
        applied = apply_plan(journal, plan, directory=self.directory, origin="watcher")
        result.applied = True
        result.added, result.changed, result.deleted = applied.added, applied.changed, applied.deleted
        result.serial, result.git = applied.serial, applied.git

    def _report(self, result: ReconcileResult, round_: _Round) -> None:
        """What the reconcile left: kept, drifted and healed objects, and each file's SyncState."""
        plan = round_.plan
        kept = [c for c in plan.changes if c.kept]
        result.unchanged = sum(1 for c in plan.changes if c.action is PlanAction.NO_OP)
        result.kept_invalid = sorted(c.name for c in kept)
        result.drift_pending = sorted(c.name for c in round_.drift)
        if self.self_heal:
            result.healed = sorted(c.name for c in plan.changes if c.action is PlanAction.UPDATE and c.drift)
            for name in result.healed:
                log.warning("watcher: self-heal: %s was changed outside git; restored the git version", name)
        result.files = file_states(round_.source, kept=kept, pending=round_.drift, unreadable=round_.unreadable,
                                   shown_root=self.display_root or str(self.directory))
        result.state = overall(result.files)

    def _after(self, result: ReconcileResult) -> None:
        """Bookkeeping, events and callbacks, outside the reconcile lock (callbacks may be slow)."""
        if result.applied:
            self._last_applied_at_ms = result.started_at_ms
            for k in ("added", "changed", "deleted"):
                self._totals[k] += getattr(result, k)
            self._totals["healed"] += len(result.healed)
            log.info(
                "watcher: applied %d added, %d changed, %d deleted (%s, %d ms)",
                result.added, result.changed, result.deleted, result.reason, result.duration_ms,
            )
            if self.on_applied is not None:
                try:
                    self.on_applied()
                except Exception:
                    log.exception("watcher: on_applied callback failed")
            self._emit(EVENT_RELOADED, {
                "reason": result.reason,
                "added": result.added,
                "changed": result.changed,
                "deleted": result.deleted,
                "serial": result.serial,
                "healed": result.healed,
                "files_invalid": sorted(result.invalid_files),
                "git_commit": result.git.commit if result.git else None,
            })
        if result.state == ERROR:
            return
        invalid = result.invalid_files
        newly = {f: d for f, d in invalid.items() if self._last_invalid.get(f) != d}
        self._last_invalid = invalid
        if newly:
            for f, diags in newly.items():
                log.warning("watcher: %s is invalid; its routines keep their last good version: %s", f, "; ".join(diags))
            self._emit(EVENT_INVALID, {
                "files": newly,
                "count": len(invalid),
                "kept": result.kept_invalid,
            })

    def _emit(self, name: str, payload: dict[str, Any]) -> None:
        try:
            if self.on_event is not None:
                self.on_event(name, payload)
            else:
                with self._reconcile_lock:
                    self._journal_conn().add_event(name, payload)
        except Exception:
            log.exception("watcher: could not emit %s", name)

    # -- visibility --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """JSON-able state for `palyra-ops status` and `GET /console/v1/system/status`."""
        last = self._last
        with self._cond:
            pending = self._dirty
        return {
            "enabled": True,
            "running": self.running,
            "directory": str(self.display_root or self.directory),
            "directory_present": self.directory.is_dir(),
            "watching": self.fs.watching,
            "watch_error": self.fs.error,
            "state": last.state if last else PENDING,
            "pending": pending,
            "files": last.files if last else {},
            "last_reconcile_at": rfc3339(last.started_at_ms) if last else None,
            "last_reconcile_reason": last.reason if last else None,
            "duration_ms": last.duration_ms if last else None,
            "reconcile_count": self._reconcile_count,
            "last_applied_at": rfc3339(self._last_applied_at_ms),
            "counts": last.counts() if last else {},
            "totals": dict(self._totals),
            "kept_invalid": last.kept_invalid if last else [],
            "drift_pending": last.drift_pending if last else [],
            "git": dataclasses.asdict(last.git) if last and last.git else None,
            "last_error": last.error if last else None,
            "self_heal": self.self_heal,
            "debounce_ms": int(self.debounce_s * 1000),
            "rescan_interval_s": self.rescan_interval_s,
            "events": {"seen": self.fs.seen, "ignored": self.fs.ignored},
        }


__all__ = [
    "ERROR",
    "EVENT_INVALID",
    "EVENT_RELOADED",
    "INVALID",
    "OUT_OF_SYNC",
    "PENDING",
    "SYNCED",
    "ReconcileResult",
    "Watcher",
]
