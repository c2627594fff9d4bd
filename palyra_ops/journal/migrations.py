"""Versioned, automatic schema migrations.

Migrations are tracked by *name* in `journal_migrations` and applied in list order, each in its own
transaction together with its bookkeeping row, so a crash mid-migration leaves the journal at the
previous version. Naming instead of a single integer lets areas (memory, skills) own their tables
without renumbering each other's steps.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from palyra_ops.journal import memory as _memory

Migration = tuple[str, Callable[[sqlite3.Connection], None]]


def _core(conn: sqlite3.Connection) -> None:
    stmts = [
        """CREATE TABLE journal_meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        # Desired-state objects (Routine, Channel, Policy) as last written by apply or the API.
        # `hash` is the current body; `applied_hash` is the body apply last wrote, so a difference
        # means the object drifted (was changed outside git) since then.
        """CREATE TABLE journal_resources (
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            body TEXT NOT NULL,
            hash TEXT NOT NULL,
            applied_hash TEXT,
            managed INTEGER NOT NULL DEFAULT 0,
            source_file TEXT,
            created_at_ms INTEGER NOT NULL,
            updated_at_ms INTEGER NOT NULL,
            PRIMARY KEY (kind, name)
        )""",
        # Runtime state of every routine; scheduled ones carry next_run_at_unix_ms.
        """CREATE TABLE journal_cron_jobs (
            routine_id TEXT PRIMARY KEY,
            trigger_kind TEXT NOT NULL,
            enabled INTEGER NOT NULL DEFAULT 1,
            approval_state TEXT NOT NULL DEFAULT 'none',
            schedule_fingerprint TEXT,
            anchor_ms INTEGER,
            next_run_at_unix_ms INTEGER,
            last_nominal_ms INTEGER,
            last_run_id TEXT,
            last_status TEXT,
            last_started_at_ms INTEGER,
            last_finished_at_ms INTEGER,
            updated_at_ms INTEGER NOT NULL
        )""",
        "CREATE INDEX journal_cron_jobs_next_run ON journal_cron_jobs (next_run_at_unix_ms)",
        # One row per attempt. occurrence_key (routine + nominal UTC instant) is unique so an
        # occurrence can be claimed once per journal, across crashes and several schedulers.
        """CREATE TABLE journal_cron_runs (
            run_id TEXT PRIMARY KEY,
            routine_id TEXT NOT NULL,
            occurrence_key TEXT UNIQUE,
            dedupe_key TEXT,
            scheduled_at_ms INTEGER,
            trigger_kind TEXT NOT NULL,
            trigger_payload TEXT,
            attempt INTEGER NOT NULL DEFAULT 1,
            first_run_id TEXT,
            status TEXT NOT NULL,
            reason TEXT,
            policy_rule TEXT,
            created_at_ms INTEGER NOT NULL,
            started_at_ms INTEGER,
            finished_at_ms INTEGER,
            not_before_ms INTEGER,
            output TEXT,
            delivery_status TEXT,
            delivery_error TEXT,
            skipped_count INTEGER NOT NULL DEFAULT 0,
            skipped_times TEXT,
            daemon_id TEXT
        )""",
        "CREATE INDEX journal_cron_runs_routine ON journal_cron_runs (routine_id, created_at_ms)",
        "CREATE INDEX journal_cron_runs_status ON journal_cron_runs (status)",
        "CREATE UNIQUE INDEX journal_cron_runs_dedupe ON journal_cron_runs (routine_id, dedupe_key)"
        " WHERE dedupe_key IS NOT NULL AND attempt = 1",
        """CREATE TABLE journal_apply_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            applied_at_ms INTEGER NOT NULL,
            serial INTEGER NOT NULL,
            source_dir TEXT,
            added INTEGER NOT NULL,
            changed INTEGER NOT NULL,
            deleted INTEGER NOT NULL,
            git_commit TEXT,
            git_dirty INTEGER,
            origin TEXT NOT NULL DEFAULT 'cli'
        )""",
        """CREATE TABLE journal_approvals (
            approval_id TEXT PRIMARY KEY,
            routine_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            run_id TEXT,
            state TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL,
            decided_at_ms INTEGER,
            decided_by TEXT
        )""",
        "CREATE INDEX journal_approvals_state ON journal_approvals (state)",
        # System events the daemon emitted, kept for status/debugging.
        """CREATE TABLE journal_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            payload TEXT,
            created_at_ms INTEGER NOT NULL
        )""",
    ]
    for stmt in stmts:
        conn.execute(stmt)


