"""What users see of palyra-ops' values, one module per view (Terraform's `views/`: the diff or the
journal row is computed elsewhere, these only shape it for an output).

- `api`: the JSON objects of the console API and of every `--output json` (runs, routines, jobs,
  approvals, apply log), re-exported here so `from palyra_ops.views import run_view` keeps working;
- `plan_text`: a plan as Terraform-style text (`plan`, `apply`);
- `plan_json`: a plan, an invalid directory and an apply result as the documented JSON (docs/gitops.md).
- `plan_markdown`: a plan as markdown for a pull-request comment (`plan --output markdown`).
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
