"""Dispatch benchmarks of the daemon: the real path (issue 14), and lag, burst throughput, idle cost.

    .venv/bin/python bench/bench_dispatch.py [herd|anchor|overload|echo|lag|burst|idle|real|all]
                                             [--window 20] [--json OUT] ...

The real path (`real`, and `all`), every run delivered to a local webhook receiver (bench/real_path.py),
routines applied together (one anchor), APScheduler 3 at its best in the same run:
herd      1,000 routines `* * * * *`: the next top-of-minute herd; delivery lag p50/p99, lost, failed.
anchor    200 routines `every: 1s` on one anchor for --window s; delivery lag, lost, failed.
overload  1,000 routines `every: 1s` for --window s: delivered runs/s, runs left `accepted`, RSS, shed.
echo      10,000 routines due at one instant, webhook delivery: runs/s against one bare httpx client's
          loopback rate (AsyncClient.post and prebuilt requests, 16 in flight) in the same run.

Older cases (spread anchors unless --phase-ms 0; logs-only delivery):

lag    N routines on `every: 1s` for D seconds against the real daemon (subprocess); lag = scheduled
       instant -> gateway receipt (the run row's received_at_ms). Then APScheduler 3.x
       (AsyncIOScheduler, N interval jobs of 1 s) posting to the SAME daemon's gateway for D seconds;
       its lag = scheduled instant -> the gateway's receipt time echoed in the response.
burst  B routines all due at the same instant (an `at` schedule); time from that instant until every
       run is journaled as succeeded; no run lost, no occurrence twice. Baseline in the same run: bare
       httpx -> uvicorn loopback POSTs (same client pooling: 4 clients, 8 in flight) to a trivial app.
idle   I routines scheduled hours ahead; the daemon's CPU share and RSS over a window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from real_path import (  # type: ignore[import-not-found]  # noqa: E402
    Receiver,
    apscheduler_peer,
    palyra_counts,
    peer_counts,
    put_webhook_routines,
    settle,
)

from palyra_ops.clock import rfc3339  # noqa: E402
from palyra_ops.journal import open_journal  # noqa: E402
from palyra_ops.model import Resource  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(p / 100 * len(v) + 0.5)) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": pct(values, 50), "p90_ms": pct(values, 90), "p99_ms": pct(values, 99),
            "max_ms": max(values) if values else float("nan"),
            "mean_ms": statistics.fmean(values) if values else float("nan")}


class Daemon:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.journal = self.state / "journal.sqlite3"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.extra_args: list[str] = []  # e.g. ["--config", path] (bench_memory_lag.py)

    def start(self) -> None:
        env = {**os.environ, "PALYRA_STATE_ROOT": str(self.state), "PYTHONPATH": str(REPO)}
        log = open(self.root / "daemon.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "palyra_ops", "daemon", "--listen", f"127.0.0.1:{self.port}", "--journal",
             str(self.journal), "--log-level", "warning", *self.extra_args],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        log.close()
        self.profiler: subprocess.Popen[bytes] | None = None
        spy = os.environ.get("PALYRA_BENCH_PYSPY")  # collapsed stacks of the daemon (py-spy record)
        if spy:
            self.profiler = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                                              "--rate", "200", "-o", spy, "-p", str(self.proc.pid)],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        self.token = (self.state / "token").read_text().strip()

    def stop(self) -> None:
        if getattr(self, "profiler", None) is not None:
            assert self.profiler is not None
            self.profiler.send_signal(signal.SIGINT)
            self.profiler.wait(60)
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def cpu_seconds(self, children: bool = False) -> float:
        """The daemon's CPU seconds; with `children`, its live child processes' too (the delivery worker)."""
        assert self.proc
        pids = [self.proc.pid]
        if children:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                pids += [int(p) for p in (task / "children").read_text().split()]
        total = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def rss_mb(self) -> float:
        assert self.proc
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def put_routines(journal_path: Path, specs: list[tuple[str, dict[str, Any]]], phase_ms: int = 0) -> None:
    """Write routines the way apply does (resource + job row), in one transaction; fast for 10k.

    `phase_ms` > 0 spreads the routines' anchors (as if applied `phase_ms` apart) so `every`
    routines do not all fire in the same millisecond.
    """
    from palyra_ops.reconcile import _write_job  # the same job computation apply uses

    with open_journal(journal_path) as j, j.transaction() as c:
        base = j.clock.now_ms()
        for i, (name, spec) in enumerate(specs):
            now = base + i * phase_ms
            res = Resource.from_spec("Routine", name, spec)
            j.put_resource(c, kind="Routine", name=name, body=res.body, hash=res.hash, managed=False,
                           applied_hash=None, source_file=None)
            _write_job(j, c, res, None, now)
        j.bump_serial(c)


def clear_routines(journal_path: Path) -> None:
    with open_journal(journal_path) as j, j.transaction() as c:
        for r in j.list_resources("Routine"):
            j.delete_resource(c, "Routine", r.name)
        j.bump_serial(c)


# -- lag --------------------------------------------------------------------------------------------


def bench_lag(n: int, duration: float, phase_ms: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(Path(tmp))
        d.start()
        try:
            put_routines(d.journal, [(f"lag-{i:04d}", {"prompt": "x", "trigger": {"kind": "schedule", "schedule": {"every": "1s"}}})
                                     for i in range(n)], phase_ms=phase_ms)
            t_start = int(time.time() * 1000) + 2000  # let the first second settle
            time.sleep(duration + 2)
            clear_routines(d.journal)
            time.sleep(1.0)
            with open_journal(d.journal) as j:
                rows = [r for r in j.runs_in_order() if r["scheduled_at_ms"] and r["scheduled_at_ms"] >= t_start]
            lags = [r["received_at_ms"] - r["scheduled_at_ms"] for r in rows if r["received_at_ms"] is not None]
            statuses: dict[str, int] = {}
            for r in rows:
                statuses[r["status"]] = statuses.get(r["status"], 0) + 1
            ours = {**summary(lags), "statuses": statuses}
            aps = asyncio.run(_apscheduler_lag(d, n, duration, phase_ms))
        finally:
            d.stop()
    return {"routines": n, "duration_s": duration, "phase_ms": phase_ms, "palyra": ours, "apscheduler": aps}


async def _apscheduler_lag(d: Daemon, n: int, duration: float, phase_ms: int) -> dict[str, Any]:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    lags: list[float] = []
    errors = 0
    clients = [httpx.AsyncClient(headers={"Authorization": f"Bearer {d.token}"}, timeout=30) for _ in range(4)]
    start_s = int(time.time()) + 2
    cutoff = start_s + 2  # skip the first seconds, as for palyra

    async def job(i: int) -> None:
        nonlocal errors
        first_ms = start_s * 1000 + i * phase_ms
        nominal_ms = first_ms + (int(time.time() * 1000) - first_ms) // 1000 * 1000  # lag < 1 s
        try:
            r = await clients[i % 4].post(d.url + "/gateway/v1/messages",
                                          json={"principal": "user:bench", "text": "x"})
            rec = r.json()["received_at_ms"]
            if nominal_ms >= cutoff * 1000:
                lags.append(rec - nominal_ms)
        except asyncio.CancelledError:  # jobs still in flight at shutdown
            return
        except Exception:
            errors += 1

    from datetime import UTC, datetime

    sched = AsyncIOScheduler()
    for i in range(n):
        sched.add_job(job, "interval", seconds=1, args=[i],
                      start_date=datetime.fromtimestamp(start_s + i * phase_ms / 1000, UTC),
                      misfire_grace_time=30, coalesce=False, max_instances=10)
    sched.start()
    await asyncio.sleep(duration + 2)
    sched.shutdown(wait=False)
    await asyncio.sleep(1.0)  # let in-flight calls finish before the clients close
    for c in clients:
        await c.aclose()
    return {**summary(lags), "errors": errors}


# -- burst ------------------------------------------------------------------------------------------


def bench_burst(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(Path(tmp))
        d.start()
        try:
            due_ms = (int(time.time()) + 8) * 1000 + 500
            t0 = time.time()
            put_routines(d.journal, [(f"b-{i:05d}", {"prompt": "x", "trigger": {"kind": "schedule",
                                                     "schedule": {"at": rfc3339(due_ms)}}}) for i in range(n)])
            setup_s = time.time() - t0
            wait = due_ms / 1000 - time.time()
            if wait < 0:
                raise SystemExit(f"setting up {n} routines took too long ({setup_s:.1f}s)")
            time.sleep(wait)
            with open_journal(d.journal) as j:
                deadline = time.time() + 120
                while time.time() < deadline:
                    counts = j.count_runs_by_status()
                    if counts.get("succeeded", 0) + counts.get("failed", 0) >= n and not counts.get("running") \
                            and not counts.get("accepted"):
                        break
                    time.sleep(0.05)
                rows = j.runs_in_order()
            finished = max(r["finished_at_ms"] for r in rows)
            keys = [r["occurrence_key"] for r in rows]
            elapsed = (finished - due_ms) / 1000
            ours = {"runs": len(rows), "succeeded": sum(r["status"] == "succeeded" for r in rows),
                    "distinct_occurrences": len(set(keys)), "elapsed_s": round(elapsed, 3),
                    "runs_per_s": round(len(rows) / elapsed, 1),
                    "last_received_after_due_s": round((max(r["received_at_ms"] for r in rows) - due_ms) / 1000, 3),
                    "setup_s": round(setup_s, 1)}
        finally:
            d.stop()
    base = asyncio.run(_bare_httpx(n))
    ours["ratio_to_bare_httpx"] = round(ours["runs_per_s"] / base["req_per_s"], 2)
    return {"routines": n, "palyra": ours, "bare_httpx": base}


BARE_APP = """
import json, sys
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
import uvicorn
async def msg(request):
    body = await request.json()
    return JSONResponse({"ok": True, "run": body.get("run_id")}, status_code=202)
