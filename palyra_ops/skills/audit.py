"""Periodic re-audit of installed skills, driven by the daemon's scheduler loop.

The schedule is derived from the index itself (each skill's `last_audit_at`), not from process
memory, so a daemon that restarts every few hours still audits every `interval`, and a fresh install
(which counts as an audit) does not trigger a redundant one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from palyra_ops.clock import Clock, SystemClock
from palyra_ops.durations import parse_duration_ms
from palyra_ops.errors import PalyraError
from palyra_ops.skills.store import AuditResult, SkillStore

DEFAULT_REAUDIT_INTERVAL_MS = 6 * 3_600_000
QUARANTINE_EVENT = "skill.quarantined"

#: emit(event_name, payload): the daemon's system-event sink
Emit = Callable[[str, dict[str, Any]], None]


def parse_reaudit_interval(value: str | int | None) -> int:
    """Config value → milliseconds; `0` (or "0") disables the re-audit, None means the 6 h default."""
    if value is None:
        return DEFAULT_REAUDIT_INTERVAL_MS
    if value == 0 or value == "0":
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    try:
        return parse_duration_ms(str(value))
    except ValueError as exc:
        raise PalyraError(f"skills re-audit interval: {exc} (0 disables)") from None


class ReAuditor:
    def __init__(
        self,
        store: SkillStore,
        *,
        interval_ms: int = DEFAULT_REAUDIT_INTERVAL_MS,
        clock: Clock | None = None,
        emit: Emit | None = None,
    ) -> None:
        self.store = store
        self.interval_ms = interval_ms
        self.clock = clock or store.clock or SystemClock()
        self.emit = emit

    def next_due_ms(self) -> int | None:
        """When the next audit is due (the scheduler sleeps until then); None when disabled or empty."""
        if self.interval_ms <= 0:
            return None
        times = [s.last_audit_at_ms if s.last_audit_at_ms is not None else s.installed_at_ms for s in self.store.list()]
        if not times:
            return None
        return min(times) + self.interval_ms

    def tick(self) -> list[AuditResult] | None:
        """Run the audit if it is due now; returns its results, or None when nothing was due."""
        due = self.next_due_ms()
        if due is None or due > self.clock.now_ms():
            return None
        return self.run_now()

    def run_now(self) -> list[AuditResult]:
        """Audit every skill now and emit `skill.quarantined` for each one newly quarantined."""
        results = self.store.audit()
        if self.emit is not None:
            for r in results:
                if r.newly_quarantined:
                    skill = self.store.get(r.skill_id)
                    self.emit(QUARANTINE_EVENT, {
                        "skill_id": r.skill_id,
                        "reason": r.reason,
                        "version": skill.version if skill else None,
                        "publisher": skill.publisher if skill else None,
                        "sha256": skill.module_sha256 if skill else None,
                    })
        return results
