"""What the HTTP layer needs from a running daemon, in one object.

Routes receive this through `request.app.state.ctx`; keeping it a plain container (no logic) keeps
`server` thin and lets tests build an app around a real journal and gateway. Every service is a
named, typed field (None when the daemon runs without it), so a route that needs the memory service
says so in its types instead of looking up a string key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from palyra_ops.clock import Clock
from palyra_ops.journal import Journal

if TYPE_CHECKING:
    from palyra_ops.config import DaemonConfig
    from palyra_ops.gateway import Gateway
    from palyra_ops.maintenance import MaintenanceTasks
    from palyra_ops.membership import Membership
    from palyra_ops.memory.backfill_process import OutOfProcessBackfill
    from palyra_ops.memory.service import MemoryService
    from palyra_ops.scheduler import Scheduler
    from palyra_ops.skills.sandbox import SkillRunner
    from palyra_ops.skills.store import SkillStore
    from palyra_ops.watcher import Watcher


@dataclass
class DaemonContext:
    journal: Journal
    clock: Clock
    config: DaemonConfig
    token: str  # bearer token of the console API (SPEC §6)
    internal_token: str  # credential the scheduler's loopback calls carry as system:daemon
    gateway: Gateway | None = None
    scheduler: Scheduler | None = None
    watcher: Watcher | None = None  # only with --watch
    base_url: str = ""
    started_at_ms: int = 0
    daemon_id: str | None = None
    #: this daemon's place in the journal's daemon registry (heartbeat, reaper; SPEC §11)
    membership: Membership | None = None
    #: runs start-up recovery finalized (they were active when the previous daemon stopped)
    recovered_runs: list[str] = field(default_factory=list)
    # optional services: the daemon runs without any of them
    maintenance: MaintenanceTasks | None = None
    #: live health of the maintenance tasks, by task name (the maintenance runner's own dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory: MemoryService | None = None
    memory_backfill: OutOfProcessBackfill | None = None
    skill_store: SkillStore | None = None
    skill_runner: SkillRunner | None = None
