"""One daemon per SQLite journal (SPEC §11, last paragraph).

A second daemon on the same SQLite journal used to start silently: its start-up recovery marked the
first daemon's live runs `failed/daemon_restart`, and with two schedulers `forbid` no longer held.
The daemon therefore holds an OS advisory lock (`flock`) on `<journal>.lock` for its whole life,
taken before anything touches the runs. The lock file names the holder (pid, listen address) so
the one refused can say who has the journal. The kernel drops the lock when the holder dies, even
by SIGKILL, so a stale file never blocks a restart; the file itself is left in place (deleting a
lock file is what makes flock protocols racy).

PostgreSQL journals (several daemons on one journal, §11) will use a daemon registry with
heartbeats instead; this lock is the SQLite case.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from palyra_ops.errors import DaemonAlreadyRunning
from palyra_ops.fsmodes import private_dir
from palyra_ops.journal.faults import check_location, os_problem


class DaemonLock:
    def __init__(self, journal_path: Path | str) -> None:
        self.journal_path = check_location(journal_path)
        self.path = Path(f"{self.journal_path}.lock")
        self._fd: int | None = None

    def acquire(self, address: str) -> None:
        """Take the lock or raise DaemonAlreadyRunning naming the daemon that holds it."""
        try:
            private_dir(self.path.parent)
        except OSError as exc:
            raise os_problem(self.journal_path, exc) from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise os_problem(self.journal_path, exc, beside=self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DaemonAlreadyRunning(
                f"journal {self.journal_path} is in use by {_describe(holder)}; "
                "stop it first (one daemon per SQLite journal)") from None
        except OSError as exc:
            os.close(fd)
            raise os_problem(self.journal_path, exc) from None
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o600)
        self._fd = fd
        self.update(address)

    def update(self, address: str) -> None:
        """Record the holder; called again once the real port is known (`--listen 127.0.0.1:0`).

        Best effort: on a full disk the lock still holds, only the name of its holder is missing.
        """
        if self._fd is None:
            return
        data = json.dumps({"pid": os.getpid(), "address": address, "since_ms": int(time.time() * 1000)}).encode()
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data + b"\n", 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DaemonLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    """The holder's record; a daemon that has just taken the lock may not have written it yet."""
    for _ in range(20):
        try:
            raw = os.pread(fd, 4096, 0)
            data = json.loads(raw) if raw.strip() else None
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            return data
        time.sleep(0.025)
    return {}


def _describe(holder: dict[str, Any]) -> str:
    pid, address = holder.get("pid"), holder.get("address")
    if pid is None:
        return "another daemon (its pid and address are not recorded)"
    return f"the daemon pid {pid} on {address}" if address else f"the daemon pid {pid}"


__all__ = ["DaemonLock"]
