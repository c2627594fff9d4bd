"""systemd's service notification protocol (`sd_notify`), without a dependency.

Under a `Type=notify` unit (examples/deploy/palyra-ops.service) systemd passes `NOTIFY_SOCKET`, a
datagram unix socket (a path, or an abstract name written `@name`), and with `WatchdogSec=` also
`WATCHDOG_USEC` (and `WATCHDOG_PID`). The daemon sends `READY=1` once it serves — so `systemctl start`
returns, and units ordered after it start, only when the API answers — and `WATCHDOG=1` every half
of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises. The pings are timers of the daemon's event loop:
when the loop hangs they stop, and systemd restarts the daemon (`Restart=on-failure`).

Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op. A socket that cannot be reached is logged
once, never raised: a notification must not stop the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

_warned = False


def _address(value: str) -> str | None:
    """The socket address of `NOTIFY_SOCKET`: a path, or an abstract name (`@` → leading NUL)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock:… and relative paths: not something this daemon is started with


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one notification (`READY=1`, `WATCHDOG=1`, `STATUS=…`); True when it was sent."""
    global _warned
    value = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not value:
        return False
    address = _address(value)
    try:
        if address is None:
            raise OSError(f"unsupported address {value!r}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        if not _warned:
            _warned = True
            log.warning("cannot notify systemd through NOTIFY_SOCKET=%s: %s", value, exc)
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between `WATCHDOG=1` pings (half of `WATCHDOG_USEC`), or None when no watchdog is
    asked of this process (unset, not a positive number, or `WATCHDOG_PID` names another process)."""
    env = os.environ if env is None else env
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


def daemon_ready(loop: asyncio.AbstractEventLoop, env: Mapping[str, str] | None = None) -> None:
    """`READY=1` now, then `WATCHDOG=1` every half watchdog period on `loop` until it closes."""
    env = dict(os.environ if env is None else env)
    if not env.get("NOTIFY_SOCKET"):
        return
    notify("READY=1\nSTATUS=serving", env)
    interval = watchdog_interval(env)
    if interval is None:
        return

    def ping() -> None:
        notify("WATCHDOG=1", env)
        loop.call_later(interval, ping)

    ping()


__all__ = ["daemon_ready", "notify", "watchdog_interval"]