def _daemon_runtime(conn: sqlite3.Connection) -> None:
    """Scheduler/gateway bookkeeping (task E).

    `next_nominal_ms` is the schedule instant behind a jittered `next_run_at_unix_ms` (the claim key
    uses the nominal instant); `received_at_ms` is when the gateway got the loopback call (dispatch
    lag); `approval_id` links an awaiting_approval run to its approval.
    """
    conn.execute("ALTER TABLE journal_cron_jobs ADD COLUMN next_nominal_ms INTEGER")
    conn.execute("ALTER TABLE journal_cron_runs ADD COLUMN received_at_ms INTEGER")
    conn.execute("ALTER TABLE journal_cron_runs ADD COLUMN approval_id TEXT")
    conn.execute("CREATE INDEX journal_cron_jobs_trigger ON journal_cron_jobs (trigger_kind)")


def _pause(conn: sqlite3.Connection) -> None:
    """Pause is runtime state of a job (SPEC §12), never part of the routine's definition: plan
    shows it, apply leaves it alone. `consecutive_failures` counts final failures since the last
    success, for `policies.pause_after_failures`."""
    for col in ("paused INTEGER NOT NULL DEFAULT 0", "pause_note TEXT", "paused_by TEXT", "paused_at_ms INTEGER",
                "consecutive_failures INTEGER NOT NULL DEFAULT 0"):
        conn.execute(f"ALTER TABLE journal_cron_jobs ADD COLUMN {col}")


def _last_success(conn: sqlite3.Connection) -> None:
    """When the routine last succeeded: the gauge operators alert on (kube-state-metrics'
    `kube_cronjob_status_last_successful_time`), written with the run's final transition."""
    conn.execute("ALTER TABLE journal_cron_jobs ADD COLUMN last_success_at_ms INTEGER")


def _daemons(conn: sqlite3.Connection) -> None:
    """The daemon registry (SPEC §11): each daemon's id, where it runs, and its heartbeat and lease,
    so a peer can tell a dead daemon's runs from a live one's. On SQLite one daemon at a time holds
    the journal (its lock file), but the table is the same so every command reads it the same."""
    conn.execute("""CREATE TABLE journal_daemons (
        daemon_id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        address TEXT,
        version TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        heartbeat_at_ms INTEGER NOT NULL,
        lease_ms INTEGER NOT NULL
    )""")
    conn.execute("CREATE INDEX journal_cron_runs_daemon ON journal_cron_runs (daemon_id) WHERE status IN ('accepted', 'running')")


def _run_lease(conn: sqlite3.Connection) -> None:
    """A run's lease beyond its owner (SPEC §11, docs/ha.md): `fence` is the token of the daemon
    holding the run (every write of the holder carries it; a peer that reaps or takes the run over
    changes it, so a stalled holder's late writes are refused), `cancel_reason` a peer's request to
    cancel it (`replace` across daemons), `queued_at_ms` marks the one run `queue_one` keeps pending.
    A run `accepted` with no owner (`daemon_id` NULL) and a `not_before_ms` is parked in the journal
    (a retry wait or a quiet-hours deferral of a daemon that died): any daemon takes it when due."""
    for col in ("fence TEXT", "cancel_reason TEXT", "queued_at_ms INTEGER"):
        conn.execute(f"ALTER TABLE journal_cron_runs ADD COLUMN {col}")
    conn.execute("CREATE INDEX journal_cron_runs_parked ON journal_cron_runs (not_before_ms)"
                 " WHERE status = 'accepted' AND daemon_id IS NULL")


def all_migrations() -> list[Migration]:
    """Every migration in apply order; area-owned lists are appended after the core."""
    migrations: list[Migration] = [("0001_core", _core), ("0002_daemon_runtime", _daemon_runtime),
                                   ("0003_pause", _pause), ("0004_last_success", _last_success),
                                   ("0005_daemons", _daemons), ("0006_run_lease", _run_lease)]
    migrations.extend(_wrap(m) for m in _memory.MIGRATIONS)
    return migrations


def _wrap(m: tuple[str, Callable]) -> Migration:
    """Area migrations may take a sqlite_utils.Database; give them one over our connection."""
    name, fn = m

    def run(conn: sqlite3.Connection) -> None:
        import inspect

        import sqlite_utils

        params = list(inspect.signature(fn).parameters.values())
        ann = params[0].annotation if params else None
        if ann is sqlite3.Connection or ann == "sqlite3.Connection":
            fn(conn)
        else:
            fn(sqlite_utils.Database(conn))

    return name, run
