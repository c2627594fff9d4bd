"""Renames that keep history: `metadata.previous_names` (SPEC §12; Terraform's `moved` blocks).

Without it, renaming a routine is a delete of the old name and a create of the new one: its run
history stays behind under a name nothing has any more, and its schedule restarts from the apply
time (a daily routine renamed at 09:30 after its 09:00 run is fine; a weekly one loses its place).
With `previous_names: [old]`, plan pairs the journal's `old` with the directory's new name and shows
one `move`; apply renames the routine in the journal (`JournalStore.rename_routine`: the object, its
job row with its next run, its runs and their occurrence keys, its approvals) and then writes the new
body like any update.

A move is planned when the journal holds no routine under the new name and holds one under a
previous name that the directory no longer has (validation makes sure no live routine carries a
previous name). The first such previous name wins: `previous_names` is newest first, so after two
renames `[b, a]` finds the journal's `a` as well as its `b`. When both names are in the journal
nothing moves and the plan says why.
"""

from __future__ import annotations

from collections.abc import Mapping

from palyra_ops.journal import Snapshot
from palyra_ops.model import Resource


def find_moves(
    desired: Mapping[tuple[str, str], Resource], snapshot: Snapshot
) -> tuple[dict[str, str], list[str]]:
    """(new name → old name of every rename the plan makes, warnings about renames it cannot make)."""
    moves: dict[str, str] = {}
    claimed: set[str] = set()
    warnings: list[str] = []
    for (kind, name), res in sorted(desired.items()):
        previous = res.previous_names() if kind == "Routine" else []
        if not previous:
            continue
        if ("Routine", name) in snapshot.resources:
            warnings.extend(
                f"routine {name!r} lists {old!r} in metadata.previous_names, but the journal holds both: "
                f"nothing moves ({old!r} is planned as the directory says)"
                for old in previous if ("Routine", old) in snapshot.resources and ("Routine", old) not in desired)
            continue
        for old in previous:
            if ("Routine", old) in snapshot.resources and ("Routine", old) not in desired and old not in claimed:
                moves[name] = old
                claimed.add(old)
                break
    return moves, warnings


__all__ = ["find_moves"]
