"""Which git commit a routine directory was applied from, and whether it had local edits.

Recorded on every apply so `status` can answer "what is running, from which commit" — the GitOps
question. A directory outside a work tree (or no git binary) simply has no commit. The watcher also
asks whether a git command is rewriting the work tree (`git_lock_present`).
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


def in_git_work_tree(directory: Path) -> bool:
    here = Path(directory).absolute()
    return any((d / ".git").exists() for d in (here, *here.parents))


def git_lock_present(directory: Path) -> bool:
    """Is a git command (checkout, reset, merge…) rewriting the work tree right now?

    The watcher waits while `index.lock` exists, so a checkout that deletes a file and re-creates it
    under another name is seen as one move. `.git` may be a file (`gitdir: …`) in a linked worktree.
    """
    here = Path(directory).absolute()
    for d in (here, *here.parents):
        dot = d / ".git"
        try:
            if dot.is_dir():
                return (dot / "index.lock").exists()
            if dot.is_file():
                return _linked_index_lock(d, dot)
        except OSError:
            return False
    return False


def _linked_index_lock(work_tree: Path, dot_git: Path) -> bool:
    text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
    if not text.startswith("gitdir:"):
        return False
    gitdir = Path(text[len("gitdir:"):].strip())
    if not gitdir.is_absolute():
        gitdir = work_tree / gitdir
    return (gitdir / "index.lock").exists()
