"""`daemon --watch` end to end: drift self-heal on and off, an apply from another process is picked up
within a second, and the watcher's state shows in `palyra-ops status`."""

from __future__ import annotations

import json
import time
from typing import Any

from palyra_ops.cli import main

MANUAL = {"kind": "manual"}


def routine(name: str, prompt: str) -> dict[str, Any]:
    return {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": name},
            "spec": {"prompt": prompt, "trigger": MANUAL}}


def _prompt(d: Any, name: str) -> str:
    return d.client().get(f"/console/v1/routines/{name}").json()["spec"]["prompt"]


def test_self_heal_restores_api_drift(daemon_factory) -> None:
    d = daemon_factory(extra_args=["--watch", "--self-heal", "--rescan-interval", "1s"])
    d.write("a.yaml", [routine("healme", "from git")])
    d.wait_for(lambda: d.client().get("/console/v1/routines/healme").status_code == 200, timeout=8, what="reload")
    r = d.client().post("/console/v1/routines/upsert", json={"name": "healme", "spec": {"prompt": "by hand", "trigger": MANUAL}})
    assert r.status_code == 200, r.text
    # the next reconcile (the periodic rescan at the latest) puts the git version back
    d.wait_for(lambda: _prompt(d, "healme") == "from git", timeout=8, what="self-heal")
    assert d.client().get("/console/v1/routines/healme").json()["drift"] is False


def test_without_self_heal_drift_stays_until_apply(daemon_factory) -> None:
    d = daemon_factory(extra_args=["--watch", "--rescan-interval", "1s"])
    d.write("a.yaml", [routine("keepme", "from git")])
    d.wait_for(lambda: d.client().get("/console/v1/routines/keepme").status_code == 200, timeout=8, what="reload")
    d.client().post("/console/v1/routines/upsert", json={"name": "keepme", "spec": {"prompt": "by hand", "trigger": MANUAL}})
    time.sleep(2.5)  # two rescans
    assert _prompt(d, "keepme") == "by hand"
    st = d.client().get("/console/v1/system/status").json()["watcher"]
    assert "keepme" in st.get("drift_pending", [])


def test_apply_from_another_process_is_picked_up_within_a_second(daemon) -> None:
    every = {"kind": "schedule", "schedule": {"every": "1s"}}
    daemon.write("p.yaml", [{"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "late"},
                             "spec": {"prompt": "p", "trigger": every}}])
    # let the scheduler settle into its idle sleep (up to 15 s) before the apply
    time.sleep(0.5)
    t0 = time.monotonic()
    daemon.apply()
    daemon.wait_for(lambda: daemon.runs("late"), timeout=5, what="first run")
    # the first occurrence is 1 s after the apply, so anything under ~2 s means the apply woke it
    assert time.monotonic() - t0 < 2.5


def test_status_shows_the_live_daemon_and_watcher(daemon_factory, capsys, monkeypatch) -> None:
    d = daemon_factory(extra_args=["--watch"])
    d.write("a.yaml", [routine("shown", "p")])
    d.wait_for(lambda: d.client().get("/console/v1/routines/shown").status_code == 200, timeout=8, what="reload")
    args = ["status", "--dir", str(d.paths.dir), "--journal", str(d.paths.journal),
            "--url", d.base_url, "--token", d.token]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("State: Synced")
    assert f"Daemon: up at {d.base_url}" in out
    assert "watcher: Synced" in out
    assert main([*args, "--output", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["daemon"]["reachable"] is True and rep["daemon"]["watcher"]["state"] == "Synced"
    assert main([*args[:-4], "--url", "http://127.0.0.1:9", "--token", "x"]) == 0
    assert "Daemon: not reachable (no daemon at http://127.0.0.1:9" in capsys.readouterr().out
