"""The workloads users produce, for `bench_dispatch.py` (issue 14): every run delivered to a `webhook`
Channel, routines applied together (one shared anchor, as `apply` writes them), APScheduler 3 in its
best configuration posting to the same receiver in the same session.

Why a separate module: the measuring parts (the receiver, the peer, the counting) are shared by the
four cases and would push bench_dispatch.py past the module size limit.

The receiver is its own process (uvicorn + a bare ASGI app) that stamps the wall time each POST
reaches it and keeps (receipt ms, scheduled_at, run_id); lag = receipt - scheduled instant, the same
measure for both schedulers. Only what the daemon did is counted: runs whose scheduled instant lies
in the window, followed until they finish before the daemon is stopped (teardown cancels nothing we
count); lost = an expected occurrence with no receipt, failed = a run that did not succeed or whose
delivery failed; shed = runs the misfire policy skipped (SPEC: not lost, recorded).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from palyra_ops.clock import parse_rfc3339, rfc3339  # noqa: E402
from palyra_ops.journal import open_journal  # noqa: E402
from palyra_ops.model import Resource  # noqa: E402

RECEIVER_APP = r"""
import json, sys, time
import uvicorn
recs = []
async def app(scope, receive, send):
    t = time.time() * 1000
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    if scope["path"] == "/hook":
        try:
            d = json.loads(body)
        except ValueError:  # a probe, or something else than a delivery
            d = {}
        if d.get("run_id"):
            recs.append((t, d.get("scheduled_at"), d.get("run_id")))
        out = b"{}"
    elif scope["path"] == "/dump":
        out = json.dumps(recs).encode()
        recs.clear()
    else:
        out = b"{}"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, lifespan="off")
