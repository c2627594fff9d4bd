"""A plan as text, in the style people know from Terraform (`+`, `~`, `-`, `Plan: N to add, ...`).

The plan is a value (`palyra_ops.plan`); this module only shapes it for a terminal, like
Terraform's `views/plan.go`: one function per part of the picture (header, one block per object,
its fields, its next fire times, the summary), each deciding nothing about the diff itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any

from palyra_ops.model import flatten
from palyra_ops.plan import Change, Plan, PlanAction

if TYPE_CHECKING:
    from palyra_ops.reconcile import ApplyResult

_SYMBOL = {PlanAction.CREATE: "+", PlanAction.UPDATE: "~", PlanAction.DELETE: "-", PlanAction.UNMANAGED: "?",
           PlanAction.NO_OP: " ", PlanAction.MOVE: "~"}
_COLOUR = {PlanAction.CREATE: "\033[32m", PlanAction.UPDATE: "\033[33m", PlanAction.DELETE: "\033[31m",
           PlanAction.UNMANAGED: "\033[36m", PlanAction.MOVE: "\033[33m"}
_VERB = {PlanAction.CREATE: "will be created", PlanAction.UPDATE: "will be updated in-place",
         PlanAction.DELETE: "will be deleted", PlanAction.UNMANAGED: "is unmanaged", PlanAction.NO_OP: "is up to date",
         PlanAction.MOVE: "has moved"}
_RESET = "\033[0m"
_BOLD = "\033[1m"

#: colours `text` in the colour of `action` (identity without colour)
Paint = Callable[[PlanAction, str], str]


def _fmt(v: Any) -> str:
    # fast paths for the scalar leaves that make up nearly every line of a large plan
    if v is None:
        return "(none)"
    if isinstance(v, str):
        return encode_basestring(v)
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(v, ensure_ascii=False)


def _painter(colour: bool) -> Paint:
    if not colour:
        return lambda action, text: text
    return lambda action, text: f"{_COLOUR[action]}{text}{_RESET}" if action in _COLOUR else text


def render_text(plan: Plan, *, colour: bool = False, verbose: bool = False) -> str:
    return "".join(iter_text(plan, colour=colour, verbose=verbose))


def iter_text(plan: Plan, *, colour: bool = False, verbose: bool = False) -> Iterator[str]:
    """The text of `render_text`, one object's block at a time.

    The plan of 100,000 creates is ~140 MB of text: written as it is made (`palyra-ops plan` and
    apply's preview write these chunks straight to stdout), it is never held whole, nor its lines.
    """
    paint = _painter(colour)

    def shown(ch: Change) -> bool:
        return ch.is_change or ch.action is PlanAction.UNMANAGED or (verbose and ch.action is PlanAction.NO_OP)

    if any(ch.is_change for ch in plan.changes):
        yield "palyra-ops will perform the following actions:\n\n"
    for ch in plan.changes:
        if ch.action is PlanAction.CREATE and not colour:
            yield _plain_create(ch)  # nearly every block of a large first apply
        elif shown(ch):
            yield _lines(_change_block(ch, paint, verbose))
    tail = [paint(PlanAction.UPDATE, f"Warning: {w}") for w in plan.warnings]
    if plan.warnings:
        tail.append("")
    yield _lines(tail + _summary(plan, colour))


def _lines(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""


def _plain_create(ch: Change) -> str:
    """`_change_block` of a create without colour, the same text made with less per line: the 2.4
    million lines of a first apply of 100,000 routines go through here."""
    label = f'{ch.kind.lower()} "{ch.name}"'
    fmt, quote = _fmt, encode_basestring
    out = [f"  # {label} will be created ({ch.reason})", f"  + {label}"]
    after = ch.after  # decoded once (bodies are kept as JSON)
    if after is not None:
        out += [f"      + {p} = {quote(v) if v.__class__ is str else fmt(v)}" for p, v in sorted(flatten(after).items())]
    out += _schedule_lines(ch, lambda action, text: text)
    out.append("")
    return "\n".join(out) + "\n"


def _change_block(ch: Change, paint: Paint, verbose: bool) -> list[str]:
    """One object: what happens and why, its fields, its next fire times, a blank line."""
    label = f'{ch.kind.lower()} "{ch.name}"'
    if ch.action is PlanAction.MOVE:  # Terraform's wording for a `moved` block
        head = f'  # {ch.kind.lower()} "{ch.moved_from}" has moved to "{ch.name}" ({ch.reason})'
    else:
        head = f"  # {label} {_VERB[ch.action]} ({ch.reason})"
    out = [head, paint(ch.action, f"  {_SYMBOL[ch.action]} {label}")]
    after = ch.after if ch.action is PlanAction.CREATE else None  # decoded once (bodies are kept as JSON)
    if after is not None:
        out += [paint(ch.action, f"      + {p} = {_fmt(v)}") for p, v in sorted(flatten(after).items())]
    elif ch.action in (PlanAction.UPDATE, PlanAction.MOVE):
        out += _update_fields(ch, paint, verbose)
    elif ch.action is PlanAction.DELETE and verbose and ch.before:
        out += [paint(ch.action, f"      - {p} = {_fmt(v)}") for p, v in sorted(flatten(ch.before).items())]
    out += _schedule_lines(ch, paint)
    out.append("")
    return out


def _update_fields(ch: Change, paint: Paint, verbose: bool) -> list[str]:
    """Changed fields as `old → new`; the unchanged ones listed with --verbose, else counted."""
    out = [paint(PlanAction.UPDATE, f"      ~ {f.path}: {_fmt(f.before)} → {_fmt(f.after)}") for f in ch.fields]
    after = ch.after if verbose and ch.before else None
    if after:
        changed = {f.path for f in ch.fields}
        out += [f"        {p} = {_fmt(v)}" for p, v in sorted(flatten(after).items()) if p not in changed]
    elif ch.unchanged_fields:
        n = ch.unchanged_fields
        out.append(f"        ({n} unchanged field{'s' if n != 1 else ''} hidden)")
    return out


def _schedule_lines(ch: Change, paint: Paint) -> list[str]:
    """Next fire times before → after (after only for a create), and their DST/quiet-hours warnings."""
    s = ch.schedule
    if not s:
        return []
    after = ", ".join(s.after) if s.after else "(never)"
    if ch.action is PlanAction.CREATE:
        out = [f"      next fires ({s.timezone}): {after}"]
    else:
        before = ", ".join(s.before) if s.before else "(none)"
        out = [f"      next fires ({s.timezone}): {before} → {after}"]
    return out + [paint(PlanAction.UPDATE, f"      warning: {n}") for n in s.notes]


def _summary(plan: Plan, colour: bool) -> list[str]:
    s = plan.summary
    if not plan.has_changes:
        out = ["No changes. The journal matches the directory."]
    else:
        line = f"Plan: {s['add']} to add, {s['change']} to change, {s['delete']} to delete."
        out = [f"{_BOLD}{line}{_RESET}" if colour else line]
    if s["unmanaged"]:
        out.append(f"{s['unmanaged']} unmanaged object(s) left alone (use --prune-unmanaged to delete them).")
    return out


def saved_text(path: object) -> str:
    """What `plan --out FILE` adds after the plan."""
    return f"\nSaved the plan to {path}; apply it with: palyra-ops apply {path}\n"


def apply_text(result: ApplyResult) -> str:
    return f"Apply complete! Resources: {result.added} added, {result.changed} changed, {result.deleted} deleted.\n"


__all__ = ["apply_text", "iter_text", "render_text", "saved_text"]
