"""Does the journal match the directory? Synced / OutOfSync / Invalid, the last apply, the next runs.

One answer for the three places that show it (SPEC §3, §5 item 5, §7): `palyra-ops status`
(`directory_status`), the directory watcher (`file_states` + `overall`, after each reconcile) and the
console API's `GET /console/v1/system/status` (`system_status`). They differ only in what they
start from: status plans read-only, the watcher has just applied and reports what it left alone
(invalid files kept at their last good version, drift), the API reads the journal and asks the
scheduler and watcher for their own state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from palyra_ops.clock import Clock, SystemClock, rfc3339
from palyra_ops.errors import JournalError, PalyraError
from palyra_ops.journal.faults import redact
from palyra_ops.journal.records import DaemonRecord
from palyra_ops.views.api import apply_log_view

if TYPE_CHECKING:
    from palyra_ops.journal import JobRecord, Journal
    from palyra_ops.plan import Change
    from palyra_ops.source import SkillsUnchecked, SourceSet

#: how many upcoming runs `status` lists
NEXT_RUNS = 5


class SyncState(StrEnum):
    """Per-file and overall states (SPEC §5 item 5). `Error` only overall: the directory could not be
    planned at all (missing, emptied, unreadable) and nothing was changed; `Pending`: not looked yet."""

    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    INVALID = "Invalid"
    ERROR = "Error"
    PENDING = "Pending"


#: a file's entry: {"state": SyncState, "diagnostics": [text], "objects": ["Kind/name"]}
FileState = dict[str, Any]


def overall(files: Mapping[str, FileState], pending: Iterable[Change] = ()) -> SyncState:
    """The directory's state: Invalid when any file is; else OutOfSync when any file is or a change is
    still pending (a delete has no file left to mark); else Synced."""
    states = {f["state"] for f in files.values()}
    if SyncState.INVALID in states:
        return SyncState.INVALID
    if SyncState.OUT_OF_SYNC in states or any(True for _ in pending):
        return SyncState.OUT_OF_SYNC
    return SyncState.SYNCED


def file_states(
    source: SourceSet,
    *,
    kept: Iterable[Change] = (),
    pending: Iterable[Change] = (),
    unreadable: Mapping[str, str] | None = None,
    shown_root: str | None = None,
) -> dict[str, FileState]:
    """Each routine file's state, sorted by path.

    `kept`: objects that keep their last good version (their invalid or unreadable file lists them,
    though it could not be read for names); `pending`: changes the journal still lacks (their file
    is OutOfSync); `unreadable`: paths that exist but are no routine file (a FIFO, a directory), with
    why — Invalid, like a file that fails validation.
    """
    files: dict[str, FileState] = {
        rel: {
            "state": SyncState.SYNCED if rep.ok else SyncState.INVALID,
            "diagnostics": [d.format() for d in rep.diagnostics],
            "objects": [f"{k}/{n}" for k, n in rep.names],
        }
        for rel, rep in source.files.items()
    }
    kept = list(kept)
    for c in kept:
        if c.source_file in files and f"{c.kind}/{c.name}" not in files[c.source_file]["objects"]:
            files[c.source_file]["objects"].append(f"{c.kind}/{c.name}")
    for rel, why in (unreadable or {}).items():
        shown = str(Path(shown_root or str(source.root)) / rel)
        names = [f"{c.kind}/{c.name}" for c in kept if c.source_file == rel]
        files[rel] = {"state": SyncState.INVALID, "diagnostics": [f"{shown}: {why}"], "objects": names}
    for c in pending:
        if c.source_file in files and files[c.source_file]["state"] == SyncState.SYNCED:
            files[c.source_file]["state"] = SyncState.OUT_OF_SYNC
    return dict(sorted(files.items()))


# -- `palyra-ops status` ----------------------------------------------------------------------------


def directory_status(
    directory: Path,
    journal_path: Path | str,
    *,
    known_skills: set[str] | SkillsUnchecked | None = None,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """Everything `palyra-ops status` shows about the directory and the journal, as data (its
    `--output json`, docs/gitops.md); read-only: plans, never applies, creates no file."""
    from palyra_ops.reconcile import load_for_plan, plan_loaded

    report: dict[str, Any] = {"dir": str(directory), "journal": redact(str(journal_path))}
    # loaded once, for the file states and the plan alike, through the caches apply and the daemon
    # keep (read-only): status costs what a no-op plan costs, not a cold validation on top of it
    loaded = load_for_plan(directory, journal_path, known_skills=known_skills, read_only=True)
    source = loaded.source
    report["warnings"] = [w.format() for w in source.warnings]
    # only the states: `file_states` also lists every file's objects, which status does not show
    files = {rel: {"state": SyncState.SYNCED if rep.ok else SyncState.INVALID} for rel, rep in source.files.items()}
    if overall(files) is SyncState.INVALID or not source.ok:
        report["state"] = SyncState.INVALID
        report["invalid_files"] = [
            {"file": r.display, "diagnostics": [d.format() for d in r.diagnostics]}
            for r in source.files.values() if not r.ok
        ]
        report["diagnostics"] = [d.format() for d in source.diagnostics]
    else:
        try:
            # status shows the source's warnings, not the plan's (herds, paused routines): not computed
            plan = plan_loaded(loaded, directory, journal_path, allow_empty=True, warn=False)
        except JournalError:
            raise  # the journal is at fault, not the directory: one line and exit 1, like every command
        except PalyraError as exc:
            report["state"] = SyncState.INVALID
            report["error"] = exc.message
        else:
            pending = [c for c in plan.changes if c.is_change]
            report["state"] = overall(files, pending)
            report["out_of_sync"] = [
                {"kind": c.kind, "name": c.name, "action": c.action, "reason": c.reason, "file": c.source_file}
                for c in pending
            ]
            report["unmanaged"] = [c.name for c in plan.changes if c.action == "unmanaged"]
    report.update(journal_history(journal_path, jobs=loaded.snapshot.jobs))
    report["checked_at"] = rfc3339((clock or SystemClock()).now_ms())
    return report


def journal_history(journal_path: Path | str, jobs: Mapping[str, JobRecord] | None = None) -> dict[str, Any]:
    """The last apply (time, commit, counts) and the next runs; nothing yet without a journal.

    `jobs`: every job row, when the caller read them already (status: the snapshot it planned
    against) — 100,000 rows are not read and decoded a second time to find the few paused ones.
    Used for a SQLite journal only, whose `ORDER BY routine_id` is code point order like `sorted`;
    PostgreSQL orders by the database's collation, so there the rows are listed as before.
    """
    from palyra_ops.journal import journal_exists, open_journal
    from palyra_ops.journal.faults import is_postgres_url

    if not journal_exists(journal_path):
        return {"last_apply": None, "next_runs": [], "paused": []}
    with open_journal(journal_path) as j:
        if jobs is None or is_postgres_url(journal_path):
            every = j.list_jobs()
        else:
            every = [jobs[k] for k in sorted(k for k, job in jobs.items() if job.get("paused"))]
        return {
            "serial": j.serial(),
            "last_apply": _last_apply_summary(j.last_apply()),
            "next_runs": [
                {"routine_id": job["routine_id"], "next_run_at": rfc3339(job["next_run_at_unix_ms"]),
                 "paused": bool(job.get("paused"))}
                for job in j.upcoming_jobs(NEXT_RUNS)
            ],
            # runtime state, never drift (SPEC §12): shown beside the sync state, not in it
            "paused": [{"routine_id": job["routine_id"], "note": job.get("pause_note"), "by": job.get("paused_by"),
                        "since": rfc3339(job.get("paused_at_ms"))}
                       for job in every if job.get("paused")],
        }


def _last_apply_summary(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """`status`'s short form of an apply log row (the API shows the whole row: `apply_log_view`)."""
    if not row:
        return None
    return {
        "at": rfc3339(row["applied_at_ms"]),
        "git_commit": row["git_commit"],
        "git_dirty": bool(row["git_dirty"]) if row["git_dirty"] is not None else None,
        "added": row["added"],
        "changed": row["changed"],
        "deleted": row["deleted"],
    }


