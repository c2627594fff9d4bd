"""Fencing by the run's token (SPEC §11, docs/ha.md): a daemon stalled longer than its lease, whose
running run a peer reaped (`daemon_lost`), neither delivers that run's output nor overwrites its
record when it wakes up; the refusal is logged and kept as a `run.fenced` event, and the daemon
goes on working (it registers again and runs new work as usual).

Real daemons on the tests' PostgreSQL cluster; the stall is SIGSTOP/SIGCONT of the owner's process.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

from conftest import DaemonHandle, Receiver

from palyra_ops.journal import open_journal

FAST = {"cluster": {"heartbeat_interval": "200ms", "lease": "2s"}}


def _docs(url: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "palyra/v1", "kind": "Channel", "metadata": {"name": "hook"},
             "spec": {"type": "webhook", "url": url}},
            {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "slow", "labels": {"echo-sleep": "4s"}},
             "spec": {"prompt": "p", "trigger": {"kind": "manual"}, "policies": {"concurrency": "allow"},
                      "delivery": {"mode": "specific_channel", "channel": "hook"}}}]


def _run(url: str, run_id: str) -> dict[str, Any]:
    with open_journal(url) as j:
        r = j.get_run(run_id)
    assert r is not None
    return dict(r)


def _fenced_events(url: str) -> list[dict[str, Any]]:
    with open_journal(url) as j:
        return [json.loads(e["payload"] or "{}") for e in j.list_events(200) if e["name"] == "run.fenced"]


def test_a_stalled_owner_s_reaped_run_is_neither_delivered_nor_overwritten(
        daemon_factory: Callable[..., DaemonHandle], pg_url: str, receiver: Receiver) -> None:
    a = daemon_factory(journal=pg_url, config=FAST)
    b = daemon_factory(journal=pg_url, config=FAST)
    a.write("slow.yaml", _docs(receiver.url))
    a.apply()
    r = a.client().post("/console/v1/routines/dispatch", json={"routine_id": "slow"})
    assert r.status_code == 202, r.text
    rid = r.json()["run_id"]
    a.wait_for(lambda: _run(pg_url, rid)["status"] == "running", timeout=20, what="the run running on a")
    fence = _run(pg_url, rid)["fence"]
    assert fence  # a running run carries its holder's token

    a.proc.send_signal(signal.SIGSTOP)  # stalled past its lease while the run executes
    try:
        b.wait_for(lambda: _run(pg_url, rid)["status"] != "running", timeout=20, what="b reaping a's run")
    finally:
        a.proc.send_signal(signal.SIGCONT)
    lost = _run(pg_url, rid)
    assert lost["status"] == "failed" and (lost["reason"] or "").startswith("daemon_lost: "), lost

    # a wakes up, its run's 4 s end: the fence refuses it before delivering, and the record stays
    b.wait_for(lambda: [e for e in _fenced_events(pg_url) if e["run_id"] == rid], timeout=30,
               what="a's late finish refused")
    events = [e for e in _fenced_events(pg_url) if e["run_id"] == rid]
    assert events[0]["status"] == "succeeded" and events[0]["routine_id"] == "slow"
    assert [x for x in receiver.bodies if x.get("run_id") == rid] == []  # never delivered
    assert _run(pg_url, rid) == lost  # not overwritten: still failed daemon_lost, same finish time
    assert "not written (succeeded): a peer reaped it" in a.log()
    metrics = a.client().get("/metrics").text
    assert 'palyra_handovers_total{event="fenced_delivery"} 1' in metrics, metrics

    # a registered again and works: a new run on a is delivered once
    a.wait_for(lambda: "registering again" in a.log(), timeout=20, what="a registering again")
    r = a.client().post("/console/v1/routines/dispatch", json={"routine_id": "slow"})
    assert r.status_code == 202, r.text
    again = r.json()["run_id"]
    a.wait_for(lambda: _run(pg_url, again)["status"] == "succeeded", timeout=30, what="a's next run")
    a.wait_for(lambda: [x for x in receiver.bodies if x.get("run_id") == again], timeout=10, what="its delivery")
    assert len([x for x in receiver.bodies if x.get("run_id") == again]) == 1


def test_a_stalled_owner_s_retry_taken_over_by_a_peer_runs_and_is_delivered_once(
        daemon_factory: Callable[..., DaemonHandle], pg_url: str, receiver: Receiver) -> None:
    a = daemon_factory(journal=pg_url, config=FAST)
    b = daemon_factory(journal=pg_url, config=FAST)
    a.write("flaky.yaml", [_docs(receiver.url)[0],
                           {"apiVersion": "palyra/v1", "kind": "Routine",
                            "metadata": {"name": "flaky", "labels": {"echo-fail": "1"}},
                            "spec": {"prompt": "p", "trigger": {"kind": "manual"},
                                     "policies": {"retry": {"max_attempts": 2, "backoff": "3s"}},
                                     "delivery": {"mode": "specific_channel", "channel": "hook"}}}])
    a.apply()
    r = a.client().post("/console/v1/routines/dispatch", json={"routine_id": "flaky"})
    assert r.status_code == 202, r.text

    def retry_row() -> dict[str, Any] | None:
        with open_journal(pg_url) as j:
            rows = [dict(x) for x in j.runs_in_order("flaky") if x["attempt"] == 2]
        return rows[0] if rows else None

    retry = a.wait_for(retry_row, timeout=20, what="the retry waiting on a")
    a.proc.send_signal(signal.SIGSTOP)  # stalled through its lease and the retry's due time
    try:
        b.wait_for(lambda: _run(pg_url, retry["run_id"])["status"] == "succeeded", timeout=30,
                   what="b taking the retry over and running it")
    finally:
        a.proc.send_signal(signal.SIGCONT)
    b.wait_for(lambda: [e for e in _fenced_events(pg_url) if e["run_id"] == retry["run_id"]], timeout=30,
               what="a's late start of the retry refused")
    done = _run(pg_url, retry["run_id"])
    assert done["status"] == "succeeded" and done["fence"] != retry["fence"]
    with open_journal(pg_url) as j:
        owners = {d["pid"]: d["daemon_id"] for d in j.list_daemons()}
    assert done["daemon_id"] == owners[b.proc.pid]
    b.wait_for(lambda: [x for x in receiver.bodies if x.get("run_id") == retry["run_id"]], timeout=10,
               what="the retry's delivery")
    a.wait_for(lambda: "registering again" in a.log(), timeout=20, what="a back")
    assert [x["run_id"] for x in receiver.bodies if x.get("routine_id") == "flaky"] == [retry["run_id"]]  # once
    assert _run(pg_url, retry["run_id"]) == done
    assert 'palyra_handovers_total{event="taken_over"} 1' in b.client().get("/metrics").text
    assert 'palyra_handovers_total{event="fenced_write"} 1' in a.client().get("/metrics").text
