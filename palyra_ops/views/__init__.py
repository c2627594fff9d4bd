"""Views: how values leave palyra-ops, one module per subject and output format.

- `api`: the public JSON objects of runs, routines, jobs, approvals and applies (SPEC §6), shared
  by the HTTP API and every `--output json` of the CLI; re-exported here, so `views.run_view` is
  what the server and the console API call.
- `plan_text` / `plan_json`: a plan as Terraform-style text and as the documented JSON documents.
- `status_text`: `palyra-ops status` and the watcher's state as human lines.

Views only draw; what they draw is computed below them (`plan.compute_plan`, `syncstatus`).
"""

from palyra_ops.views.api import (
    REASON_STATUSES,
    STATES,
    UNSCHEDULED_TRIGGERS,
    apply_log_view,
    approval_view,
    cron_status_view,
    job_state,
    last_run_summary,
    routine_view,
    run_view,
    schedule_zone,
    zone,
)

__all__ = [
    "REASON_STATUSES",
    "STATES",
    "UNSCHEDULED_TRIGGERS",
    "apply_log_view",
    "approval_view",
    "cron_status_view",
    "job_state",
    "last_run_summary",
    "routine_view",
    "run_view",
    "schedule_zone",
    "zone",
]
