"""Webhook POSTs from the delivery worker (a child process, issue 14): the same guarantees as in
process — signed per attempt, retried, targets checked at connect time — and a worker that dies
fails only what it held and is started again by the next delivery.
"""

from __future__ import annotations

import asyncio
import base64

import pytest

from palyra_ops.clock import SystemClock
from palyra_ops.delivery import Deliverer, DeliveryError
from palyra_ops.journal import open_journal
from palyra_ops.model import Channel

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def _body(run_id: str) -> dict:
    return {"routine_id": "r", "run_id": run_id, "status": "succeeded", "output": "hello"}


def test_the_worker_delivers_signed_and_retries_and_refuses_link_local(tmp_path, receiver, monkeypatch) -> None:
    standardwebhooks = pytest.importorskip("standardwebhooks")
    monkeypatch.setenv("HOOK_SIGNING_SECRET", SECRET)
    journal = open_journal(tmp_path / "j.sqlite3")

    async def main() -> None:
        d = Deliverer(journal, SystemClock(), retry_base_s=0.01)
        await d.start(offload=True)
        assert d._worker is not None and d._worker._proc is not None
        spec = {"url": receiver.url, "signing_secret": {"env": "HOOK_SIGNING_SECRET"}, "retries": 1,
                "headers": {"X-Team": "ops"}}
        ch = Channel(name="hook", type="webhook", spec=spec)
        await d.send(ch, _body("01ARZ3NDEKTSV4RRFFQ69G5FAW"))
        h = {k.lower(): v for k, v in receiver.headers[-1].items()}
        assert h["webhook-id"] == "01ARZ3NDEKTSV4RRFFQ69G5FAW" and h["x-team"] == "ops"
        assert standardwebhooks.Webhook(SECRET).verify(receiver.raw[-1], h)["output"] == "hello"
        receiver.status = 503  # retried once, each attempt signed afresh, then the run's error
        with pytest.raises(DeliveryError) as err:
            await d.send(ch, _body("01ARZ3NDEKTSV4RRFFQ69G5FAX"))
        assert str(err.value) == f"webhook {receiver.url}: HTTP 503 (2 attempts)"
        assert len(receiver.raw) == 3
        for raw, hh in zip(receiver.raw[1:], receiver.headers[1:], strict=True):
            standardwebhooks.Webhook(SECRET).verify(raw, {k.lower(): v for k, v in hh.items()})
        ll = Channel(name="ll", type="webhook", spec={"url": "http://169.254.1.1/hook", "retries": 0})
        with pytest.raises(DeliveryError) as err:
            await d.send(ll, _body("01ARZ3NDEKTSV4RRFFQ69G5FAY"))
        assert str(err.value).startswith("webhook ll: refused target: 169.254.1.1 is a link-local address")
        proc = d._worker._proc
        await d.aclose()
        assert d._worker is None and proc.returncode == 0  # stdin closed: it finished and exited

    asyncio.run(main())
    journal.close()


def test_a_dead_worker_is_started_again_by_the_next_delivery(tmp_path, receiver) -> None:
    journal = open_journal(tmp_path / "j.sqlite3")

    async def main() -> None:
        d = Deliverer(journal, SystemClock(), retry_base_s=0.01)
        await d.start(offload=True)
        worker = d._worker
        assert worker is not None and worker._proc is not None
        first = worker._proc
        first.kill()  # the child this test started
        await first.wait()
        await asyncio.sleep(0.05)
        ch = Channel(name="hook", type="webhook", spec={"url": receiver.url, "retries": 0})
        await d.send(ch, _body("01ARZ3NDEKTSV4RRFFQ69G5FB0"))
        assert worker._proc is not first and worker._proc is not None and worker._proc.returncode is None
        assert [b["run_id"] for b in receiver.bodies] == ["01ARZ3NDEKTSV4RRFFQ69G5FB0"]
        await d.aclose()

    asyncio.run(main())
    journal.close()
