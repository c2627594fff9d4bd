"""The state root's default (SPEC §4): a leaf module, so the journal (which names side files under
it) and `statepaths` (which names everything else) both read it without importing each other."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def default_root(env: Mapping[str, str] | None = None) -> Path:
    """$PALYRA_STATE_ROOT, else $XDG_STATE_HOME/palyra, else ~/.local/state/palyra (SPEC §4)."""
    env = os.environ if env is None else env
    if env.get("PALYRA_STATE_ROOT"):
        return Path(env["PALYRA_STATE_ROOT"])
    xdg = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "palyra"
