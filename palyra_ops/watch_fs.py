"""The filesystem side of the directory watcher: which events matter, the watch on the directory,
and the debounce that turns a burst of events into one reconcile (docs/watcher.md).

Events never *do* anything here: a relevant one marks the tree dirty and (re)arms the debounce;
the watcher's worker (`palyra_ops.watcher`) decides when to reconcile. That is why dropped,
duplicated or reordered events cannot matter, only whether something happened at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent
    from watchdog.observers.api import BaseObserver, ObservedWatch

log = logging.getLogger("palyra_ops.watcher")

_YAML_SUFFIXES = (".yaml", ".yml")
#: after failing to set up a watch (inotify limits: fs.inotify.max_user_watches), try again this late
WATCH_RETRY_S = 30.0


# -- git -------------------------------------------------------------------------------------------


def git_lock_present(directory: Path) -> bool:
    """Is a git command (checkout, reset, merge…) rewriting the work tree right now?"""
    here = directory.absolute()
    for d in (here, *here.parents):
        dot = d / ".git"
        try:
            if dot.is_dir():
                return (dot / "index.lock").exists()
            if dot.is_file():
                return _gitdir_locked(d, dot.read_text(encoding="utf-8", errors="replace").strip())
        except OSError:
            return False
    return False


def _gitdir_locked(work_tree: Path, dot_git_text: str) -> bool:
    """A `.git` file (worktree, submodule) points at the real git directory."""
    if not dot_git_text.startswith("gitdir:"):
        return False
    gitdir = Path(dot_git_text[len("gitdir:"):].strip())
    if not gitdir.is_absolute():
        gitdir = work_tree / gitdir
    return (gitdir / "index.lock").exists()


def in_git_work_tree(directory: Path) -> bool:
    here = directory.absolute()
    return any((d / ".git").exists() for d in (here, *here.parents))


# -- which events matter --------------------------------------------------------------------------


def is_relevant(event: FileSystemEvent, root: str) -> bool:
    """Only routine files (and directories that may hold them) matter; hidden entries never do.

    Editors' swap files (`.x.yaml.swp`), backups (`x.yaml~`), temp files of an atomic save
    (`.x.yaml.tmp`, `4913`) and everything under `.git` are dropped here, so a save is one
    or two relevant events, not a dozen. The save's final rename has the routine file as its
    destination and is kept.
    """
    etype = event.event_type
    if etype in ("opened", "closed_no_write"):
        return False
    paths = [os.fsdecode(event.src_path)]
    dest = getattr(event, "dest_path", "")
    if dest:
        paths.append(os.fsdecode(dest))
    return any(_path_relevant(p, root, etype, event.is_directory) for p in paths if p)


def _path_relevant(path: str, root: str, etype: str, is_directory: bool) -> bool:
    if path == root:
        return etype in ("deleted", "moved", "created")
    if not path.startswith(root + os.sep):
        return False
    parts = path[len(root) + 1:].split(os.sep)
    if any(part.startswith(".") for part in parts):
        return False
    if is_directory:
        return etype != "modified"
    if parts[-1].endswith(_YAML_SUFFIXES):
        return True
    return etype in ("created", "moved") and os.path.islink(path)  # a symlink to a directory of routines


# -- the debounce ---------------------------------------------------------------------------------


class Debounce:
    """"Something changed" plus when: due `debounce_s` after the last event, and at the latest
    `max_delay_s` after the first, so a never-ending stream of events cannot postpone a reconcile
    for ever. `cond` also wakes the worker for other reasons (stop)."""

    def __init__(self, debounce_s: float, max_delay_s: float) -> None:
        self.debounce_s = debounce_s
        self.max_delay_s = max_delay_s
        self.cond = threading.Condition()
        self.dirty = False
        self._reasons: set[str] = set()
        self._first = 0.0
        self._last = 0.0

    def mark(self, reason: str, *, immediate: bool = False) -> None:
        now = time.monotonic()
        with self.cond:
            if not self.dirty:
                self._first = now
                self.dirty = True
            self._last = now
            if immediate:
                self._first = now - self.max_delay_s
            self._reasons.add(reason)
            self.cond.notify_all()

    def force(self, reason: str, now: float) -> None:
        """Due at once (a periodic rescan, a retry); the caller holds `cond`."""
        self.dirty, self._first, self._last = True, now - self.max_delay_s, now
        self._reasons.add(reason)

    def due_at(self) -> float:
        return min(self._last + self.debounce_s, self._first + self.max_delay_s)

    def postpone(self, now: float) -> None:
        """Check again after another quiet period (a git operation is still running)."""
        with self.cond:
            self._last = now
            self._first = max(self._first, now - self.max_delay_s + self.debounce_s)

    def take(self) -> list[str]:
        """Clear the dirty mark and return why it was set."""
        with self.cond:
            self.dirty = False
            reasons = sorted(self._reasons)
            self._reasons.clear()
            return reasons


# -- the watch ------------------------------------------------------------------------------------


class _Handler:
    """watchdog event handler: relevance filter and counts only."""

    def __init__(self, root: str, debounce: Debounce) -> None:
        self.root = root
        self.debounce = debounce
        self.seen = 0
        self.ignored = 0

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self.seen += 1
            if is_relevant(event, self.root):
                self.debounce.mark(f"fs:{event.event_type}")
            else:
                self.ignored += 1
        except Exception:  # pragma: no cover - a handler must never kill the observer thread
            log.exception("watcher: error while handling %r", event)


class DirectoryWatch:
    """The recursive watch on one directory, re-established when the directory appears, vanishes
    or is replaced (which silently ends an inotify watch)."""

    def __init__(self, directory: Path, debounce: Debounce) -> None:
        self.directory = directory
        self.debounce = debounce
        self.handler = _Handler(str(directory), debounce)
        self.observer: BaseObserver | None = None
        self.watch: ObservedWatch | None = None
        self.error: str | None = None
        self._watched_id: tuple[int, int] | None = None
        self._retry_at = 0.0

    def start(self) -> None:
        from watchdog.observers import Observer

        self.observer = Observer()
        self.observer.start()
        _install_overflow_hook(self.debounce)

    def stop(self, timeout: float) -> None:
        _remove_overflow_hook(self.debounce)
        if self.observer is not None:
            with contextlib.suppress(Exception):
                self.observer.stop()
                self.observer.join(timeout)
            self.observer = None
            self.watch = None
            self._watched_id = None

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.directory)
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None

    def check(self, *, reconciled: bool) -> None:
        """Follow the directory; once a reconcile has run, a change of it is a reason for another."""
        if self.observer is None:
            return
        ident = self._identity()
        if ident == self._watched_id and (ident is None or self.watch is not None):
            return
        if ident is not None and self.watch is None and time.monotonic() < self._retry_at:
            return  # watching failed recently (e.g. inotify watch limit): the periodic rescan covers us
        if self.watch is not None:
            with contextlib.suppress(Exception):
                self.observer.unschedule(self.watch)
            self.watch = None
        previous, self._watched_id = self._watched_id, ident
        if ident is not None:
            if not self._schedule():
                return
            if previous is not None or reconciled:
                log.info("watcher: %s re-created; watching it again", self.directory)
        elif previous is not None:
            log.warning("watcher: routine directory %s disappeared; keeping the last good state", self.directory)
        if reconciled:
            self.debounce.mark("directory-replaced" if ident else "directory-missing")

    def _schedule(self) -> bool:
        assert self.observer is not None
        try:
            self.watch = self.observer.schedule(self.handler, str(self.directory), recursive=True)
        except OSError as exc:
            self.error = f"cannot watch {self.directory}: {exc}; relying on the periodic rescan"
            log.warning("watcher: %s (retrying in %.0fs)", self.error, WATCH_RETRY_S)
            self._watched_id = None
            self._retry_at = time.monotonic() + WATCH_RETRY_S
            return False
        self.error = None
        return True


# -- inotify queue overflow -----------------------------------------------------------------------


class _OverflowHook(logging.Handler):
    """watchdog only *logs* an inotify queue overflow; turn that log line into a full rescan."""

    targets: set[Debounce] = set()
    lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            with self.lock:
                targets = list(self.targets)
            for d in targets:
                d.mark("inotify-overflow", immediate=True)


_overflow_hook = _OverflowHook(level=logging.WARNING)


def _install_overflow_hook(debounce: Debounce) -> None:
    with _OverflowHook.lock:
        _OverflowHook.targets.add(debounce)
    for name in ("watchdog.observers.inotify_c", "watchdog.observers.inotify"):
        lg = logging.getLogger(name)
        if _overflow_hook not in lg.handlers:
            lg.addHandler(_overflow_hook)


def _remove_overflow_hook(debounce: Debounce) -> None:
    with _OverflowHook.lock:
        _OverflowHook.targets.discard(debounce)


__all__ = ["WATCH_RETRY_S", "Debounce", "DirectoryWatch", "git_lock_present", "in_git_work_tree", "is_relevant"]
