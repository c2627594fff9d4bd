"""Every policy across daemons on one PostgreSQL journal (SPEC §11, docs/ha.md): `replace` cancels a
run on another daemon, `queue_one` keeps one pending run whichever daemon triggered it and starts it
once the other daemon's run ends, and a killed daemon's retry waits and quiet-hours deferrals are
taken over by a peer at their due time (not failed `daemon_lost`).

Real `palyra-ops daemon` processes on the tests' throwaway cluster, short leases (2 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import DaemonHandle, Receiver

from palyra_ops.journal import open_journal

FAST = {"cluster": {"heartbeat_interval": "200ms", "lease": "2s"}}


def _routine(name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    return {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": meta,
            "spec": {"prompt": "p", "trigger": {"kind": "manual"}, **spec}}


def _hook(url: str) -> dict[str, Any]:
    return {"apiVersion": "palyra/v1", "kind": "Channel", "metadata": {"name": "hook"},
            "spec": {"type": "webhook", "url": url}}


def _run(url: str, run_id: str) -> dict[str, Any]:
    with open_journal(url) as j:
        r = j.get_run(run_id)
    assert r is not None
    return dict(r)


def _runs(url: str, routine: str) -> list[dict[str, Any]]:
    with open_journal(url) as j:
        return [dict(r) for r in j.runs_in_order(routine)]


def _daemon_id(url: str, d: DaemonHandle) -> str:
    with open_journal(url) as j:
        return next(x["daemon_id"] for x in j.list_daemons() if x["pid"] == d.proc.pid)


def _dispatch(d: DaemonHandle, routine: str) -> dict[str, Any]:
    r = d.client().post("/console/v1/routines/dispatch", json={"routine_id": routine})
    assert r.status_code == 202, r.text
    return dict(r.json())


def test_replace_cancels_the_run_on_another_daemon(daemon_factory: Callable[..., DaemonHandle], pg_url: str) -> None:
    a = daemon_factory(journal=pg_url, config=FAST)
    b = daemon_factory(journal=pg_url, config=FAST)
    a.write("rep.yaml", [_routine("rep", {"policies": {"concurrency": "replace"}}, {"echo-sleep": "10m"})])
    a.apply()
    first = _dispatch(a, "rep")["run_id"]
    a.wait_for(lambda: _run(pg_url, first)["status"] == "running", timeout=20, what="the first run on a")
    second = _dispatch(b, "rep")
    assert second["status"] == "running"  # started at once on b
    b.wait_for(lambda: _run(pg_url, first)["status"] == "cancelled", timeout=20, what="a cancelling its run")
    old = _run(pg_url, first)
    assert old["reason"] == f"replaced: superseded by run {second['run_id']}"
    assert old["daemon_id"] == _daemon_id(pg_url, a) and old["finished_at_ms"] is not None
    new = _run(pg_url, second["run_id"])
    assert new["status"] == "running" and new["daemon_id"] == _daemon_id(pg_url, b)
    # and back the other way: a replaces b's run
    third = _dispatch(a, "rep")
    a.wait_for(lambda: _run(pg_url, second["run_id"])["status"] == "cancelled", timeout=20, what="b cancelling")
    assert _run(pg_url, second["run_id"])["reason"] == f"replaced: superseded by run {third['run_id']}"
    assert [r["status"] for r in _runs(pg_url, "rep")] == ["cancelled", "cancelled", "running"]
    for d in (a, b):
        text = d.client().get("/metrics").text
        assert 'palyra_handovers_total{event="cancel_requested"} 1' in text, text
        assert 'palyra_handovers_total{event="cancelled_for_peer"} 1' in text, text


def test_queue_one_keeps_one_pending_run_across_daemons_and_starts_it_after_the_peer_s(
        daemon_factory: Callable[..., DaemonHandle], pg_url: str) -> None:
    a = daemon_factory(journal=pg_url, config=FAST)
    b = daemon_factory(journal=pg_url, config=FAST)
    a.write("q.yaml", [_routine("q", {"policies": {"concurrency": "queue_one"}}, {"echo-sleep": "3s"})])
    a.apply()
    first = _dispatch(a, "q")
    assert first["status"] == "running"
    queued = _dispatch(b, "q")  # a runs one: b queues its trigger
    assert queued["status"] == "accepted"
    assert _run(pg_url, queued["run_id"])["queued_at_ms"] is not None
    for d in (a, b):  # one pending run at most, whichever daemon is triggered
        extra = _dispatch(d, "q")
        assert (extra["status"], extra["reason"]) == (
            "skipped", f"concurrency: queue_one (run {queued['run_id']} is already queued)"), extra
    b.wait_for(lambda: _run(pg_url, queued["run_id"])["status"] == "succeeded", timeout=30,
               what="b's queued run, after a's")
    done, later = _run(pg_url, first["run_id"]), _run(pg_url, queued["run_id"])
    assert done["status"] == "succeeded" and later["daemon_id"] == _daemon_id(pg_url, b)
    assert later["started_at_ms"] >= done["finished_at_ms"]  # never overlapped
    assert later["queued_at_ms"] is None
    assert [r["status"] for r in _runs(pg_url, "q")] == ["succeeded", "succeeded", "skipped", "skipped"]


def test_a_killed_daemon_s_retry_wait_and_deferred_run_are_taken_over_by_a_peer(
        daemon_factory: Callable[..., DaemonHandle], pg_url: str, receiver: Receiver) -> None:
    a = daemon_factory(journal=pg_url, config=FAST)
    b = daemon_factory(journal=pg_url, config=FAST)
    now = datetime.now(UTC)
    if now.second >= 50:  # the window below must still hold when the run is triggered
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    window = {"start": now.strftime("%H:%M"), "end": (now + timedelta(minutes=1)).strftime("%H:%M"),
              "timezone": "utc", "action": "defer"}
    delivery = {"mode": "specific_channel", "channel": "hook"}
    a.write("r.yaml", [_hook(receiver.url),
                       _routine("flaky", {"policies": {"retry": {"max_attempts": 2, "backoff": "4s"}},
                                          "delivery": delivery}, {"echo-fail": "1"}),
                       _routine("later", {"quiet_hours": window, "delivery": delivery})])
    a.apply()
    a_id = _daemon_id(pg_url, a)
    deferred = _dispatch(a, "later")
    assert deferred["status"] == "accepted"
    first = _dispatch(a, "flaky")["run_id"]

    def retry_waiting() -> dict[str, Any] | None:
        rows = [r for r in _runs(pg_url, "flaky") if r["attempt"] == 2]
        return rows[0] if rows else None

    retry = a.wait_for(retry_waiting, timeout=20, what="the retry waiting on a")
    assert retry["status"] == "accepted" and retry["daemon_id"] == a_id and retry["fence"]
    a.kill()
    killed = time.monotonic()

    # b takes the retry over at its due time (after a's lease runs out) and runs it
    b.wait_for(lambda: _run(pg_url, retry["run_id"])["status"] == "succeeded", timeout=30, what="b running the retry")
    took = time.monotonic() - killed
    print(f"FIGURE retry wait taken over {took:.2f}s after kill -9 (lease 2s, due 4s after the failure)")
    done = _run(pg_url, retry["run_id"])
    b_id = _daemon_id(pg_url, b)
    assert done["daemon_id"] == b_id and done["fence"] != retry["fence"] and done["started_at_ms"] >= retry["not_before_ms"]
    assert _run(pg_url, first)["status"] == "failed"  # the first attempt, as a recorded it
    assert [x["run_id"] for x in receiver.bodies if x["routine_id"] == "flaky"] == [retry["run_id"]]

    # the deferred run is b's too, and runs once when the window ends
    b.wait_for(lambda: _run(pg_url, deferred["run_id"])["status"] == "succeeded", timeout=90,
               what="b running the deferred run at the window's end")
    late = _run(pg_url, deferred["run_id"])
    assert late["daemon_id"] == b_id and late["started_at_ms"] >= late["not_before_ms"]
    assert [x["run_id"] for x in receiver.bodies if x["routine_id"] == "later"] == [deferred["run_id"]]
    assert "taken over from a daemon that is gone" in b.log()
    assert all(not (r["reason"] or "").startswith("daemon_lost") for r in _runs(pg_url, "flaky") + _runs(pg_url, "later"))


def test_on_sqlite_the_restarted_daemon_takes_back_its_predecessor_s_retry_wait(
        daemon_factory: Callable[..., DaemonHandle]) -> None:
    d = daemon_factory(config=FAST)
    d.write("flaky.yaml", [_routine("flaky", {"policies": {"retry": {"max_attempts": 2, "backoff": "3s"}}},
                                    {"echo-fail": "1"})])
    d.apply()
    _dispatch(d, "flaky")
    retry = d.wait_for(lambda: next((r for r in d.runs("flaky") if r["attempt"] == 2), None), timeout=20,
                       what="the retry waiting")
    assert retry["status"] == "accepted"
    d.kill()
    d.restart()
    d.wait_for(lambda: next(r for r in d.runs("flaky") if r["run_id"] == retry["run_id"])["status"] == "succeeded",
               timeout=30, what="the restarted daemon running the retry")
    done = next(r for r in d.runs("flaky") if r["run_id"] == retry["run_id"])
    assert done["reason"] is None and done["started_at_ms"] >= retry["not_before_ms"]
    assert [r["status"] for r in d.runs("flaky")] == ["failed", "succeeded"]


def test_a_clean_stop_hands_its_retry_wait_to_a_peer(daemon_factory: Callable[..., DaemonHandle], pg_url: str) -> None:
    a = daemon_factory(journal=pg_url, config=FAST)
    b = daemon_factory(journal=pg_url, config=FAST)
    a.write("flaky.yaml", [_routine("flaky", {"policies": {"retry": {"max_attempts": 2, "backoff": "4s"}}},
                                    {"echo-fail": "1"})])
    a.apply()
    _dispatch(a, "flaky")
    retry = a.wait_for(lambda: next((r for r in _runs(pg_url, "flaky") if r["attempt"] == 2), None), timeout=20,
                       what="the retry waiting on a")
    assert a.stop() == 0  # SIGTERM: a cancels what it executes, but hands the waiting retry over
    assert "1 parked run(s) (retry waits, deferrals) handed to the other daemons" in a.log()
    handed = _run(pg_url, retry["run_id"])
    assert (handed["status"], handed["daemon_id"], handed["fence"]) in (("accepted", None, None),
                                                                        ("accepted", _daemon_id(pg_url, b), handed["fence"]))
    b.wait_for(lambda: _run(pg_url, retry["run_id"])["status"] == "succeeded", timeout=30, what="b running the retry")
    done = _run(pg_url, retry["run_id"])
    assert done["daemon_id"] == _daemon_id(pg_url, b) and done["started_at_ms"] >= retry["not_before_ms"]
    assert [r["status"] for r in _runs(pg_url, "flaky")] == ["failed", "succeeded"]


def test_quiet_hours_defer_one_run_per_window_across_daemons(daemon_factory: Callable[..., DaemonHandle],
                                                              pg_url: str) -> None:
    a = daemon_factory(journal=pg_url, config=FAST)
    b = daemon_factory(journal=pg_url, config=FAST)
    now = datetime.now(UTC)
    window = {"start": now.strftime("%H:%M"), "end": (now + timedelta(minutes=2)).strftime("%H:%M"),
              "timezone": "utc", "action": "defer"}
    a.write("later.yaml", [_routine("later", {"quiet_hours": window})])
    a.apply()
    deferred = _dispatch(a, "later")
    assert deferred["status"] == "accepted"
    stored = _run(pg_url, deferred["run_id"])
    assert stored["not_before_ms"] is not None and stored["fence"] and stored["received_at_ms"] is not None
    for d in (b, a):  # a second trigger in the window is skipped, on whichever daemon
        again = _dispatch(d, "later")
        assert (again["status"], again["reason"]) == (
            "skipped", f"quiet_hours: run {deferred['run_id']} is already deferred to the window end"), again
