"""Claimed runs due at one instant go out in one loopback call (issue 14): the batch body of
`POST /gateway/v1/messages`. Every run still enters the pipeline there, one `handle_message` each:
per-message answers, idempotent by run id, internal credential only, and on the real daemon a herd
applied together is dispatched with no run lost and every occurrence once.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
from jsonschema import Draft202012Validator
from test_loopback_dispatch import _app

from palyra_ops.errors import PermissionDenied
from palyra_ops.gateway import Loopback
from palyra_ops.model import Resource
from palyra_ops.reconcile import upsert_resource


def _claimed(journal, gateway, n: int) -> list[dict]:
    routine = gateway.routine("r")
    msgs = []
    for i in range(n):
        run_id = journal.insert_run(routine_id="r", occurrence_key=f"r|{i + 1}", scheduled_at_ms=i + 1,
                                    trigger_kind="schedule", status="accepted", attempt=1, daemon_id="d")
        msgs.append(gateway.message_for(routine, trigger_kind="schedule", run_id=run_id, scheduled_at_ms=i + 1))
    return msgs


def test_a_batch_body_answers_each_message_and_repeats_return_the_first_receipts(tmp_path) -> None:
    journal, gateway, app = _app(tmp_path)

    async def main() -> None:
        msgs = _claimed(journal, gateway, 2)
        ghost = {**msgs[0], "device_id": "someone-else", "run_id": None}
        headers = {"Authorization": "Bearer internal"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            first = await c.post("/gateway/v1/messages", json={"messages": [*msgs, ghost]}, headers=headers)
            again = await c.post("/gateway/v1/messages", json={"messages": msgs}, headers=headers)
            await gateway.drain()
            console = await c.post("/gateway/v1/messages", json={"messages": msgs},
                                   headers={"Authorization": "Bearer console"})
            empty = await c.post("/gateway/v1/messages", json={"messages": []}, headers=headers)
        assert first.status_code == 200
        # the batch body and its answer are the ones docs/openapi.json publishes
        doc = json.loads((Path(__file__).resolve().parent.parent / "docs" / "openapi.json").read_text())
        for name, value in (("MessageBatch", {"messages": [*msgs, ghost]}), ("MessageBatchResult", first.json())):
            Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]}).validate(
                json.loads(json.dumps(value)))
        res = first.json()["results"]
        assert [r["status"] for r in res] == [202, 202, 403]
        assert [r["result"]["run_id"] for r in res[:2]] == [m["run_id"] for m in msgs]
        assert res[2]["error"]["code"] == PermissionDenied.code and "device id" in res[2]["error"]["message"]
        assert [r["result"]["run_id"] for r in again.json()["results"]] == [m["run_id"] for m in msgs]
        # only the daemon's own credential may batch: anyone else's body is a (bad) single message
        assert console.status_code == 400 and "principal" in console.json()["error"]["message"]
        assert empty.status_code == 400 and "messages" in empty.json()["error"]["message"]
        # the same gates as single calls, in order: the routine forbids overlap, so the second is skipped
        runs = journal.runs_in_order("r")
        assert [(r["run_id"], r["status"]) for r in runs] == [(msgs[0]["run_id"], "succeeded"),
                                                              (msgs[1]["run_id"], "skipped")]
        assert runs[1]["reason"] == f"concurrency: forbid (run {msgs[0]['run_id']} is active)"
        assert gateway.metrics.runs == {"succeeded": 1, "skipped": 1}, "each run decided exactly once"

    asyncio.run(main())
    journal.close()


def test_loopback_post_batch_turns_each_answer_back_into_a_receipt_or_the_domain_error(tmp_path) -> None:
    journal, gateway, app = _app(tmp_path)

    async def main() -> None:
        msgs = _claimed(journal, gateway, 2)
        lb = Loopback("http://t", "internal")
        lb.transports = [httpx.ASGITransport(app=app)]  # type: ignore[list-item]
        lb._rr = iter(lb.transports * 10)  # type: ignore[assignment]
        out = await lb.post_batch([msgs[0], {**msgs[1], "device_id": "someone-else", "run_id": None}])
        await gateway.drain()
        assert isinstance(out[0], dict) and out[0]["run_id"] == msgs[0]["run_id"]
        assert isinstance(out[1], PermissionDenied)

    asyncio.run(main())
    journal.close()


def test_a_herd_applied_together_is_dispatched_in_batches_with_nothing_lost(daemon) -> None:
    """40 routines `every: 1s` on one anchor (what apply writes) on the real daemon, 6 s."""
    docs = [{"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": f"h{i:02d}"},
             "spec": {"prompt": "p", "trigger": {"kind": "schedule", "schedule": {"every": "1s"}}}} for i in range(40)]
    daemon.write("herd.yaml", docs)
    daemon.apply()
    time.sleep(6)
    daemon.stop()
    runs = daemon.runs()
    assert len(runs) >= 40 * 3
    assert len({r["occurrence_key"] for r in runs}) == len(runs)
    bad = [r for r in runs if r["status"] not in ("succeeded", "cancelled")]
    assert not bad, bad[:5]
    per = {}
    for r in runs:
        if r["status"] == "succeeded":
            per.setdefault(r["scheduled_at_ms"], set()).add(r["routine_id"])
    full = [t for t, names in per.items() if len(names) == 40]
    assert len(full) >= 3, "every instant of the herd ran for all 40 routines"


def test_a_batch_reads_its_runs_at_once_and_a_resent_batch_still_runs_each_once(tmp_path) -> None:
    """`arrivals` reads a claimed batch's runs in one look (one round trip on PostgreSQL), except
    runs of a routine the batch carries twice (the first's start changes the job row the second's
    gates read). A context read early is not trusted for a run taken in since: the same batch
    handled twice with its early reads (a resend while the first call is still going) runs each
    run once and answers the repeat with the first receipt."""
    journal, gateway, _app_ = _app(tmp_path)
    upsert_resource(journal, Resource.from_spec("Routine", "s", {"prompt": "p", "trigger": {"kind": "manual"}}),
                    origin="test")

    async def main() -> None:
        r, s = gateway.routine("r"), gateway.routine("s")
        assert r is not None and s is not None
        msgs = []
        for routine, key in ((r, "r|1"), (s, "s|1"), (s, "s|2")):
            run_id = journal.insert_run(routine_id=routine.name, occurrence_key=key, scheduled_at_ms=1,
                                        trigger_kind="schedule", status="accepted", attempt=1, daemon_id="d")
            msgs.append(gateway.message_for(routine, trigger_kind="schedule", run_id=run_id, scheduled_at_ms=1))
        early = gateway.arrivals(msgs)
        assert set(early) == {msgs[0]["run_id"]}  # s is in the batch twice: its runs read one by one
        assert early[msgs[0]["run_id"]] == journal.run_context(msgs[0]["run_id"], "r")
        # the call and its resend each read their batch before either is handled
        reads = [gateway.arrivals(msgs[:2]), gateway.arrivals(msgs[:2])]
        answers = []
        for stale in reads:
            for m in msgs[:2]:
                status, run = await gateway.handle_message(m, internal=True, seen=stale.get(m["run_id"]))
                answers.append((status, run["run_id"], run.get("received_at_ms")))
        await gateway.drain()
        assert [a[:2] for a in answers[2:]] == [a[:2] for a in answers[:2]]
        assert [a[2] for a in answers[2:]] == [a[2] for a in answers[:2]]  # the first receipts
        for m in msgs[:2]:
            row = journal.get_run(m["run_id"])
            assert row is not None and row["status"] == "succeeded"
        assert gateway.metrics.runs.get("succeeded") == 2  # each run executed once

    asyncio.run(main())


def test_a_batch_whose_messages_name_routines_badly_answers_each_with_a_client_error(tmp_path) -> None:
    """`arrivals` reads only well-formed claimed runs: a message whose routine id is a list or a
    number gets its own 4xx answer, never a 500 for the whole batch."""
    journal, gateway, app = _app(tmp_path)

    async def main() -> None:
        [good] = _claimed(journal, gateway, 1)
        bad = [{**good, "routine_id": ["r"]}, {**good, "routine_id": 7}, {**good, "run_id": ["x"]}]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            res = await c.post("/gateway/v1/messages", json={"messages": [*bad, good]},
                               headers={"Authorization": "Bearer internal"})
            await gateway.drain()
        assert res.status_code == 200
        statuses = [r["status"] for r in res.json()["results"]]
        assert all(400 <= s < 500 for s in statuses[:3]) and statuses[3] == 202

    asyncio.run(main())
