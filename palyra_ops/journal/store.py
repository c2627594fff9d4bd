"""`JournalStore`: the journal as every caller outside `journal/` sees it.

The store speaks in domain records (`journal/records.py`) and owns its transactions: a caller that
must write several things atomically (apply, an approval decision) opens `transaction()` and gets an
opaque `Txn` handle it only hands back to the store's methods. No `sqlite3.Connection` (or psycopg
connection) appears in any signature outside `journal/`, so the SQLite store and the PostgreSQL
store are interchangeable behind `open_journal` and one contract suite (tests/journal_contract.py)
holds both to the same behaviour.

Records are TypedDicts rather than dataclasses deliberately (see `records.py`): the callers that
subscript rows keep working unchanged, which matters while the gateway is being split into a
package by a concurrent change. Converting rows to objects is a later, separate step.

Several methods are the daemon's hot path (`due_jobs`, `claim_occurrences`, `update_run_and_job`):
each is one transaction, so a crash leaves either all or none of what it writes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from palyra_ops.clock import Clock
from palyra_ops.errors import JournalError
from palyra_ops.journal.records import (
    ApplyLogRecord,
    ApprovalRecord,
    Claim,
    DaemonRecord,
    EventRecord,
    JobRecord,
    LostDaemon,
    ResourceWrite,
    RunContext,
    RunRecord,
    Snapshot,
    StoredResource,
)


class Txn:
    """An open write transaction of a store: opaque outside `journal/`, handed back to its methods.

    Each store subclasses it (`SQLiteTxn`, `PgTxn`) and checks that a handle it is given is its
    own (`own_txn`), so a transaction of one store passed to another fails loudly instead of
    writing outside it. A caller never looks inside.
    """

    __slots__ = ()


T = TypeVar("T", bound=Txn)


def own_txn(c: Txn, kind: type[T]) -> T:
    if not isinstance(c, kind):
        raise TypeError(f"a {type(c).__name__} was passed where this store's {kind.__name__} belongs")
    return c


class JournalStore(Protocol):
    """What a journal does, whatever holds it (a SQLite file, a PostgreSQL database)."""

    clock: Clock

    @property
    def path(self) -> Path:
        """Where the journal's side files live: the SQLite file itself (caches, index and locks
        are written beside it); for PostgreSQL a name under the state root (`faults.side_path`)."""
        ...

    @property
    def location(self) -> Path | str:
        """The journal as `open_journal` was given it (a SQLite path, a `postgresql://` URL): what
        another handle on the same journal is opened with (plan's snapshot, the watcher)."""
        ...

    # -- lifecycle and health -------------------------------------------------------------------

    def close(self) -> None: ...

    def __enter__(self) -> JournalStore: ...

    def __exit__(self, *exc: object) -> None: ...

    def transaction(self) -> AbstractContextManager[Txn]:
        """One write transaction (all or nothing); nested use joins the outer one."""
        ...

    @property
    def fault(self) -> JournalError | None:
        """Why the last writes failed, or None while they succeed (`/healthz`)."""
        ...

    @property
    def write_fault(self) -> JournalError | None: ...

    def fault_since_ms(self) -> int | None: ...

    def log_faults(self) -> None: ...

    def probe_write(self) -> None:
        """One small write that clears the fault once the journal is writable again."""
        ...

    def migrations_applied(self) -> list[str]: ...

    def data_version(self) -> int:
        """Changes when another process commits: the scheduler polls it for wake-ups."""
        ...

    def on_change(self, callback: Callable[[], None]) -> bool:
        """Have `callback` called (from another thread) soon after any process commits a change the
        scheduler must see (apply, job rows); True when the store pushes them (PostgreSQL
        LISTEN/NOTIFY: polling `data_version` is then only the fallback), False when it cannot."""
        ...

    def defer_checkpoints(self) -> None: ...

    def checkpoint(self) -> tuple[int, int, int]: ...

    def close_checkpointer(self) -> None: ...

    # -- identity (plan's stale check) ------------------------------------------------------------

    def lineage(self) -> str: ...

    def serial(self) -> int: ...

    def identity(self, c: Txn) -> tuple[str, int]: ...

    def bump_serial(self, c: Txn) -> int: ...

    # -- desired state ------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot: ...

    def get_resource(self, kind: str, name: str) -> StoredResource | None: ...

    def list_resources(self, kind: str) -> list[StoredResource]: ...

    def resource_hash(self, kind: str, name: str) -> str | None: ...

    def resource_hashes(self, kind: str, names: Sequence[str]) -> dict[str, str]:
        """The content hashes of those of `names` that exist: the scheduler checks a claimed batch's
        cached routines with one read (one round trip on PostgreSQL) instead of one per job."""
        ...

    def resources_named(self, kind: str, names: Sequence[str]) -> list[StoredResource]:
        """Those of `names` that exist, in one read (the gateway loads a batch's routines at once)."""
        ...

    def put_resource(self, c: Txn, *, kind: str, name: str, body: dict[str, Any] | str, hash: str,
                     managed: bool, applied_hash: str | None, source_file: str | None) -> None: ...

    def delete_resource(self, c: Txn, kind: str, name: str) -> None: ...

    def put_resources(self, c: Txn, rows: Iterable[ResourceWrite]) -> None:
        """`put_resource` for many objects in few statements (apply's batches), one write time."""
        ...

    def delete_resources(self, c: Txn, keys: Sequence[tuple[str, str]]) -> None:
        """`delete_resource` for many (kind, name) at once."""
        ...

    def rename_routine(self, c: Txn, old: str, new: str) -> None:
        """Give routine `old` the name `new`, keeping its history (`metadata.previous_names`): the
        object, its job row (next run, anchor, last run), its runs and their occurrence keys, and its
        approvals all follow. Raises `Conflict` when `new` is taken, or when the journal still holds
        runs of an earlier routine called `new` at the same scheduled instants (a key would repeat),
        and `NotFound` when there is no routine `old`."""
        ...

    def add_apply_log(self, c: Txn, **fields: Any) -> None: ...

    def last_apply(self) -> ApplyLogRecord | None: ...

    def apply_log(self, limit: int = 20) -> list[ApplyLogRecord]: ...

    # -- jobs ---------------------------------------------------------------------------------------

    def put_job(self, c: Txn, routine_id: str, **fields: Any) -> None: ...

    def get_job(self, routine_id: str) -> JobRecord | None: ...

    def jobs_for(self, c: Txn, routine_ids: Sequence[str]) -> dict[str, JobRecord]:
        """The job rows of `routine_ids` that exist, read inside `c` in one query."""
        ...

    def put_jobs(self, c: Txn, writes: Sequence[tuple[str, dict[str, Any]]], existing: Collection[str]) -> None:
        """`put_job` for many routines: those in `existing` updated with only their given fields, the
        others inserted."""
        ...

    def update_job(self, routine_id: str, **fields: Any) -> None: ...

    def list_jobs(self) -> list[JobRecord]: ...

    def job_times(self) -> list[tuple[str, int | None, int | None]]:
        """(routine_id, last_success_at_ms, next_run_at_unix_ms) of every job, by name: the per-routine
        gauges of `/metrics`, read on every scrape, so three columns and not whole records."""
        ...

    def jobs_by_trigger(self, kinds: tuple[str, ...]) -> list[JobRecord]: ...

    def due_jobs(self, now_ms: int, limit: int = 64) -> list[JobRecord]: ...

    def next_due_ms(self) -> int | None: ...

    def upcoming_jobs(self, limit: int = 10) -> list[JobRecord]: ...

    def count_due(self, now_ms: int) -> int: ...

    def judged_now_ms(self, local_ms: int) -> int:
        """Now as the journal judges due times, given the caller's clock reading: that reading on
        SQLite (one daemon, one clock); on PostgreSQL the earlier of it and the database's clock, so
        a daemon whose clock runs ahead neither plans nor claims occurrences early (SPEC §11)."""
        ...

    def claim_occurrences(self, claims: list[Claim]) -> list[list[str | None] | None]:
        """Claim due occurrences in one transaction: per job a compare-and-set on its expected next
        instant, each run inserted on its unique occurrence key; None for a job someone else moved,
        None in the list for an occurrence already claimed."""
        ...

    def claim_due(self, now_ms: int, limit: int,
                  plan: Callable[[list[JobRecord]], list[Claim]]) -> tuple[int, list[list[str | None] | None]]:
        """`due_jobs` and `claim_occurrences` in one transaction: the due jobs (at most `limit`) are
        read and held, `plan` turns them into claims (it may read the journal), and those are
        claimed; (how many jobs were due, the claims' results as `claim_occurrences` gives them).
        On PostgreSQL the due jobs are locked `FOR UPDATE SKIP LOCKED`, so daemons claiming at once
        take disjoint batches (a burst is shared, not taken by whichever looks first), in two or
        three round trips where the read and the claim took four."""
        ...

    # -- runs ---------------------------------------------------------------------------------------

    def insert_run(self, c: Txn | None = None, **fields: Any) -> str | None: ...

    def update_run(self, run_id: str, c: Txn | None = None, **fields: Any) -> None: ...

    def update_run_and_job(self, run_id: str, run_fields: dict[str, Any], routine_id: str | None,
                           job_fields: dict[str, Any] | None, *, fence: str | None = None) -> bool:
        """A run transition and its job's summary in one commit. Fenced: a run that is already final
        (reaped by a peer as `daemon_lost`), or whose fencing token is not `fence` (None: it has
        none; a peer that took the run over set its own), is left as it is, job included, and False
        returned. The holder of a run writes its token with the run's start (`fence` in the fields)."""
        ...

    def fence_holds(self, run_id: str, fence: str | None) -> bool:
        """Whether the run is still active and held with token `fence`: checked just before a run's
        output is delivered, so a daemon stalled past its lease whose run a peer reaped (or took over)
        does not deliver it (docs/ha.md, fencing)."""
        ...

    def start_exclusive(self, run_id: str, routine_id: str, now_ms: int) -> str | None:
        """`forbid` across daemons: mark `run_id` running unless another run of the routine is busy
        (running, or waiting between retry attempts), both in one transaction under the routine's
        lock (two daemons cannot both start one). None when it now runs, else the id of the busy run
        that forbids it (this one is left as it was)."""
        ...

    # -- runs handed between daemons (SPEC §11; journal/*_handover.py) --------------------------------

    def request_cancel(self, routine_id: str, reason: str, *, daemon_id: str) -> list[str]:
        """`replace` across daemons: mark the routine's busy runs (running, or waiting between retry
        attempts) held by daemons other than `daemon_id` to be cancelled with `reason`; their holders
        cancel them on their next heartbeat. The ids marked (none twice)."""
        ...

    def cancel_requests(self, daemon_id: str) -> list[tuple[str, str]]:
        """(run id, reason) of the active runs of `daemon_id` a peer asked it to cancel."""
        ...

    def queue_exclusive(self, run_id: str, routine_id: str, now_ms: int, *, busy: bool = False) -> tuple[str, str | None]:
        """`queue_one` across daemons, in one transaction under the routine's lock: ("skipped", id)
        when another run of the routine is already queued (on any daemon); else ("started", None) —
        `run_id` now runs — when no run of the routine is busy and the caller is not (`busy`: it
        has one in process); else ("queued", the busy run's id or None): `run_id` is marked queued."""
        ...

    def defer_exclusive(self, run_id: str, routine_id: str, until_ms: int, *, fence: str,
                        received_at_ms: int | None = None) -> str | None:
        """Quiet hours `defer` across daemons, in one transaction under the routine's lock: the id of
        the routine's run already deferred to `until_ms` (the same window's end, on any daemon) — this
        one is left as it was — or None once `run_id` is parked until then, held with `fence`."""
        ...

    def take_parked(self, daemon_id: str, now_ms: int, limit: int = 64) -> list[RunRecord]:
        """Take the parked runs due by `now_ms` that no daemon holds (handed over by the reaper or
        start-up recovery): each now held by `daemon_id` with a new fencing token (in the records
        returned), oldest due first; two callers at once get disjoint runs."""
        ...

    def next_parked_ms(self) -> int | None:
        """When the earliest parked run no daemon holds is due, or None."""
        ...

    def set_dedupe_key(self, run_id: str, dedupe_key: str) -> str | None: ...

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def run_context(self, run_id: str, routine_id: str) -> RunContext:
        """`get_run`, `get_job`, `resource_hash("Routine", …)` and `serial` in one read: what the
        gateway looks at as a claimed run arrives (one round trip on PostgreSQL instead of four)."""
        ...

    def run_contexts(self, pairs: Sequence[tuple[str, str]]) -> dict[str, RunContext]:
        """`run_context` for each (run id, routine id) of a claimed batch, keyed by run id, in one
        read (one round trip on PostgreSQL for the whole batch instead of one per run)."""
        ...

    def list_runs(self, routine_id: str | None = None, *, status: str | None = None, limit: int = 50,
                  before_run_id: str | None = None) -> list[RunRecord]: ...

    def active_runs(self, routine_id: str | None = None) -> list[RunRecord]: ...

    def count_runs_by_status(self) -> dict[str, int]: ...

    def finalize_orphans(self, reason: str, now_ms: int, daemon_id: str | None = None, *,
                         spare_live: bool = False, release_parked: bool = False) -> list[RunRecord]:
        """Start-up recovery: fail the active runs not of `daemon_id`; with `spare_live`, not of any
        daemon whose lease holds either (several daemons on one journal, SPEC §11). With
        `release_parked` the parked ones among them (`records.is_parked`: retry waits, deferrals)
        are handed to any daemon (`take_parked`) instead of failed. Returns the failed runs."""
        ...

    def runs_with_occurrences(self, routine_id: str) -> list[RunRecord]: ...

    def claimed_instants(self, routine_id: str, start_ms: int, end_ms: int) -> set[int]:
        """Nominal instants in [start_ms, end_ms] that already have a run on their occurrence key
        (scheduled, skipped or backfilled): what a backfill must not run again."""
        ...

    def runs_in_order(self, routine_id: str | None = None) -> list[RunRecord]: ...

    # -- the daemon registry (SPEC §11; journal/daemons.py) -----------------------------------------

    def register_daemon(self, daemon_id: str, *, lease_ms: int, host: str, pid: int, address: str | None,
                        version: str) -> None:
        """Put this daemon on the journal with a fresh heartbeat (again, if a peer reaped it)."""
        ...

    def heartbeat(self, daemon_id: str, address: str | None = None) -> bool:
        """Renew the lease by the journal's clock; False when the row is gone (a peer found this
        daemon lost and reaped it): the caller registers again."""
        ...

    def deregister_daemon(self, daemon_id: str) -> None: ...

    def list_daemons(self) -> list[DaemonRecord]:
        """Every registered daemon, oldest first, with `alive` judged by the journal's clock."""
        ...

    def live_daemon_ids(self) -> set[str]: ...

    def maintenance_lock(self, name: str) -> AbstractContextManager[bool]:
        """Hold maintenance task `name` for one daemon while the block runs: True when this caller
        got it, False when a peer is running it right now (the caller skips this round). Never waits."""
        ...

    def reap_lost_daemons(self, now_ms: int, spare: str | None = None) -> list[LostDaemon]:
        """Finalize the active runs of daemons whose lease expired (`failed`, `daemon_lost: …`),
        hand their parked runs to any daemon (`LostDaemon.released`, taken with `take_parked`), and
        drop them from the registry, in one transaction; concurrent reapers get disjoint results.
        `spare`: the caller's own id (a daemon that was stalled is not its own reaper)."""
        ...

    # -- approvals and events ------------------------------------------------------------------------

    def add_approval(self, c: Txn, *, routine_id: str, kind: str, run_id: str | None = None) -> str: ...

    def cancel_pending_approvals(self, c: Txn, routine_id: str, kind: str | None = None) -> None: ...

    def decide_approval(self, c: Txn, approval_id: str, state: str, by: str | None) -> None: ...

    def get_approval(self, approval_id: str) -> ApprovalRecord | None: ...

    def pending_approval(self, routine_id: str, kind: str) -> ApprovalRecord | None: ...

    def list_approvals(self, state: str | None = "pending") -> list[ApprovalRecord]: ...

    def add_event(self, name: str, payload: dict[str, Any] | None = None) -> None: ...

    def list_events(self, limit: int = 50) -> list[EventRecord]: ...



__all__ = ["JournalStore", "Txn", "own_txn"]
