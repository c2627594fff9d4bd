"""What the HTTP layer needs from a running daemon, in one object.

Routes receive this through `request.app.state.ctx`; keeping it a plain container (no logic) keeps
`server` and `console_api` thin and lets tests build an app around a real journal and gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from palyra_ops.clock import Clock
from palyra_ops.journal import Journal


@dataclass
class DaemonContext:
    journal: Journal
    clock: Clock
    config: Any  # palyra_ops.config.DaemonConfig
    token: str  # bearer token of the console API (SPEC §6)
    internal_token: str  # credential the scheduler's loopback calls carry as system:daemon
    gateway: Any = None  # palyra_ops.gateway.Gateway
    scheduler: Any = None  # palyra_ops.scheduler.Scheduler
    watcher: Any = None  # palyra_ops.watcher.Watcher (only with --watch)
    base_url: str = ""
    started_at_ms: int = 0
    extras: dict[str, Any] = field(default_factory=dict)  # "memory", "skills", ... services
