"""The JSON documents `plan` and `apply` print with `--output json` (docs/gitops.md).

A plan's own document (what `plan --output json` prints) is `Plan.to_json()`, the plan file format
(`format_version: 1`), kept beside `Plan.from_json` so a saved plan always reads back. The
documents here wrap it or stand in for it: a directory that could not be planned, and the outcome
of an apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from palyra_ops.plan import FORMAT_VERSION, Plan

if TYPE_CHECKING:
    from palyra_ops.errors import ValidationFailed
    from palyra_ops.reconcile import ApplyResult


def invalid_document(exc: ValidationFailed) -> dict[str, Any]:
    """`plan --output json` of a directory with errors: nothing was planned."""
    return {"format_version": FORMAT_VERSION, "error": "invalid", "diagnostics": [d.to_json() for d in exc.diagnostics]}


def not_applied_document(plan: Plan) -> dict[str, Any]:
    """`apply --output json` when the plan has no changes."""
    return {"applied": False, "plan": plan.to_json()}


def applied_document(result: ApplyResult) -> dict[str, Any]:
    return {
        "applied": True,
        "added": result.added,
        "changed": result.changed,
        "deleted": result.deleted,
        "serial": result.serial,
        "git_commit": result.git.commit if result.git else None,
        "git_dirty": result.git.dirty if result.git else None,
    }


__all__ = ["applied_document", "invalid_document", "not_applied_document"]
