"""systemd notification (`Type=notify`, examples/deploy/palyra-ops.service): the real daemon sends
READY=1 through NOTIFY_SOCKET once it serves, then WATCHDOG=1 at half of WATCHDOG_USEC — to a socket
path and to an abstract `@` name — and does nothing without NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from palyra_ops import sdnotify


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket at a short path (sun_path is 108 bytes; pytest's tmp paths can be longer)."""
    d = tempfile.mkdtemp(prefix="sdn", dir="/tmp")
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(d)


def _messages(sock: socket.socket, until: object, timeout: float = 60) -> list[list[str]]:
    """Datagrams (each split into its lines) until `until(messages)` holds."""
    got: list[list[str]] = []
    deadline = time.monotonic() + timeout
    while not until(got):  # type: ignore[operator]
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {got}"
        sock.settimeout(left)
        got.append(sock.recv(4096).decode().split("\n"))
    return got


def _ready_then_watchdog(got: list[list[str]]) -> bool:
    ready = next((i for i, m in enumerate(got) if "READY=1" in m), None)
    return ready is not None and any("WATCHDOG=1" in m for m in got[ready + 1:])


def test_daemon_notifies_ready_and_pings_the_watchdog(daemon_factory, notify_socket) -> None:
    sock, path = notify_socket
    started = time.monotonic()
    d = daemon_factory(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})  # a ping every 0.2 s
    got = _messages(sock, _ready_then_watchdog)
    assert got[0] == ["READY=1", "STATUS=serving"]  # the first word the daemon says, once
    assert sum("READY=1" in m for m in got) == 1
    assert httpx.get(d.base_url + "/healthz", timeout=5).status_code == 200  # ready meant serving
    # pings keep coming at about half the period (generous bounds: a loaded machine)
    t0 = time.monotonic()
    _messages(sock, lambda g: sum("WATCHDOG=1" in m for m in g) >= 5)
    assert time.monotonic() - t0 < 0.2 * 5 * 10
    assert time.monotonic() - started < 120
    assert d.stop() == 0


def test_abstract_socket_name(daemon_factory) -> None:
    name = f"palyra-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        daemon_factory(env={"NOTIFY_SOCKET": "@" + name})
        got = _messages(sock, lambda g: len(g) >= 1)
        assert got == [["READY=1", "STATUS=serving"]]
        sock.settimeout(1.0)  # no WATCHDOG_USEC: no pings
        with pytest.raises(TimeoutError):
            sock.recv(4096)


def test_watchdog_settings() -> None:
    me = str(os.getpid())
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # another process's
    for bad in ("", "0", "-5", "soon"):
        assert sdnotify.watchdog_interval({"WATCHDOG_USEC": bad}) is None
    assert sdnotify.notify("READY=1", {}) is False  # outside systemd: nothing to do


def test_an_unreachable_socket_is_logged_once_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdnotify, "_warned", False)
    missing = str(tmp_path / "nobody-listens")
    with caplog.at_level("WARNING", logger="palyra_ops.sdnotify"):
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": missing}) is False
        assert sdnotify.notify("WATCHDOG=1", {"NOTIFY_SOCKET": missing}) is False
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"cannot notify systemd through NOTIFY_SOCKET={missing}"]
