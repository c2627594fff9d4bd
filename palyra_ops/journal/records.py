"""The journal's domain records: what every store hands its callers, whatever its engine.

Rows are `TypedDict`s, not dataclasses, on purpose: the gateway, scheduler, server routes and CLI
subscript rows (`run["status"]`, `job.get("anchor_ms")`) and pass them on as JSON. A TypedDict types
that existing use without changing a line of it — which matters while another change splits the
gateway into a package at the same time; turning rows into objects would have rewritten every one
of those call sites under it. A store may carry more columns than a record names (an area's own
migration adds one); they ride along at runtime.

`StoredResource` (desired state) stays a small class because plan compares hashes without decoding
bodies, and `Snapshot` is the value plan diffs against.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict

from ulid import ULID

from palyra_ops.enums import ACTIVE_STATUSES, FINAL_STATUSES


class StoredResource:
    """An object as stored; the body JSON is decoded only when looked at (plan compares hashes)."""

    __slots__ = ("kind", "name", "body_json", "hash", "applied_hash", "managed", "source_file",
                 "created_at_ms", "updated_at_ms", "_body")

    def __init__(self, kind: str, name: str, body_json: str, hash: str, applied_hash: str | None,
                 managed: bool, source_file: str | None, created_at_ms: int, updated_at_ms: int) -> None:
        self.kind = kind
        self.name = name
        self.body_json = body_json
        self.hash = hash
        self.applied_hash = applied_hash
        self.managed = managed
        self.source_file = source_file
        self.created_at_ms = created_at_ms
        self.updated_at_ms = updated_at_ms
        self._body: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"StoredResource({self.kind}/{self.name}, managed={self.managed}, hash={self.hash[:8]})"

    def _key(self) -> tuple[Any, ...]:
        return (self.kind, self.name, self.body_json, self.hash, self.applied_hash, self.managed,
                self.source_file, self.created_at_ms, self.updated_at_ms)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoredResource) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def body(self) -> dict[str, Any]:
        if self._body is None:
            self._body = json.loads(self.body_json)
        return self._body

    @property
    def drifted(self) -> bool:
        """Managed and changed outside git (API upsert, enable/disable) since the last apply."""
        return self.managed and self.applied_hash is not None and self.applied_hash != self.hash


@dataclass(frozen=True)
class Snapshot:
    """What plan diffs against: identity of the journal plus every stored object."""

    lineage: str | None
    serial: int
    resources: dict[tuple[str, str], StoredResource]
    jobs: dict[str, JobRecord]


def encode_payload(value: Any) -> str:
    """A trigger payload that is not text is stored as JSON text: a number bound as itself overflows
    SQLite's 64-bit integers (a 20-digit integer was a 500). Text is stored as it is, because rows read
    back (already JSON text) are handed on to retries as they are."""
    return json.dumps(value)


def new_id() -> str:
    return str(ULID())


class JobRecord(TypedDict):
    """Runtime state of one routine (`journal_cron_jobs`); scheduled ones carry the next due time."""

    routine_id: str
    trigger_kind: str
    enabled: int
    approval_state: str
    schedule_fingerprint: str | None
    anchor_ms: int | None
    next_run_at_unix_ms: int | None
    next_nominal_ms: int | None
    last_nominal_ms: int | None
    last_run_id: str | None
    last_status: str | None
    last_started_at_ms: int | None
    last_finished_at_ms: int | None
    updated_at_ms: int
    paused: int
    pause_note: str | None
    paused_by: str | None
    paused_at_ms: int | None
    consecutive_failures: int
    last_success_at_ms: int | None


class RunRecord(TypedDict):
    """One attempt of one trigger (`journal_cron_runs`). `occurrence_key` (routine|nominal instant)
    is unique per journal: inserting it is what claims a scheduled occurrence."""

    run_id: str
    routine_id: str
    occurrence_key: str | None
    dedupe_key: str | None
    scheduled_at_ms: int | None
    trigger_kind: str
    trigger_payload: str | None
    attempt: int
    first_run_id: str | None
    status: str
    reason: str | None
    policy_rule: str | None
    created_at_ms: int
    started_at_ms: int | None
    finished_at_ms: int | None
    not_before_ms: int | None
    output: str | None
    delivery_status: str | None
    delivery_error: str | None
    skipped_count: int
    skipped_times: str | None
    daemon_id: str | None
    received_at_ms: int | None
    approval_id: str | None
    fence: str | None
    cancel_reason: str | None
    queued_at_ms: int | None


class ApprovalRecord(TypedDict):
    approval_id: str
    routine_id: str
    kind: str
    run_id: str | None
    state: str
    created_at_ms: int
    decided_at_ms: int | None
    decided_by: str | None


class EventRecord(TypedDict):
    """A system event the daemon emitted (kept for status and debugging)."""

    id: int
    name: str
    payload: str | None
    created_at_ms: int


class DaemonRecord(TypedDict):
    """A daemon on the journal (`journal_daemons`, SPEC §11): who it is and when it last said so.

    `alive` and `heartbeat_age_ms` are judged by the journal's clock when read (the database's on
    PostgreSQL, so daemons whose clocks disagree still agree on who is gone): a daemon is gone once
    its last heartbeat is older than its own lease."""

    daemon_id: str
    host: str
    pid: int
    address: str | None
    version: str
    started_at_ms: int
    heartbeat_at_ms: int
    lease_ms: int
    alive: bool
    heartbeat_age_ms: int


class LostDaemon(NamedTuple):
    """A daemon a reaper found gone, and its runs the reaper finalized (`reap_lost_daemons`); its
    parked runs (`released`: retry waits, quiet-hours deferrals) were handed to any daemon instead."""

    daemon: DaemonRecord
    runs: list[RunRecord]
    released: Sequence[RunRecord] = ()


#: a run that holds its routine's slot, as SQL: running, or between the attempts of a retry
BUSY_SQL = "(status = 'running' OR (status = 'accepted' AND attempt > 1 AND not_before_ms IS NOT NULL))"


def is_parked(run: Mapping[str, Any]) -> bool:
    """A run waiting in the journal for its time (a retry's backoff, a quiet-hours deferral): it
    survives the daemon that parked it — a peer (or the restarted daemon) takes it when it is due."""
    return run.get("status") == "accepted" and run.get("not_before_ms") is not None


class RunContext(NamedTuple):
    """What the gateway reads as a claimed run arrives (`JournalStore.run_context`), in one look:
    the run, its routine's job row, the routine's content hash (None: no such routine) and the
    journal's serial (the policies' cache key)."""

    run: RunRecord | None
    job: JobRecord | None
    routine_hash: str | None
    serial: int


class ApplyLogRecord(TypedDict):
    id: int
    applied_at_ms: int
    serial: int
    source_dir: str | None
    added: int
    changed: int
    deleted: int
    git_commit: str | None
    git_dirty: int | None
    origin: str


class NewRun(TypedDict, total=False):
    """A run row to insert (a claim, a retry attempt): the columns of `RunRecord` the writer knows;
    the store fills the id and the rest. `skipped_times` is a list here, JSON in the row."""

    routine_id: str
    occurrence_key: str
    scheduled_at_ms: int | None
    trigger_kind: str
    trigger_payload: object
    status: str
    attempt: int
    first_run_id: str | None
    not_before_ms: int | None
    policy_rule: str | None
    daemon_id: str
    created_at_ms: int
    finished_at_ms: int
    reason: str
    skipped_count: int
    skipped_times: list[int]


class JobFields(TypedDict, total=False):
    """Columns of `JobRecord` a claim or a run transition moves (the rest stay as they are)."""

    next_run_at_unix_ms: int | None
    next_nominal_ms: int | None
    last_nominal_ms: int | None
    last_run_id: str | None
    last_status: str | None
    last_started_at_ms: int | None
    last_finished_at_ms: int | None
    consecutive_failures: int
    last_success_at_ms: int | None


#: one claim of the scheduler: (routine_id, expected next_run_at, run rows to insert, job fields)
Claim = tuple[str, int, list[NewRun], JobFields]


class ResourceWrite(NamedTuple):
    """One object for `put_resources` (apply's batched writes): `body` is its canonical JSON."""

    kind: str
    name: str
    body: str
    hash: str
    managed: bool
    applied_hash: str | None
    source_file: str | None


__all__ = [
    "BUSY_SQL",
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "ApplyLogRecord",
    "ApprovalRecord",
    "Claim",
    "DaemonRecord",
    "JobFields",
    "LostDaemon",
    "NewRun",
    "EventRecord",
    "JobRecord",
    "ResourceWrite",
    "RunRecord",
    "Snapshot",
    "StoredResource",
    "encode_payload",
    "is_parked",
    "new_id",
]
