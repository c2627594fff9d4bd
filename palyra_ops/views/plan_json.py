"""The JSON documents of `plan` and `apply` (`--output json`; stable, docs/gitops.md).

The plan document itself is the plan file's format, so it stays with the value (`Plan.to_json`,
which `plan --out` saves and `apply PLANFILE` loads); this module adds the documents around it:
the plan of an invalid directory, and what apply did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from palyra_ops.plan import FORMAT_VERSION, Plan

if TYPE_CHECKING:
    from palyra_ops.errors import Diagnostic
    from palyra_ops.reconcile import ApplyResult


def plan_document(plan: Plan) -> dict[str, Any]:
    """`plan --output json`: the same document `plan --out FILE` saves."""
    return plan.to_json()


def invalid_document(diagnostics: list[Diagnostic]) -> dict[str, Any]:
    """`plan --output json` for a directory that does not validate: nothing planned, every diagnostic."""
    return {"format_version": FORMAT_VERSION, "error": "invalid", "diagnostics": [d.to_json() for d in diagnostics]}


def apply_document(plan: Plan, result: ApplyResult | None) -> dict[str, Any]:
    """`apply --output json`: the plan when there was nothing to apply, else the counts and the commit."""
    if result is None:
        return {"applied": False, "plan": plan.to_json()}
    return {
        "applied": True,
        "added": result.added,
        "changed": result.changed,
        "deleted": result.deleted,
        "serial": result.serial,
        "git_commit": result.git.commit if result.git else None,
        "git_dirty": result.git.dirty if result.git else None,
    }


__all__ = ["apply_document", "invalid_document", "plan_document"]
