"""Which git commit a routine directory was applied from, and whether it had local edits.

Recorded on every apply so `status` can answer "what is running, from which commit" — the GitOps
question. A directory outside a work tree (or no git binary) simply has no commit.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GitInfo:
    commit: str
    dirty: bool


def _git(path: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(directory: Path) -> GitInfo | None:
    if not Path(directory).is_dir():
        return None
    commit = _git(directory, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(directory, "status", "--porcelain", "--untracked-files=normal", "--", ".")
    return GitInfo(commit=commit, dirty=bool(status))
