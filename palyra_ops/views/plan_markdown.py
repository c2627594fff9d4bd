"""A plan as GitHub-flavoured markdown, for a pull-request comment (`plan --output markdown`).

Like `plan_text`, this only shapes a computed plan (the diff is `palyra_ops.plan`'s): a summary line,
the warnings (a targeted plan's first, so a reviewer cannot miss them), a table of the changes, and a
collapsed `<details>` block with each object's diff. The output is stable — no timestamps, no paths of
the machine that made it — so a CI job can compare or update its comment, and a golden file pins it.

A PR comment is capped (GitHub: 65,536 characters); past `max_chars` the table and the diffs stop with
a note saying how many objects were left out, and the markup is still closed, so a plan of 10,000
creates is still a valid comment that says what it left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from palyra_ops.model import flatten
from palyra_ops.plan import Change, Plan, PlanAction
from palyra_ops.views.plan_text import _fmt

if TYPE_CHECKING:
    from palyra_ops.errors import Diagnostic

#: a little under GitHub's 65,536-character comment limit, leaving room for the CI's own heading
MAX_CHARS = 60_000

_VERB = {PlanAction.CREATE: "create", PlanAction.UPDATE: "update", PlanAction.DELETE: "delete",
         PlanAction.MOVE: "move", PlanAction.UNMANAGED: "unmanaged (left alone)", PlanAction.NO_OP: "no-op"}
_SYMBOL = {PlanAction.CREATE: "+", PlanAction.UPDATE: "~", PlanAction.DELETE: "-", PlanAction.MOVE: "~",
           PlanAction.UNMANAGED: "?", PlanAction.NO_OP: " "}
#: characters markdown (or the HTML GitHub allows in it) would read as markup in a table cell or a heading
_INLINE = re.compile(r"([\\`*_\[\]<>|#~!&])")


def render_markdown(plan: Plan, *, max_chars: int = MAX_CHARS) -> str:
    return "".join(iter_markdown(plan, max_chars=max_chars))


def iter_markdown(plan: Plan, *, max_chars: int = MAX_CHARS) -> Iterator[str]:
    """The markdown of `plan`, a part at a time (the table and each object's diff are parts)."""
    shown = [ch for ch in plan.changes if ch.is_change or ch.action is PlanAction.UNMANAGED]
    yield f"### palyra-ops plan: {_summary_line(plan)}\n\n"
    if plan.warnings:
        yield "**Warnings**\n\n" + "".join(f"- {_inline(w)}\n" for w in plan.warnings) + "\n"
    if not shown:
        yield "".join(_unmanaged_note(plan))
        return
    budget = max_chars
    rows = ["| | Object | Action | File | Why |\n", "|---|---|---|---|---|\n"]
    for n, ch in enumerate(shown):
        row = _row(ch)
        if budget - len(row) < 0:
            rows.append(f"\n_…and {len(shown) - n} more objects not listed (comment size); "
                        "run `palyra-ops plan` for all of them._\n")
            shown = shown[:n]
            budget = 0
            break
        budget -= len(row)
        rows.append(row)
    yield "".join(rows) + "\n"
    shown = [ch for ch in shown if ch.is_change]  # an unmanaged object has no diff to show
    yield f"<details><summary>Changes per object ({len(shown)})</summary>\n\n"
    for n, ch in enumerate(shown):
        block = _diff_block(ch)
        if budget - len(block) < 0:
            more = f"{len(shown) - n} more objects" if n else f"all {len(shown)} objects"
            yield f"_…the diffs of {more} are not shown (comment size); run `palyra-ops plan` for them._\n\n"
            break
        budget -= len(block)
        yield block
    tail = "".join(_unmanaged_note(plan))
    yield "</details>\n" + (f"\n{tail}" if tail else "")


def _summary_line(plan: Plan) -> str:
    if not plan.has_changes:
        return "no changes"
    s = plan.summary
    return f"{s['add']} to add, {s['change']} to change, {s['delete']} to delete"


def _unmanaged_note(plan: Plan) -> Iterator[str]:
    """The closing lines: no changes, and the unmanaged objects plan leaves alone."""
    if not plan.has_changes:
        yield "The journal matches the directory.\n"
    n = plan.summary["unmanaged"]
    if n:
        yield f"{n} unmanaged object(s) left alone (use `--prune-unmanaged` to delete them).\n"


def _inline(text: str) -> str:
    """`text` shown as itself in a table cell, list item or summary (no markup, no HTML, one line)."""
    return _INLINE.sub(r"\\\1", " ".join(str(text).split()))


def _label(ch: Change) -> str:
    return f'{ch.kind.lower()} "{ch.name}"'


def _row(ch: Change) -> str:
    what = f'from "{ch.moved_from}"' if ch.action is PlanAction.MOVE else ""
    action = f"{_VERB[ch.action]} {what}".strip()
    drift = " (drift)" if ch.drift else ""
    return (f"| `{_SYMBOL[ch.action]}` | {_inline(_label(ch))} | {_inline(action)}{drift} | "
            f"{_inline(ch.source_file or '—')} | {_inline(ch.reason)} |\n")


def _diff_block(ch: Change) -> str:
    """One object: a heading, its fields as a `diff` code block, its next fire times and their notes."""
    if ch.action is PlanAction.MOVE:
        head = f'{ch.kind.lower()} "{ch.moved_from}" has moved to "{ch.name}"'
    else:
        head = f"{_label(ch)}: {_VERB[ch.action]}"
    lines = _diff_lines(ch)
    out = [f"#### {_inline(head)}\n\n"]
    if lines:
        body = "".join(f"{line}\n" for line in lines)
        fence = "`" * max(3, _longest_backtick_run(body) + 1)  # content can never close the fence
        out.append(f"{fence}diff\n{body}{fence}\n\n")
    s = ch.schedule
    if s:
        after = ", ".join(s.after) if s.after else "(never)"
        if ch.action is PlanAction.CREATE:
            out.append(f"Next fires ({_inline(s.timezone)}): {_inline(after)}\n\n")
        else:
            before = ", ".join(s.before) if s.before else "(none)"
            out.append(f"Next fires ({_inline(s.timezone)}): {_inline(before)} → {_inline(after)}\n\n")
        out += [f"- warning: {_inline(note)}\n" for note in s.notes]
        if s.notes:
            out.append("\n")
    return "".join(out)


def _diff_lines(ch: Change) -> list[str]:
    """`+`/`-` lines GitHub colours: a create's fields, an update's old and new values, a delete's fields."""
    if ch.action is PlanAction.CREATE:
        return [f"+ {p} = {_fmt(v)}" for p, v in sorted(flatten(ch.after or {}).items())]
    if ch.action in (PlanAction.UPDATE, PlanAction.MOVE):
        out: list[str] = []
        for f in ch.fields:
            out += [f"- {f.path} = {_fmt(f.before)}", f"+ {f.path} = {_fmt(f.after)}"]
        if ch.unchanged_fields:
            n = ch.unchanged_fields
            out.append(f"  ({n} unchanged field{'s' if n != 1 else ''} not shown)")
        return out
    if ch.action is PlanAction.DELETE:
        return [f"- {p} = {_fmt(v)}" for p, v in sorted(flatten(ch.before or {}).items())]
    return []


def _longest_backtick_run(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)


def invalid_markdown(diagnostics: list[Diagnostic]) -> str:
    """`plan --output markdown` for a directory that does not validate: nothing planned, every finding."""
    n = len(diagnostics)
    body = "".join(f"{d.format()}\n" for d in diagnostics)
    fence = "`" * max(3, _longest_backtick_run(body) + 1)
    return (f"### palyra-ops plan: invalid ({n} error{'s' if n != 1 else ''}; nothing planned)\n\n"
            f"{fence}\n{body}{fence}\n")


__all__ = ["MAX_CHARS", "invalid_markdown", "iter_markdown", "render_markdown"]