app = Starlette(routes=[Route("/gateway/v1/messages", msg, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


async def _bare_httpx(n: int, clients: int = 4, in_flight: int = 8) -> dict[str, Any]:
    """The same loopback mechanics as the daemon's dispatch (prebuilt requests on 4 pooled transports,
    8 in flight) against a trivial app, and `AsyncClient.post` for reference."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)])
    url = f"http://127.0.0.1:{port}/gateway/v1/messages"
    out: dict[str, Any] = {"requests": n}
    try:
        for _ in range(200):
            try:
                httpx.post(url, json={}, timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        msg = {"principal": "system:daemon", "routine_id": "x", "run_id": "y", "text": "x", "trigger": {"kind": "schedule"}}
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        sem = asyncio.Semaphore(in_flight)
        u = httpx.URL(url)
        headers = {"Content-Type": "application/json"}
        ext = {"timeout": {"connect": 30, "read": 30, "write": 30, "pool": 30}}

        transports = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(clients)]

        async def via_transport(i: int) -> None:
            async with sem:
                req = httpx.Request("POST", u, content=json.dumps(msg).encode(), headers=headers, extensions=ext)
                r = await transports[i % clients].handle_async_request(req)
                await r.aread()
                await r.aclose()
                assert r.status_code == 202

        t0 = time.perf_counter()
        await asyncio.gather(*(via_transport(i) for i in range(n)))
        el = time.perf_counter() - t0
        for t in transports:
            await t.aclose()
        out.update(elapsed_s=round(el, 3), req_per_s=round(n / el, 1))

        cs = [httpx.AsyncClient(limits=limits, timeout=30) for _ in range(clients)]

        async def via_client(i: int) -> None:
            async with sem:
                r = await cs[i % clients].post(url, content=json.dumps(msg), headers=headers)
                assert r.status_code == 202

        t0 = time.perf_counter()
        await asyncio.gather(*(via_client(i) for i in range(n)))
        el = time.perf_counter() - t0
        for c in cs:
            await c.aclose()
        out["client_post_req_per_s"] = round(n / el, 1)
    finally:
        proc.terminate()
        proc.wait(10)
    return out


# -- the real path (issue 14) ------------------------------------------------------------------------


def _metric(d: Daemon, name: str) -> float | None:
    try:
        text = httpx.get(d.url + "/metrics", headers={"Authorization": f"Bearer {d.token}"}, timeout=10).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def bench_herd(n: int) -> dict[str, Any]:
    """The top-of-minute herd: n routines `* * * * *` applied together, the next minute's fires."""
    with tempfile.TemporaryDirectory() as tmp:
        rcv = Receiver(free_port())
        d = Daemon(Path(tmp))
        d.start()
        try:
            if 60 - time.time() % 60 < 3:  # too close to a minute to set up: take the next one
                time.sleep(60 - time.time() % 60 + 0.2)
            put_webhook_routines(d.journal, rcv.url, [f"herd-{i:04d}" for i in range(n)], {"cron": "* * * * *"})
            herd_ms = (int(time.time()) // 60 + 1) * 60_000
            time.sleep(max(0.0, herd_ms / 1000 - time.time()))
            rows = settle(d.journal, herd_ms, herd_ms + 1, 50, n, burst=True)
            ours = {**palyra_counts(rows, rcv.dump(), n), "cpu_s": round(d.cpu_seconds(), 1),
                    "cpu_s_with_children": round(d.cpu_seconds(children=True), 1),
                    "rss_mb": round(d.rss_mb(), 1)}
        finally:
            d.stop()
        try:
            now = time.time()
            peer_ms = (int(now) // 60 + 1) * 60_000
            if peer_ms / 1000 - now < 3:
                peer_ms += 60_000
            stats = asyncio.run(apscheduler_peer(rcv.url, n, "cron", peer_ms / 1000 + 8 - now, start_s=now))
            peer = peer_counts(rcv.dump(), peer_ms, peer_ms + 1, n, stats)
        finally:
            rcv.stop()
    return {"routines": n, "palyra": ours, "apscheduler": peer}


def bench_every(n: int, window_s: float, *, overload: bool) -> dict[str, Any]:
    """n routines `every: 1s` on one anchor: lag over a window (after 3 s of warm-up); in overload
    also delivered runs/s in the window, runs left `accepted` and RSS at its end."""
    warm_ms = 3000
    with tempfile.TemporaryDirectory() as tmp:
        rcv = Receiver(free_port())
        d = Daemon(Path(tmp))
        d.start()
        try:
            anchor = put_webhook_routines(d.journal, rcv.url, [f"ev-{i:04d}" for i in range(n)], {"every": "1s"})
            lo = anchor + warm_ms
            hi = lo + int(window_s * 1000)
            time.sleep(max(0.0, hi / 1000 - time.time()))
            extra: dict[str, Any] = {}
            if overload:
                with open_journal(d.journal) as j:
                    counts = j.count_runs_by_status()
                extra = {"left_accepted_at_end": counts.get("accepted", 0), "rss_mb_at_end": round(d.rss_mb(), 1),
                         "due_backlog_gauge": _metric(d, "palyra_due_backlog")}
            rows = settle(d.journal, lo, hi, 5 if overload else 40, 0 if overload else n * int(window_s))
            receipts = rcv.dump()
            ours = palyra_counts(rows, receipts, None if overload else n * int(window_s))
            ours.update(extra)
            if overload:
                ours["delivered_per_s"] = round(sum(1 for t, _, _ in receipts if lo <= t < hi) / window_s, 1)
        finally:
            d.stop()
        try:
            start = time.time() + 2
            stats = asyncio.run(apscheduler_peer(rcv.url, n, "interval", warm_ms / 1000 + window_s, start_s=start))
            plo = int(start * 1000) + warm_ms
            phi = plo + int(window_s * 1000)
            receipts = rcv.dump()
            peer = peer_counts(receipts, plo, phi, None if overload else n * int(window_s), stats)
            if overload:
                peer["delivered_per_s"] = round(sum(1 for t, _, _ in receipts if plo <= t < phi) / window_s, 1)
        finally:
            rcv.stop()
    out = {"routines": n, "window_s": window_s, "palyra": ours, "apscheduler": peer}
    if overload:
        out["ratio_delivered_per_s"] = round(ours["delivered_per_s"] / max(peer["delivered_per_s"], 0.1), 2)
    return out


def bench_echo(n: int) -> dict[str, Any]:
    """n routines due at one instant, each delivered to the webhook receiver; until the last receipt."""
    with tempfile.TemporaryDirectory() as tmp:
        rcv = Receiver(free_port())
        d = Daemon(Path(tmp))
        d.start()
        try:
            due_ms = (int(time.time()) + 8) * 1000 + 500
            put_webhook_routines(d.journal, rcv.url, [f"e-{i:05d}" for i in range(n)], {"at": rfc3339(due_ms)})
            time.sleep(max(0.0, due_ms / 1000 - time.time()))
            rows = settle(d.journal, due_ms, due_ms + 1, 120, n, burst=True)
            receipts = rcv.dump()
            ours = palyra_counts(rows, receipts, n)
            last = max((t for t, _, _ in receipts), default=float("nan"))
            ours["elapsed_s"] = round((last - due_ms) / 1000, 3)
            ours["runs_per_s"] = round(ours["received"] / max(ours["elapsed_s"], 1e-3), 1)
            ours["cpu_s_total"] = round(d.cpu_seconds(), 1)
            ours["cpu_s_with_children"] = round(d.cpu_seconds(children=True), 1)
        finally:
            d.stop()
            rcv.stop()
    base = asyncio.run(_bare_httpx(n, clients=1, in_flight=16))
    ours["ratio_to_one_bare_client_post"] = round(ours["runs_per_s"] / base["client_post_req_per_s"], 2)
    ours["ratio_to_bare_prebuilt"] = round(ours["runs_per_s"] / base["req_per_s"], 2)
    return {"routines": n, "palyra": ours, "bare_httpx_one_client": base}


# -- idle -------------------------------------------------------------------------------------------


def bench_idle(n: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(Path(tmp))
        d.start()
        try:
            put_routines(d.journal, [(f"idle-{i:05d}", {"prompt": "x", "trigger": {"kind": "schedule",
                                      "schedule": {"cron": f"{i % 60} {3 + i % 4} * * *"}}}) for i in range(n)])
            time.sleep(3)  # let the scheduler notice and settle
            c0, t0 = d.cpu_seconds(), time.time()
            time.sleep(seconds)
            c1, t1 = d.cpu_seconds(), time.time()
            rss = d.rss_mb()
        finally:
            d.stop()
    return {"routines": n, "window_s": seconds, "cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 3),
            "rss_mb": round(rss, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="?", default="all",
                    choices=["herd", "anchor", "overload", "echo", "real", "lag", "burst", "idle", "all"],
                    help="a case, `real` (the four real-path cases) or `all` (real + idle)")
    ap.add_argument("--window", type=float, default=20, help="seconds measured in the anchor and overload cases")
    ap.add_argument("--herd", type=int, default=1000, help="routines in the top-of-minute herd")
    ap.add_argument("--anchor", type=int, default=200, help="routines on one anchor (every: 1s)")
    ap.add_argument("--overload", type=int, default=1000, help="routines on one anchor in the overload case")
    ap.add_argument("--echo", type=int, default=10_000, help="routines due at one instant in the echo burst")
    ap.add_argument("--duration", type=float, default=60, help="seconds of the old lag case")
    ap.add_argument("--routines", type=int, default=200)
    ap.add_argument("--phase-ms", type=int, default=5, help="anchor spacing of the lag routines (0: all in phase)")
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--idle", type=int, default=10_000)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out: dict[str, Any] = {}
    real = args.which in ("real", "all")
    cases = [("herd", lambda: bench_herd(args.herd)),
             ("anchor", lambda: bench_every(args.anchor, args.window, overload=False)),
             ("overload", lambda: bench_every(args.overload, args.window, overload=True)),
             ("echo", lambda: bench_echo(args.echo))]
    for name, run in cases:
        if real or args.which == name:
            out[name] = run()
            print(json.dumps({name: out[name]}, indent=2), flush=True)
    if args.which == "lag":
        out["lag"] = bench_lag(args.routines, args.duration, args.phase_ms)
        print(json.dumps({"lag": out["lag"]}, indent=2), flush=True)
    if args.which == "burst":
        out["burst"] = bench_burst(args.burst)
        print(json.dumps({"burst": out["burst"]}, indent=2), flush=True)
    if args.which in ("idle", "all"):
        out["idle"] = bench_idle(args.idle, args.idle_seconds)
        print(json.dumps({"idle": out["idle"]}, indent=2), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
