"""The filesystem side of the directory watcher: which events matter, and keeping the watch alive.

Events never *do* anything (docs/watcher.md): a relevant one only calls `on_change(reason,
immediate)`, which marks the watcher's tree dirty; the reconcile loop (`palyra_ops/watcher.py`)
decides when to act. Kept apart from that loop because its concerns are the OS's: watchdog's
threads, an inotify queue that overflows (watchdog only logs it), a watched directory deleted and
re-created (which silently ends an inotify watch), and watch limits (`fs.inotify.max_user_watches`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent
    from watchdog.observers.api import BaseObserver, ObservedWatch

log = logging.getLogger("palyra_ops.watcher")

#: on_change(reason, immediate): a relevant event (immediate: skip the debounce, e.g. an overflow)
OnChange = Callable[[str, bool], None]

_YAML_SUFFIXES = (".yaml", ".yml")
#: after failing to set up a watch (inotify limits: fs.inotify.max_user_watches), try again this late
WATCH_RETRY_S = 30.0


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
    for p in paths:
        verdict = _path_verdict(p, etype, event.is_directory, root) if p else None
        if verdict is not None:
            return verdict
    return False


def _path_verdict(p: str, etype: str, is_directory: bool, root: str) -> bool | None:
    """Whether this path of an event decides it (True/False), or None: look at the event's next path."""
    if p == root:
        return etype in ("deleted", "moved", "created")
    if not p.startswith(root + os.sep):
        return None
    parts = p[len(root) + 1:].split(os.sep)
    if any(part.startswith(".") for part in parts):
        return None
    if is_directory:
        return True if etype != "modified" else None
    if parts[-1].endswith(_YAML_SUFFIXES):
        return True
    if etype in ("created", "moved") and os.path.islink(p):
        return True  # a symlink to a directory of routines
    return None


class _Handler:
    """watchdog event handler: relevance filter only; everything else happens in the worker."""

    def __init__(self, watch: DirectoryWatch) -> None:
        self.watch = watch

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self.watch.seen += 1
            if is_relevant(event, str(self.watch.directory)):
                self.watch.on_change(f"fs:{event.event_type}", False)
            else:
                self.watch.ignored += 1
        except Exception:  # pragma: no cover - a handler must never kill the observer thread
            log.exception("watcher: error while handling %r", event)


class _OverflowHook(logging.Handler):
    """watchdog only *logs* an inotify queue overflow; turn that log line into a full rescan."""

    watches: set[DirectoryWatch] = set()
    lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            with self.lock:
                targets = list(self.watches)
            for w in targets:
                w.on_change("inotify-overflow", True)


_overflow_hook = _OverflowHook(level=logging.WARNING)


class DirectoryWatch:
    """A recursive watchdog watch on one directory that follows the directory being replaced.

    `check()` is called by the reconcile loop about once a second: it (re)establishes the watch when
    the directory appeared, vanished or was replaced (another inode), and reports that as a change.
    """

    def __init__(self, directory: Path, on_change: OnChange) -> None:
        self.directory = directory
        self.on_change = on_change
        self.observer: BaseObserver | None = None
        self.watch: ObservedWatch | None = None
        self.error: str | None = None
        self.seen = 0
        self.ignored = 0
        self._watched_id: tuple[int, int] | None = None
        self._retry_at = 0.0
        self._checked = False

    @property
    def watching(self) -> bool:
        return self.watch is not None

    def start(self) -> None:
        from watchdog.observers import Observer

        self.observer = Observer()
        self.observer.start()
        with _OverflowHook.lock:
            _OverflowHook.watches.add(self)
        for name in ("watchdog.observers.inotify_c", "watchdog.observers.inotify"):
            lg = logging.getLogger(name)
            if _overflow_hook not in lg.handlers:
                lg.addHandler(_overflow_hook)

    def stop(self, timeout: float) -> None:
        with _OverflowHook.lock:
            _OverflowHook.watches.discard(self)
        if self.observer is not None:
            with contextlib.suppress(Exception):
                self.observer.stop()
                self.observer.join(timeout)
            self.observer = None
            self.watch = None
            self._watched_id = None

    def check(self) -> None:
        """(Re)establish the inotify watch when the directory appeared, vanished or was replaced."""
        if self.observer is None:
            return
        # the first check comes before the first reconcile, which reads the directory anyway
        first, self._checked = not self._checked, True
        ident = _dir_identity(self.directory)
        if ident == self._watched_id and (ident is None or self.watch is not None):
            return
        if ident is not None and self.watch is None and time.monotonic() < self._retry_at:
            return  # watching failed recently (e.g. inotify watch limit): the periodic rescan covers us
        if self.watch is not None:
            with contextlib.suppress(Exception):
                self.observer.unschedule(self.watch)
            self.watch = None
        previous, self._watched_id = self._watched_id, ident
        if ident is not None and not self._schedule():
            return
        if ident is not None and (previous is not None or not first):
            log.info("watcher: %s re-created; watching it again", self.directory)
        elif ident is None and previous is not None:
            log.warning("watcher: routine directory %s disappeared; keeping the last good state", self.directory)
        if not first:
            self.on_change("directory-replaced" if ident else "directory-missing", False)

    def _schedule(self) -> bool:
        try:
            self.watch = self.observer.schedule(_Handler(self), str(self.directory), recursive=True)
        except OSError as exc:
            self.error = f"cannot watch {self.directory}: {exc}; relying on the periodic rescan"
            log.warning("watcher: %s (retrying in %.0fs)", self.error, WATCH_RETRY_S)
            self._watched_id = None
            self._retry_at = time.monotonic() + WATCH_RETRY_S
            return False
        self.error = None
        return True


def _dir_identity(directory: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory, None when there is no directory at that path."""
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


__all__ = ["WATCH_RETRY_S", "DirectoryWatch", "OnChange", "is_relevant"]
