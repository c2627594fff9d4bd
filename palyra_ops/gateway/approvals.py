"""Approval decisions: approving a `before_enable` routine enables it (from now on), approving a
`before_first_run` run sends it on through the gates after the approval gate; denying stops it.
"""

from __future__ import annotations

from typing import Any

from palyra_ops.errors import Conflict, NotFound
from palyra_ops.gateway.base import GatewayState
from palyra_ops.schedule import Schedule


class Approvals(GatewayState):
    async def decide_approval(self, approval_id: str, approve: bool, by: str) -> dict[str, Any]:
        a = self.journal.get_approval(approval_id)
        if a is None:
            raise NotFound(f"approval {approval_id!r} does not exist")
        if a["state"] != "pending":
            raise Conflict(f"approval {approval_id} is already {a['state']}")
        state = "approved" if approve else "denied"
        rid = a["routine_id"]
        routine = self.routine(rid)
        run: dict[str, Any] | None = None
        with self.journal.transaction() as c:
            self.journal.decide_approval(c, approval_id, state, by)
            if routine is not None and self.journal.get_job(rid) is not None:
                job: dict[str, Any] = {"approval_state": state}
                if a["kind"] == "before_enable":
                    job["enabled"] = int(approve and routine.enabled)
                    if approve and routine.schedule:
                        now = self.clock.now_ms()
                        s = Schedule.from_spec(routine.schedule, routine.policies.dst)
                        job.update(anchor_ms=now, next_run_at_unix_ms=s.next_after(now, now), next_nominal_ms=None)
                self.journal.put_job(c, rid, **job)
        if a["kind"] == "before_first_run" and a.get("run_id"):
            run = self.journal.get_run(a["run_id"])
            if run is not None and run["status"] == "awaiting_approval":
                dedupe = self._pending_dedupe.pop(run["run_id"], None)
                if routine is None:
                    run = self._stop(run, None, "failed", "routine_deleted: the routine no longer exists", gate="approval")
                elif approve:
                    self.journal.update_run(run["run_id"], status="accepted")
                    run["status"] = "accepted"
                    run = await self.gates_or_fail(run, routine, dedupe_key=dedupe, start="dedupe")
                else:
                    run = self._stop(run, routine, "denied", f"approval_denied: denied by {by}", gate="approval",
                                     rule="approval")
        if self.on_change is not None:
            self.on_change()
        out = dict(self.journal.get_approval(approval_id) or a)
        out["run"] = run
        return out