# -- `GET /console/v1/system/status` ----------------------------------------------------------------


def daemon_view(d: DaemonRecord, self_id: str | None) -> dict[str, Any]:
    """A daemon of the registry as the API shows it: times in RFC 3339, liveness by the journal's clock."""
    return {"daemon_id": d["daemon_id"], "self": d["daemon_id"] == self_id, "alive": d["alive"], "host": d["host"],
            "pid": d["pid"], "address": d["address"], "version": d["version"],
            "started_at": rfc3339(d["started_at_ms"]), "heartbeat_at": rfc3339(d["heartbeat_at_ms"]),
            "heartbeat_age_ms": d["heartbeat_age_ms"], "lease_ms": d["lease_ms"]}


def system_status(
    journal: Journal,
    *,
    now_ms: int,
    started_at_ms: int | None,
    base_url: str | None,
    scheduler: dict[str, Any] | None,
    watcher: dict[str, Any] | None,
    tasks: dict[str, Any],
    daemon_id: str | None = None,
) -> dict[str, Any]:
    """The running daemon's view: uptime, the scheduler's and the watcher's own status (the watcher's
    carries its `SyncState`), the maintenance tasks, the journal's counters, the daemons on the
    journal with their heartbeats (SPEC §11) and the last apply."""
    return {
        "now": rfc3339(now_ms),
        "daemon": {
            "daemon_id": daemon_id,
            "started_at": rfc3339(started_at_ms or None),
            "uptime_seconds": (now_ms - started_at_ms) / 1000 if started_at_ms else None,
            "base_url": base_url or None,
        },
        "daemons": [daemon_view(d, daemon_id) for d in journal.list_daemons()],
        "scheduler": scheduler,
        "watcher": watcher if watcher is not None else {"enabled": False},
        "tasks": tasks,
        "journal": {
            "path": redact(str(journal.location)),
            "lineage": journal.lineage(),
            "serial": journal.serial(),
            "runs_by_status": journal.count_runs_by_status(),
            "active_runs": len(journal.active_runs()),
            "pending_approvals": len(journal.list_approvals("pending")),
        },
        "last_apply": apply_log_view(journal.last_apply()),
    }


__all__ = ["NEXT_RUNS", "SyncState", "daemon_view", "directory_status", "file_states", "journal_history", "overall",
           "system_status"]
