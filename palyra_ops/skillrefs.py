"""Which skills a routine may reference: the one rule validate, plan, apply, status and the daemon share.

A `spec.skill.id` must name a skill installed under the state root. Where the state root has a
skills index (`<state_root>/skills/index.json`, made by the first `palyra-ops skills install`), a
reference to a skill it does not list is an error — in the CLI and in the daemon's watcher alike.
Where there is no index at all (a routines repository checked in its own CI, a fresh machine before
any skill is installed), the check cannot run: every skill reference is reported as a warning
naming the skill and why, and the document is accepted; its runs are then denied as "skill not
installed" until the skill is installed (docs/format.md, docs/skills.md).

Reads the index as plain JSON rather than through `SkillStore`, which would pull in wasmtime: this
runs on every `validate`.
"""

from __future__ import annotations

import json
from pathlib import Path

from palyra_ops.source import SkillsUnchecked

INDEX = Path("skills") / "index.json"


def known_skills(state_root: Path) -> set[str] | SkillsUnchecked:
    """The ids installed under `state_root`, or why they cannot be known."""
    index = Path(state_root) / INDEX
    try:
        doc = json.loads(index.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SkillsUnchecked(f"no skills index under {state_root} (install it with `palyra-ops skills install PKG`)")
    except (OSError, ValueError) as exc:
        return SkillsUnchecked(f"the skills index {index} cannot be read ({exc})")
    skills = doc.get("skills") if isinstance(doc, dict) else None
    if not isinstance(skills, dict):
        return SkillsUnchecked(f"the skills index {index} is malformed")
    return set(skills)