"""


class Receiver:
    """A local webhook receiver in its own process that records the receipt time of every POST."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hook"
        self.proc = subprocess.Popen([sys.executable, "-c", RECEIVER_APP, str(port)])
        for _ in range(400):
            try:
                httpx.post(self.url, content=b"{}", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        self.dump()

    def dump(self) -> list[tuple[float, int | None, str | None]]:
        """Receipts since the last dump: (receipt ms, scheduled ms, run id)."""
        raw = httpx.get(f"http://127.0.0.1:{self.port}/dump", timeout=30).json()
        return [(t, parse_rfc3339(s) if s else None, rid) for t, s, rid in raw]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def put_webhook_routines(journal_path: Path, hook_url: str, names: list[str], schedule: dict[str, Any],
                         policies: dict[str, Any] | None = None) -> int:
    """A webhook Channel and routines delivering to it, written the way `apply` writes them: one
    transaction, one `now`, so every routine shares one anchor. Returns that anchor (ms)."""
    from palyra_ops.reconcile import _write_job  # the same job computation apply uses

    with open_journal(journal_path) as j, j.transaction() as c:
        now = j.clock.now_ms()
        ch = Resource.from_spec("Channel", "hook", {"type": "webhook", "url": hook_url})
        j.put_resource(c, kind="Channel", name="hook", body=ch.body, hash=ch.hash, managed=False,
                       applied_hash=None, source_file=None)
        for name in names:
            spec: dict[str, Any] = {"prompt": "x", "trigger": {"kind": "schedule", "schedule": schedule},
                                    "delivery": {"mode": "specific_channel", "channel": "hook"}}
            if policies:
                spec["policies"] = policies
            res = Resource.from_spec("Routine", name, spec)
            j.put_resource(c, kind="Routine", name=name, body=res.body, hash=res.hash, managed=False,
                           applied_hash=None, source_file=None)
            _write_job(j, c, res, None, now)
        j.bump_serial(c)
    return now


def lag_summary(lags: list[float]) -> dict[str, float]:
    """n, p50, p99, max of lags in ms (nearest-rank percentiles)."""
    v = sorted(lags)

    def pct(p: float) -> float:
        return v[min(len(v) - 1, max(0, int(round(p / 100 * len(v) + 0.5)) - 1))] if v else float("nan")

    return {"n": len(v), "p50_ms": round(pct(50), 1), "p99_ms": round(pct(99), 1),
            "max_ms": round(v[-1], 1) if v else float("nan")}


def settle(journal_path: Path, lo: int, hi: int, timeout_s: float, expected: int = 0,
           burst: bool = False) -> list[dict[str, Any]]:
    """Wait until at least `expected` runs scheduled in [lo, hi) exist and all of them have finished
    (or the timeout); return the rows."""
    deadline = time.time() + timeout_s
    with open_journal(journal_path) as j:
        # a cheap aggregate while the burst runs: reading every row each poll took CPU from it
        while burst and time.time() < deadline:  # (every run in the journal is in the window)
            counts = j.count_runs_by_status()
            if sum(counts.values()) >= expected and not counts.get("accepted") and not counts.get("running"):
                break
            time.sleep(0.25)
        while True:
            rows = [dict(r) for r in j.runs_in_order() if r["scheduled_at_ms"] is not None and lo <= r["scheduled_at_ms"] < hi]
            done = len(rows) >= expected and not any(r["status"] in ("accepted", "running") for r in rows)
            if done or time.time() > deadline:
                return rows
            time.sleep(0.5)


def palyra_counts(rows: list[dict[str, Any]], receipts: list[tuple[float, int | None, str | None]],
                  expected: int | None) -> dict[str, Any]:
    """What the daemon did with the runs of the window: lag of the received ones, lost, failed, shed."""
    by_id = {r["run_id"]: r for r in rows}
    got = {rid: (t, s) for t, s, rid in receipts if rid in by_id}
    lags = [t - s for t, s in got.values() if s is not None]
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    shed = sum(int(r.get("skipped_count") or 0) for r in rows) + statuses.get("skipped", 0)
    unfinished = sum(1 for r in rows if r["status"] in ("accepted", "running"))
    failed = sum(1 for r in rows if r["status"] not in ("succeeded", "skipped", "accepted", "running")
                 or (r["status"] == "succeeded" and r.get("delivery_status") != "delivered"))
    reasons: dict[str, int] = {}
    for r in rows:
        if r["status"] == "skipped":
            why = (r.get("reason") or "").split(" (", 1)[0]
            reasons[why] = reasons.get(why, 0) + 1
    # where the runs waited: each stage's time after the scheduled instant (p50/p99 ms)
    stages: dict[str, Any] = {}
    for stage, key in (("claimed", "created_at_ms"), ("gateway_receipt", "received_at_ms"),
                       ("started", "started_at_ms"), ("finished", "finished_at_ms")):
        v = [r[key] - r["scheduled_at_ms"] for r in rows if r.get(key) is not None and r.get("scheduled_at_ms") is not None]
        s = lag_summary(v)
        stages[stage] = [s["p50_ms"], s["p99_ms"]]
    stages["delivered"] = [lag_summary(lags)["p50_ms"], lag_summary(lags)["p99_ms"]]
    out: dict[str, Any] = {**lag_summary(lags), "runs": len(rows), "received": len(got), "failed": failed,
                           "stages_p50_p99_ms": stages,
                           "skipped_by": reasons,
                           "unfinished": unfinished,
                           "shed_by_misfire": shed, "statuses": statuses}
    if expected is not None:
        out["lost"] = max(0, expected - len(got) - shed)
    return out


# -- the peer -------------------------------------------------------------------------------------


async def apscheduler_peer(hook_url: str, n: int, trigger: str, window_s: float, *, start_s: float,
                           interval_s: float = 1.0) -> dict[str, Any]:
    """APScheduler 3 at its best: AsyncIOScheduler, one shared httpx.AsyncClient with a pool of 16,
    16 posts in flight, `max_instances=1` so a job still running sheds its next instance, coalesce.

    Each post carries the instant APScheduler scheduled it for (taken from its submission event, which
    is dispatched before the job's task runs), so its lag is measured exactly like the daemon's.
    Returns its receipts' window [start, end) and what it shed or failed.
    """
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)  # jobs cancelled at shutdown are not errors here
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=16, max_keepalive_connections=16), timeout=30)
    sem = asyncio.Semaphore(16)
    pending: dict[str, deque[int]] = {}
    stats = {"posted": 0, "errors": 0, "shed_max_instances": 0, "missed": 0}
    headers = {"Content-Type": "application/json"}

    def on_event(ev: Any) -> None:
        if ev.code == EVENT_JOB_SUBMITTED:
            pending.setdefault(ev.job_id, deque()).append(int(ev.scheduled_run_times[-1].timestamp() * 1000))
        elif ev.code == EVENT_JOB_MAX_INSTANCES:
            stats["shed_max_instances"] += len(ev.scheduled_run_times)
        elif ev.code == EVENT_JOB_MISSED:
            stats["missed"] += 1

    async def job(jid: str) -> None:
        q = pending.get(jid)
        nominal = q.popleft() if q else int(time.time() * 1000)
        body = json.dumps({"run_id": f"{jid}|{nominal}", "scheduled_at": rfc3339(nominal), "output": "x",
                           "status": "succeeded"}).encode()
        try:
            async with sem:
                r = await client.post(hook_url, content=body, headers=headers)
            stats["posted"] += 1
            if r.status_code >= 300:
                stats["errors"] += 1
        except asyncio.CancelledError:
            return
        except Exception:
            stats["errors"] += 1

    sched = AsyncIOScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
    sched.add_listener(on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
    start = datetime.fromtimestamp(start_s, UTC)
    for i in range(n):
        jid = f"aps-{i:05d}"
        if trigger == "cron":
            sched.add_job(job, "cron", minute="*", args=[jid], id=jid, start_date=start)
        else:
            sched.add_job(job, "interval", seconds=interval_s, args=[jid], id=jid, start_date=start)
    sched.start()
    await asyncio.sleep(max(0.0, start_s + window_s - time.time()))
    sched.shutdown(wait=False)
    await asyncio.sleep(2.0)  # the posts in flight at the window's end land (they are not counted)
    await client.aclose()
    return stats


def peer_counts(receipts: list[tuple[float, int | None, str | None]], lo: int, hi: int,
                expected: int | None, stats: dict[str, Any]) -> dict[str, Any]:
    got = [(t, s) for t, s, rid in receipts if rid and rid.startswith("aps-") and s is not None and lo <= s < hi]
    out: dict[str, Any] = {**lag_summary([t - s for t, s in got]), "received": len(got), **stats}
    if expected is not None:
        out["lost"] = max(0, expected - len(got) - stats["shed_max_instances"])
    return out
