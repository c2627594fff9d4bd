"""A plan as text, in the style people know from Terraform (SPEC §3): `+`, `~`, `-`, each changed
field as `old → new`, the next fire times before → after, and the closing `Plan: N to add, ...`.

Only draws: what changes and why is decided by `plan.compute_plan`. Colour is the caller's choice
(a terminal without NO_COLOR), so the same plan renders identically in a pipe and in tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from palyra_ops.model import flatten
from palyra_ops.plan import Change, Plan, PlanAction

_SYMBOL = {PlanAction.CREATE: "+", PlanAction.UPDATE: "~", PlanAction.DELETE: "-", PlanAction.UNMANAGED: "?",
           PlanAction.NO_OP: " "}
_COLOUR = {PlanAction.CREATE: "\033[32m", PlanAction.UPDATE: "\033[33m", PlanAction.DELETE: "\033[31m",
           PlanAction.UNMANAGED: "\033[36m"}
_VERB = {PlanAction.CREATE: "will be created", PlanAction.UPDATE: "will be updated in-place",
         PlanAction.DELETE: "will be deleted", PlanAction.UNMANAGED: "is unmanaged", PlanAction.NO_OP: "is up to date"}
_RESET = "\033[0m"
_BOLD = "\033[1m"

#: paints a line in an action's colour (or leaves it plain)
Paint = Callable[[PlanAction, str], str]


def _fmt(v: Any) -> str:
    """A value as JSON text, `(none)` for a missing one; the scalar leaves that make up nearly every
    line of a large plan skip `json.dumps`."""
    kind = type(v)
    if v is None:
        return "(none)"
    if kind is str:
        return encode_basestring(v)
    if kind is bool:
        return "true" if v else "false"
    return str(v) if kind is int else json.dumps(v, ensure_ascii=False)


def _painter(colour: bool) -> Paint:
    def paint(action: PlanAction, text: str) -> str:
        return f"{_COLOUR[action]}{text}{_RESET}" if colour and action in _COLOUR else text

    return paint


def render_text(plan: Plan, *, colour: bool = False, verbose: bool = False) -> str:
    """The whole plan; `verbose` also shows up-to-date objects and unchanged fields."""
    paint = _painter(colour)
    shown = [ch for ch in plan.changes
             if ch.is_change or ch.action == PlanAction.UNMANAGED or (verbose and ch.action == PlanAction.NO_OP)]
    out: list[str] = []
    if any(ch.is_change for ch in shown):
        out += ["palyra-ops will perform the following actions:", ""]
    for ch in shown:
        out += _change_lines(ch, paint, verbose)
        out.append("")
    out += [paint(PlanAction.UPDATE, f"Warning: {w}") for w in plan.warnings]
    if plan.warnings:
        out.append("")
    out += _summary_lines(plan, colour)
    return "\n".join(out) + "\n"


def _change_lines(ch: Change, paint: Paint, verbose: bool) -> list[str]:
    label = f'{ch.kind.lower()} "{ch.name}"'
    out = [f"  # {label} {_VERB[ch.action]} ({ch.reason})", paint(ch.action, f"  {_SYMBOL[ch.action]} {label}")]
    if ch.action == PlanAction.CREATE and ch.after is not None:
        out += [paint(ch.action, f"      + {p} = {_fmt(v)}") for p, v in sorted(flatten(ch.after).items())]
    elif ch.action == PlanAction.UPDATE:
        out += _update_lines(ch, paint, verbose)
    elif ch.action == PlanAction.DELETE and verbose and ch.before:
        out += [paint(ch.action, f"      - {p} = {_fmt(v)}") for p, v in sorted(flatten(ch.before).items())]
    return out + _schedule_lines(ch, paint)


def _update_lines(ch: Change, paint: Paint, verbose: bool) -> list[str]:
    out = [paint(ch.action, f"      ~ {f.path}: {_fmt(f.before)} → {_fmt(f.after)}") for f in ch.fields]
    if verbose and ch.before and ch.after:
        changed = {f.path for f in ch.fields}
        out += [f"        {p} = {_fmt(v)}" for p, v in sorted(flatten(ch.after).items()) if p not in changed]
    elif ch.unchanged_fields:
        n = ch.unchanged_fields
        out.append(f"        ({n} unchanged field{'s' if n != 1 else ''} hidden)")
    return out


def _schedule_lines(ch: Change, paint: Paint) -> list[str]:
    s = ch.schedule
    if s is None:
        return []
    after = ", ".join(s.after) if s.after else "(never)"
    if ch.action == PlanAction.CREATE:
        out = [f"      next fires ({s.timezone}): {after}"]
    else:
        before = ", ".join(s.before) if s.before else "(none)"
        out = [f"      next fires ({s.timezone}): {before} → {after}"]
    return out + [paint(PlanAction.UPDATE, f"      warning: {n}") for n in s.notes]


def _summary_lines(plan: Plan, colour: bool) -> list[str]:
    s = plan.summary
    if not plan.has_changes:
        out = ["No changes. The journal matches the directory."]
    else:
        line = f"Plan: {s['add']} to add, {s['change']} to change, {s['delete']} to delete."
        out = [f"{_BOLD}{line}{_RESET}" if colour else line]
    if s["unmanaged"]:
        out.append(f"{s['unmanaged']} unmanaged object(s) left alone (use --prune-unmanaged to delete them).")
    return out


__all__ = ["render_text"]
