"""Several real daemons on one PostgreSQL journal (SPEC §11): the registry, start-up recovery that
spares live peers, the reaper, and `system/status` listing the daemons.

Daemons are real `palyra-ops daemon` processes (tests/conftest.py `start_daemon`) on the tests' own
throwaway cluster, with a short lease (`cluster.lease: 2s`) so that a kill -9 is noticed quickly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from conftest import DaemonHandle
from ui_console import signed_in

from palyra_ops.journal import open_journal

FAST = {"cluster": {"heartbeat_interval": "200ms", "lease": "2s"}}


def _daemons(url: str) -> list[dict[str, Any]]:
    with open_journal(url) as j:
        return [dict(d) for d in j.list_daemons()]


def test_each_daemon_registers_heartbeats_and_leaves_on_a_clean_stop(
        daemon_factory: Callable[..., DaemonHandle], pg_url: str) -> None:
    a = daemon_factory(journal=pg_url, config=FAST)
    b = daemon_factory(journal=pg_url, config=FAST)
    listed = a.wait_for(lambda: (ds := _daemons(pg_url)) and len(ds) == 2 and all(d["address"] for d in ds) and ds,
                        what="two daemons registered")
    assert {d["address"] for d in listed} == {a.base_url.removeprefix("http://"), b.base_url.removeprefix("http://")}
    assert {d["pid"] for d in listed} == {a.proc.pid, b.proc.pid} and all(d["alive"] for d in listed)
    first = {d["daemon_id"]: d["heartbeat_at_ms"] for d in listed}
    a.wait_for(lambda: all(d["heartbeat_at_ms"] > first[d["daemon_id"]] for d in _daemons(pg_url)),
               what="heartbeats renewed")
    ui = signed_in(a.base_url, a.token)  # the console's system page lists them
    page = ui.get("/ui/system")
    ui.close()
    assert page.status_code == 200
    table = page.text.split('id="daemons"', 1)[1].split("</table>", 1)[0]
    for d in listed:
        assert d["daemon_id"] in table and f"{d['host']} · {d['pid']}" in table
    assert table.count("(this daemon)") == 1 and table.count(">alive<") == 2
    assert b.stop() == 0
    assert [d["pid"] for d in _daemons(pg_url)] == [a.proc.pid]  # a clean stop leaves at once


def _routine(name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    return {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": meta, "spec": spec}


def _run(url: str, run_id: str) -> dict[str, Any]:
    with open_journal(url) as j:
        r = j.get_run(run_id)
    assert r is not None
    return dict(r)


def test_a_killed_daemon_s_runs_are_failed_by_a_peer_and_a_starting_daemon_spares_live_ones(
        daemon_factory: Callable[..., DaemonHandle], pg_url: str) -> None:
    a = daemon_factory(journal=pg_url, config=FAST)
    b = daemon_factory(journal=pg_url, config=FAST)
    a.write("slow.yaml", [_routine("slow", {"prompt": "p", "trigger": {"kind": "manual"},
                                            "policies": {"concurrency": "allow"}}, {"echo-sleep": "10m"})])
    a.apply()
    ids = {}
    for name, d in (("a", a), ("b", b)):
        r = d.client().post("/console/v1/routines/dispatch", json={"routine_id": "slow"})
        assert r.status_code == 202, r.text
        ids[name] = r.json()["run_id"]
    a.wait_for(lambda: all(_run(pg_url, rid)["status"] == "running" for rid in ids.values()), what="both running")
    # a third daemon's start-up recovery leaves the live daemons' runs alone
    c = daemon_factory(journal=pg_url, config=FAST)
    assert "was active when the previous daemon stopped" not in c.log()
    assert all(_run(pg_url, rid)["status"] == "running" for rid in ids.values())
    a_id = next(d["daemon_id"] for d in _daemons(pg_url) if d["pid"] == a.proc.pid)

    a.kill()  # SIGKILL: no shutdown, no deregistration
    killed = time.monotonic()
    b.wait_for(lambda: _run(pg_url, ids["a"])["status"] != "running", timeout=20, what="a's run reaped")
    took = time.monotonic() - killed
    print(f"FIGURE reaped {took:.2f}s after kill -9 (lease 2s)")
    assert took < 2 + 5, f"finalized {took:.1f}s after the kill (lease 2s)"
    lost = _run(pg_url, ids["a"])
    assert lost["status"] == "failed" and lost["reason"].startswith(f"daemon_lost: daemon {a_id} ("), lost
    assert _run(pg_url, ids["b"])["status"] == "running"  # the live peer's run is untouched
    status = b.client().get("/console/v1/system/status").json()
    assert sorted((d["pid"], d["alive"], d["self"]) for d in status["daemons"]) == sorted(
        [(b.proc.pid, True, True), (c.proc.pid, True, False)])
    assert status["daemon"]["daemon_id"] == next(d["daemon_id"] for d in status["daemons"] if d["self"])
    with open_journal(pg_url) as j:
        events = [e for e in j.list_events(200) if e["name"] == "daemon.lost"]
    assert len(events) == 1 and a_id in (events[0]["payload"] or ""), events  # one reaper won, once
    reapers = [d for d in (b, c) if f"daemon {a_id} " in d.log() and "is gone" in d.log()]
    assert len(reapers) == 1, [d.log()[-2000:] for d in (b, c)]


def test_on_sqlite_a_restarted_daemon_is_the_only_one_listed(daemon_factory: Callable[..., DaemonHandle]) -> None:
    """One daemon per SQLite journal (its lock file): after a kill -9 the dead daemon's row is dropped
    at the next start, not listed as alive until its lease runs out."""
    d = daemon_factory(config=FAST)
    first = d.client().get("/console/v1/system/status").json()["daemons"]
    assert [(x["pid"], x["self"], x["alive"]) for x in first] == [(d.proc.pid, True, True)]
    d.kill()
    d.restart()
    again = d.client().get("/console/v1/system/status").json()
    assert [(x["pid"], x["self"], x["alive"]) for x in again["daemons"]] == [(d.proc.pid, True, True)]
    assert again["daemons"][0]["daemon_id"] != first[0]["daemon_id"]
