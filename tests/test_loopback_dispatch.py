"""No run is lost to the loopback transport (issue 9, point 1).

The field failure: a pooled keep-alive connection was reused just as the server closed it (client
expiry == server keep-alive == 5 s), the call died with `httpx.ReadError`, and the run ended
`failed` with the reason `dispatch_failed: ` (empty). Here:

- a local server that resets a reused connection when the next request arrives on it — the server
  side of that race, made deterministic — and the Loopback must deliver anyway (retry);
- the gateway is idempotent by run id, through the real app: a repeat returns the first receipt;
- the real daemon keeps an idle connection open for longer than the loopback reuses one;
- a dispatch that still fails has a real reason, follows the retry policy, emits `routine.failed`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from conftest import settle

from palyra_ops.clock import SystemClock, to_ms
from palyra_ops.context import DaemonContext
from palyra_ops.errors import DispatchFailed, PalyraError
from palyra_ops.gateway import Gateway, Loopback, loopback_keepalive_s
from palyra_ops.journal import open_journal
from palyra_ops.model import Resource
from palyra_ops.reconcile import upsert_resource
from palyra_ops.server import create_app

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class ResettingServer:
    """HTTP/1.1 keep-alive server answering 202; with `reset_reused`, the 2nd request arriving on a
    connection is read in full and the connection reset without an answer (what uvicorn does when
    its keep-alive timer fires with a request already in the socket). `reset_all` resets every one."""

    def __init__(self, *, reset_reused: bool = True, reset_all: bool = False) -> None:
        self.reset_reused = reset_reused
        self.reset_all = reset_all
        self.bodies: list[dict[str, Any]] = []
        self.connections = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = json.loads(await reader.readexactly(length))
                self.bodies.append(body)
                if self.reset_all or (self.reset_reused and served >= 1):
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                served += 1
                out = json.dumps({"run_id": body.get("run_id"), "status": "running"}).encode()
                writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(out), out))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def test_a_reused_connection_reset_by_the_server_is_retried_and_delivered() -> None:
    async def main() -> None:
        srv = ResettingServer()
        url = await srv.start()
        lb = Loopback(url, "internal", clients=1)
        try:
            assert (await lb.post({"run_id": "R1"}))["run_id"] == "R1"
            # the pooled connection is reused for R2 and reset under it: delivered on a fresh one
            assert (await lb.post({"run_id": "R2"}))["run_id"] == "R2"
            assert (await lb.post({"run_id": "R3"}))["run_id"] == "R3"
        finally:
            await lb.aclose()
            await srv.close()
        assert [b["run_id"] for b in srv.bodies] == ["R1", "R2", "R2", "R3", "R3"]
        assert lb.retries == 2 and lb.failures == 0

    asyncio.run(main())


def test_a_call_that_fails_every_try_has_a_real_reason() -> None:
    async def main() -> None:
        srv = ResettingServer(reset_all=True)
        url = await srv.start()
        lb = Loopback(url, "internal", clients=1)
        try:
            with pytest.raises(PalyraError) as exc:
                await lb.post({"run_id": "R1"})
        finally:
            await lb.aclose()
            await srv.close()
        msg = exc.value.message
        assert msg.startswith("loopback call failed 4 times: ")
        error_type = msg.split(": ", 2)[1] if ": " in msg else ""
        assert error_type in ("RemoteProtocolError", "ReadError"), msg
        assert exc.value.code == "dispatch_failed"
        assert [b["run_id"] for b in srv.bodies] == ["R1"] * 4 and lb.failures == 1

    asyncio.run(main())


def test_the_loopback_retires_idle_connections_well_before_the_server_closes_them() -> None:
    assert loopback_keepalive_s(20) == 5.0
    assert loopback_keepalive_s(5) == 1.25  # uvicorn's default would give 1.25 s, not httpx's 5 s
    lb = Loopback("http://127.0.0.1:9", "t")
    assert lb.keepalive_expiry_s < 20 / 2


def test_the_daemon_keeps_an_idle_connection_open_past_the_loopback_reuse_window(daemon) -> None:
    """Raw socket, so nothing reconnects behind our back: idle for longer than the loopback would
    reuse a connection, the server must still answer on it (old: both 5 s, the server closed it)."""
    port = int(daemon.base_url.rsplit(":", 1)[1])
    req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(req)
        assert b'{"status":"ok"}' in _read_response(s)
        time.sleep(loopback_keepalive_s(20) + 1.0)
        s.sendall(req)
        assert b'{"status":"ok"}' in _read_response(s), "the server closed a connection the loopback may still reuse"


def _read_response(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += s.recv(4096)
    return head + b"\r\n\r\n" + rest


# -- idempotency by run id, through the real app ---------------------------------------------------------


def _app(tmp_path):
    journal = open_journal(tmp_path / "j.sqlite3")
    upsert_resource(journal, Resource.from_spec("Routine", "r", {"prompt": "p", "trigger": {"kind": "manual"}}),
                    origin="test")
    gateway = Gateway(journal, SystemClock(), daemon_id="d")
    ctx = DaemonContext(journal=journal, clock=SystemClock(), config=None, token="console", internal_token="internal",
                        gateway=gateway)
    return journal, gateway, create_app(ctx)


def test_a_repeated_message_for_a_received_run_returns_its_receipt_and_runs_nothing_twice(tmp_path) -> None:
    journal, gateway, app = _app(tmp_path)

    async def main() -> None:
        routine = gateway.routine("r")
        assert routine is not None
        # a run the scheduler claimed, as the scheduler writes it
        run_id = journal.insert_run(routine_id="r", occurrence_key="r|1", scheduled_at_ms=1, trigger_kind="schedule",
                                    status="accepted", attempt=1, daemon_id="d")
        msg = gateway.message_for(routine, trigger_kind="schedule", run_id=run_id, scheduled_at_ms=1)
        headers = {"Authorization": "Bearer internal"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            first = await c.post("/gateway/v1/messages", json=msg, headers=headers)
            second = await c.post("/gateway/v1/messages", json=msg, headers=headers)
            await gateway.drain()
            third = await c.post("/gateway/v1/messages", json=msg, headers=headers)
            # a new run named by the sender (manual dispatch, events): the same request id twice
            new = {**gateway.message_for(routine, trigger_kind="manual"), "request_id": "01ARZ3NDEKTSV4RRFFQ69G5FAW"}
            n1 = await c.post("/gateway/v1/messages", json=new, headers=headers)
            n2 = await c.post("/gateway/v1/messages", json=new, headers=headers)
            await gateway.drain()
        assert first.status_code == second.status_code == third.status_code == 202
        assert first.json()["run_id"] == second.json()["run_id"] == third.json()["run_id"] == run_id
        assert first.json()["status"] == "running"
        assert third.json()["status"] == "succeeded"
        assert n1.status_code == n2.status_code == 202
        assert n1.json()["run_id"] == n2.json()["run_id"] == "01ARZ3NDEKTSV4RRFFQ69G5FAW"
        runs = journal.runs_in_order("r")
        assert [(r["run_id"], r["status"]) for r in runs] == [(run_id, "succeeded"),
                                                              ("01ARZ3NDEKTSV4RRFFQ69G5FAW", "succeeded")]
        assert gateway.metrics.runs == {"succeeded": 2}, "each run executed exactly once"

    asyncio.run(main())
    journal.close()


# -- a dispatch that still fails ------------------------------------------------------------------------


def _read_error(msg: dict[str, Any]) -> Any:
    raise httpx.ReadError("")  # what the field saw: an empty message


def test_a_failed_dispatch_has_a_real_reason_and_follows_the_retry_policy(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("r", trigger={"kind": "schedule", "schedule": {"every": "1m"}},
                   policies={"retry": {"max_attempts": 2, "backoff": "10s"}})
        calls: list[dict[str, Any]] = []

        async def flaky(msg: dict[str, Any]) -> dict[str, Any]:
            calls.append(msg)
            if len(calls) == 1:
                _read_error(msg)
            return (await rt.gateway.handle_message(msg, internal=True))[1]

        rt.scheduler.send = flaky
        rt.clock.set(to_ms(T0) + 60_000)
        assert await rt.scheduler.tick() == 1
        await settle()
        first, second = rt.runs("r")
        assert first["status"] == "failed"
        assert first["reason"] == "dispatch_failed: ReadError (the transport gave no detail)"
        assert (second["status"], second["attempt"], second["first_run_id"]) == ("accepted", 2, first["run_id"])
        assert second["not_before_ms"] == to_ms(T0) + 70_000 and second["scheduled_at_ms"] == to_ms(T0) + 60_000
        assert second["occurrence_key"] is None
        assert not [e for e in rt.journal.list_events() if e["name"] == "routine.failed"], "not final yet"
        await rt.advance(10_000)
        await rt.scheduler.drain()
        await settle()
        assert [r["status"] for r in rt.runs("r")] == ["failed", "succeeded"]
        assert calls[1]["run_id"] == second["run_id"]
        assert rt.scheduler.status()["dispatch_errors_total"] == 1

    asyncio.run(main())


def test_a_final_dispatch_failure_emits_routine_failed(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("r", trigger={"kind": "schedule", "schedule": {"every": "1m"}})

        async def broken(msg: dict[str, Any]) -> dict[str, Any]:
            raise DispatchFailed("loopback call failed 4 times: ReadError: [Errno 104] Connection reset by peer")

        rt.scheduler.send = broken
        rt.clock.set(to_ms(T0) + 60_000)
        await rt.tick()
        await rt.gateway.drain()
        (run,) = rt.runs("r")
        assert run["status"] == "failed"
        assert run["reason"] == "dispatch_failed: loopback call failed 4 times: ReadError: [Errno 104] Connection reset by peer"
        (event,) = [e for e in rt.journal.list_events() if e["name"] == "routine.failed"]
        assert json.loads(event["payload"]) == {"routine_id": "r", "run_id": run["run_id"], "reason": run["reason"]}

    asyncio.run(main())


def test_no_run_is_lost_on_a_real_daemon_under_steady_load(daemon) -> None:
    """A short version of bench/soak_dispatch.py: 8 routines `every: 1s`, 15 s on the real daemon."""
    for i in range(8):
        daemon.write(f"r{i}.yaml", {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": f"r{i}"},
                                    "spec": {"prompt": "p", "trigger": {"kind": "schedule", "schedule": {"every": "1s"}}}})
    daemon.apply()
    time.sleep(15)
    daemon.stop()
    runs = daemon.runs()
    assert len(runs) >= 8 * 10
    bad = [r for r in runs if r["status"] not in ("succeeded", "cancelled")
           or (r["reason"] or "").startswith("dispatch_failed")]
    assert not bad, bad[:5]
