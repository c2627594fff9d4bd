"""Sync status: does the journal hold what the routine directory says? (SPEC §5 item 5, §7 `status`)

Computed here once for its three readers: `palyra-ops status` (`directory_status`, a fresh
read-only plan), the directory watcher (`file_states` + `overall` after each reconcile, shown as
`watcher` in `GET /console/v1/system/status`) and that API route (`watcher_status`, `last_apply`).
The states and the rule that combines them are the same everywhere:

- a file is `Invalid` when it fails validation (or cannot be read), `OutOfSync` when a change it
  asks for is pending (not applied), else `Synced`;
- overall: `Invalid` beats `OutOfSync` beats `Synced`. The watcher adds `Error` (the directory could
  not be planned at all; nothing changed) and `Pending` (no reconcile yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from palyra_ops.clock import Clock, SystemClock, rfc3339
from palyra_ops.errors import JournalError, PalyraError
from palyra_ops.journal import Journal, open_journal
from palyra_ops.plan import Change, Plan, PlanAction
from palyra_ops.reconcile import plan_directory
from palyra_ops.source import SkillsUnchecked, SourceSet, load_directory
from palyra_ops.views.api import apply_log_view

#: how many coming runs `status` lists
NEXT_RUNS = 5


class SyncState(StrEnum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    INVALID = "Invalid"
    ERROR = "Error"
    PENDING = "Pending"


#: `status --detailed-exitcode` (SPEC §7): 0 Synced, 2 OutOfSync, 1 Invalid or error
EXIT_CODES = {SyncState.SYNCED: 0, SyncState.OUT_OF_SYNC: 2, SyncState.INVALID: 1}


def exit_code(state: str) -> int:
    return EXIT_CODES.get(state, 1)


def overall(states: Iterable[str]) -> SyncState:
    """The state of a whole directory from its files' states (and pending changes' states)."""
    seen = set(states)
    if SyncState.INVALID in seen:
        return SyncState.INVALID
    return SyncState.OUT_OF_SYNC if SyncState.OUT_OF_SYNC in seen else SyncState.SYNCED


# -- per file (the watcher) -------------------------------------------------------------------------


def file_states(
    source: SourceSet,
    plan: Plan,
    *,
    pending: Iterable[Change] = (),
    unreadable: Mapping[str, str] | None = None,
    shown_root: str | Path = "",
) -> dict[str, dict[str, Any]]:
    """relpath → {state, diagnostics, objects}, sorted by path.

    An invalid or unreadable file lists the objects it keeps at their last good version (the plan's
    `kept` changes); `unreadable` (relpath → why) names paths in place of a routine file that could
    not be loaded; `pending` are changes deliberately not applied (drift without self-heal).
    """
    files: dict[str, dict[str, Any]] = {
        rel: {
            "state": SyncState.SYNCED if rep.ok else SyncState.INVALID,
            "diagnostics": [d.format() for d in rep.diagnostics],
            "objects": [f"{k}/{n}" for k, n in rep.names],
        }
        for rel, rep in source.files.items()
    }
    for rel, why in (unreadable or {}).items():
        files[rel] = {"state": SyncState.INVALID, "diagnostics": [f"{Path(shown_root) / rel}: {why}"], "objects": []}
    for c in plan.changes:
        if c.kept and c.source_file in files:
            objects = files[c.source_file]["objects"]
            if f"{c.kind}/{c.name}" not in objects:
                objects.append(f"{c.kind}/{c.name}")
    for c in pending:
        if c.source_file in files and files[c.source_file]["state"] == SyncState.SYNCED:
            files[c.source_file]["state"] = SyncState.OUT_OF_SYNC
    return dict(sorted(files.items()))


class HasStatus(Protocol):
    def status(self) -> dict[str, Any]: ...


def watcher_status(watcher: HasStatus | None) -> dict[str, Any]:
    """The watcher's status document, or the one of a daemon started without `--watch`."""
    return watcher.status() if watcher is not None else {"enabled": False}


# -- the journal side -------------------------------------------------------------------------------


def last_apply(journal: Journal) -> dict[str, Any] | None:
    """The last apply log entry as the API shows it (`views.apply_log_view`)."""
    return apply_log_view(journal.last_apply())


def next_runs(journal: Journal, limit: int = NEXT_RUNS) -> list[dict[str, Any]]:
    return [
        {"routine_id": job["routine_id"], "next_run_at": rfc3339(job["next_run_at_unix_ms"])}
        for job in journal.upcoming_jobs(limit)
    ]


# -- directory vs journal (`palyra-ops status`) ----------------------------------------------------


def directory_status(
    directory: Path,
    journal_path: Path,
    *,
    known_skills: set[str] | SkillsUnchecked | None = None,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """Everything `palyra-ops status` shows, as data (also its `--output json`).

    Read-only: the plan uses the caches beside the journal but writes nothing, and a journal that
    does not exist yet reads as empty. A journal fault is raised (one line, exit 1, like every
    command); anything wrong with the directory is reported as `Invalid`.
    """
    report: dict[str, Any] = {"dir": str(directory), "journal": str(journal_path)}
    source = load_directory(directory, known_skills=known_skills)
    report["warnings"] = [w.format() for w in source.warnings]
    invalid = [r for r in source.files.values() if not r.ok]
    if invalid or not source.ok:
        report["state"] = SyncState.INVALID
        report["invalid_files"] = [
            {"file": r.display, "diagnostics": [d.format() for d in r.diagnostics]} for r in invalid
        ]
        report["diagnostics"] = [d.format() for d in source.diagnostics]
    else:
        report.update(_plan_status(directory, journal_path, known_skills))
    report.update(_journal_status(journal_path))
    report["checked_at"] = rfc3339((clock or SystemClock()).now_ms())
    return report


def _plan_status(directory: Path, journal_path: Path, known_skills: set[str] | SkillsUnchecked | None) -> dict[str, Any]:
    try:
        plan, _ = plan_directory(directory, journal_path, allow_empty=True, known_skills=known_skills, read_only=True)
    except JournalError:
        raise  # the journal is at fault, not the directory
    except PalyraError as exc:
        return {"state": SyncState.INVALID, "error": exc.message}
    pending = [c for c in plan.changes if c.is_change]
    return {
        "state": SyncState.OUT_OF_SYNC if pending else SyncState.SYNCED,
        "out_of_sync": [
            {"kind": c.kind, "name": c.name, "action": c.action, "reason": c.reason, "file": c.source_file}
            for c in pending
        ],
        "unmanaged": [c.name for c in plan.changes if c.action == PlanAction.UNMANAGED],
    }


def _journal_status(journal_path: Path) -> dict[str, Any]:
    if not journal_path.exists():
        return {"last_apply": None, "next_runs": []}
    with open_journal(journal_path) as journal:
        view = last_apply(journal)
        return {
            "serial": journal.serial(),
            "last_apply": {"at": view["applied_at"], **{k: view[k] for k in _STATUS_APPLY_KEYS}} if view else None,
            "next_runs": next_runs(journal),
        }


#: the apply log fields `palyra-ops status` shows besides the time
_STATUS_APPLY_KEYS = ("git_commit", "git_dirty", "added", "changed", "deleted")


__all__ = [
    "EXIT_CODES",
    "SyncState",
    "directory_status",
    "exit_code",
    "file_states",
    "last_apply",
    "next_runs",
    "overall",
    "watcher_status",
]
