"""Last-good isolation: how an unattended reconcile (the directory watcher) filters a plan.

Kept out of `plan.py` because it is the watcher's policy, not plan semantics: `palyra-ops apply`
run by a person applies the plan as it is. The watcher, which nobody is looking at when it runs,
keeps an object's last applied version when its file is there but cannot be read (a FIFO, a
directory in its place), and leaves drift (an edit through the API) alone unless `--self-heal`.
Both come back as `Change.kept` no-ops / the drift list, for the watcher's status (docs/watcher.md).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

from palyra_ops.plan import Change, Plan, PlanAction
from palyra_ops.source import SourceSet


def without_drift(plan: Plan) -> tuple[Plan, list[Change]]:
    """The plan minus drift-only updates, and those updates (so only apply/--self-heal restore them)."""
    drift = [c for c in plan.changes if c.drift_only]
    if not drift:
        return plan, []
    return dataclasses.replace(plan, changes=[c for c in plan.changes if not c.drift_only]), drift


def unreadable_paths(directory: Path, source: SourceSet, plan: Plan) -> dict[str, str]:
    """Source files of planned deletes that still exist but were not loaded, with a reason.

    `load_directory` only reads regular files (and in-directory symlinks to them); a routine file
    replaced by a FIFO, a socket or a directory simply is not seen. For the CLI that is a delete; for
    an unattended watcher a path that is still there is far more likely a transient or broken state
    than an intent to prune, so its objects get the same last-good protection as an invalid file.
    """
    out: dict[str, str] = {}
    for c in plan.changes:
        rel = c.source_file
        if c.action is not PlanAction.DELETE or not c.managed_before or not rel or rel in source.files or rel in out:
            continue
        try:
            st = os.lstat(directory / rel)
        except OSError:
            continue  # really gone: prune
        if stat.S_ISDIR(st.st_mode):
            what = "a directory"
        elif stat.S_ISFIFO(st.st_mode):
            what = "a FIFO"
        elif stat.S_ISSOCK(st.st_mode):
            what = "a socket"
        elif stat.S_ISREG(st.st_mode):
            what = "a file that could not be read"
        else:
            what = "not a regular file"
        out[rel] = f"{what} is in place of this routine file; its objects keep their last applied version"
    return out


def protect_paths(plan: Plan, reasons: dict[str, str]) -> tuple[Plan, list[Change]]:
    """Turn planned deletes of objects from `reasons`' files into no-ops (last good stays)."""
    if not reasons:
        return plan, []
    kept: list[Change] = []
    changes: list[Change] = []
    for c in plan.changes:
        if c.action is PlanAction.DELETE and c.managed_before and c.source_file in reasons:
            c = dataclasses.replace(
                c, action=PlanAction.NO_OP, after=c.before, kept=True,
                reason=f"kept: {c.source_file} is unreadable (last good version stays)",
            )
            kept.append(c)
        changes.append(c)
    return dataclasses.replace(plan, changes=changes), kept


__all__ = ["protect_paths", "unreadable_paths", "without_drift"]
