"""Wake-ups across daemons on a PostgreSQL journal: LISTEN/NOTIFY on a connection of its own.

Writes another daemon's scheduler must see at once (apply's serial, job rows: new or changed
routines, pause and resume, approvals) send `NOTIFY palyra_journal` in their transaction, so the
server delivers it at commit and drops it on rollback. Each process keeps one listening connection
in a thread of its own (not a pooled one: behind a transaction-mode pooler LISTEN needs a session,
so point it at the server or a session pooler) and calls the scheduler's wake-up per notification.
Polling stays the fallback: the listener is lost while the server is down and comes back with
backoff; on every (re)connect it calls back once, as changes may have been missed meanwhile.

One connection carries every channel of the process (`add`): the scheduler's `palyra_journal` and
memory's `palyra_memory` (each daemon's index follows its peers' writes, `postgres_memory.py`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

log = logging.getLogger("palyra_ops.journal")

CHANNEL = "palyra_journal"
#: the statement writes add to their transaction (folded into one notification per commit)
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', '')"


class ChangeListener:
    """One LISTEN connection in a daemon thread; callbacks run in that thread (keep them short)."""

    def __init__(self, url: str, kwargs: dict[str, Any], callback: Callable[[], None],
                 channel: str = CHANNEL) -> None:
        self.url = url
        self.kwargs = {k: v for k, v in kwargs.items() if k != "row_factory"}
        self.callbacks: dict[str, list[Callable[[], None]]] = {channel: [callback]}
        #: channels added since the connection last listened (LISTEN runs in the listener's thread)
        self._new: set[str] = set()
        self._lock = threading.Lock()
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="palyra-journal-listen", daemon=True)
        self._thread.start()

    def add(self, channel: str, callback: Callable[[], None]) -> None:
        """Also call `callback` on `channel` (listened within 0.5 s; called once when it is)."""
        with self._lock:
            self.callbacks.setdefault(channel, []).append(callback)
            self._new.add(channel)

    def _run(self) -> None:
        backoff = 0.25
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, **self.kwargs) as conn:
                    with self._lock:
                        channels, self._new = list(self.callbacks), set()
                    for channel in channels:
                        conn.execute(f"LISTEN {channel}")
                    self.listening.set()
                    backoff = 0.25
                    self._call(*channels)  # changes made while we were not listening
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5):
                            self._call(n.channel)
                        with self._lock:
                            added, self._new = sorted(self._new), set()
                        for channel in added:
                            conn.execute(f"LISTEN {channel}")
                        self._call(*added)
            except psycopg.Error as exc:
                if self.listening.is_set():
                    log.debug("journal listener lost (%s); polling until it reconnects", exc)
            self.listening.clear()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _call(self, *channels: str) -> None:
        with self._lock:
            todo = [cb for ch in channels for cb in self.callbacks.get(ch, ())]
        for callback in todo:
            try:
                callback()
            except Exception:  # the loop is closing: nothing left to wake
                log.debug("journal change callback failed", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
