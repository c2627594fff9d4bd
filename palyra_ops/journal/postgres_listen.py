"""Wake-ups across daemons on a PostgreSQL journal: LISTEN/NOTIFY on a connection of its own.

Writes another daemon's scheduler must see at once (apply's serial, job rows: new or changed
routines, pause and resume, approvals) send `NOTIFY palyra_journal` in their transaction, so the
server delivers it at commit and drops it on rollback. Each process keeps one listening connection
in a thread of its own (not a pooled one: behind a transaction-mode pooler LISTEN needs a session,
so point it at the server or a session pooler) and calls the scheduler's wake-up per notification.
Polling stays the fallback: the listener is lost while the server is down and comes back with
backoff; on every (re)connect it calls back once, as changes may have been missed meanwhile.
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
    """One LISTEN connection in a daemon thread; `callback` runs in that thread (keep it short)."""

    def __init__(self, url: str, kwargs: dict[str, Any], callback: Callable[[], None]) -> None:
        self.url = url
        self.kwargs = {k: v for k, v in kwargs.items() if k != "row_factory"}
        self.callback = callback
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="palyra-journal-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.25
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, **self.kwargs) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    backoff = 0.25
                    self._call()  # changes made while we were not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self._call()
            except psycopg.Error as exc:
                if self.listening.is_set():
                    log.debug("journal listener lost (%s); polling until it reconnects", exc)
            self.listening.clear()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _call(self) -> None:
        try:
            self.callback()
        except Exception:  # the loop is closing: nothing left to wake
            log.debug("journal change callback failed", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
