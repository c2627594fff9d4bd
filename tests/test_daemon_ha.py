"""Several real daemons on one PostgreSQL journal (SPEC §11): the registry, start-up recovery that
spares live peers, the reaper, and `system/status` listing the daemons.

Daemons are real `palyra-ops daemon` processes (tests/conftest.py `start_daemon`) on the tests' own
throwaway cluster, with a short lease (`cluster.lease: 2s`) so that a kill -9 is noticed quickly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import DaemonHandle

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
    assert b.stop() == 0
    assert [d["pid"] for d in _daemons(pg_url)] == [a.proc.pid]  # a clean stop leaves at once
