"""Web console benchmarks (issue 13): page time with 10,000 routines, and what a live console costs
the scheduler.

    .venv/bin/python bench/bench_ui.py [pages|lag|all] [--routines 10000] [--repeat 30]
                                       [--lag-routines 200] [--lag-seconds 30] [--json OUT]

pages  10,000 routines (bench_plan's generator: 10 crons, 5 zones, jitter) written into a real
       daemon's journal; every console page measured N times through a signed-in httpx client.
       Server time = the console's `Server-Timing: app;dur=` (gate + handler + template); the
       loopback round trip is printed next to it. The peer in the same run: the API's
       `GET /console/v1/routines?limit=50` (the same page through the API's own listing). "cold" is
       the first request after a routine changed (the console's routine index is rebuilt).
lag    N routines on `every: 1s` against the real daemon; lag = scheduled instant -> gateway receipt
       (run row's received_at_ms), p50/p99 over a window WITHOUT a browser, then over a window of the
       same length WITH headless Chromium signed in on the routines list and a routine page (both
       polling their live fragments every 2 s), then without again — same daemon, same run. Runs
       lost or failed are counted.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_dispatch import Daemon, clear_routines, put_routines, summary  # noqa: E402

from palyra_ops.journal import open_journal  # noqa: E402

CSRF = re.compile(r'name="csrf" value="([^"]*)"')
CRONS = ["0 9 * * 1-5", "*/15 * * * *", "0 * * * *", "30 2 * * *", "0 0 * * 0", "5 4 * * *", "0 12 1 * *",
         "@daily", "@hourly", "45 23 * * 1-5"]
ZONES = ["utc", "Europe/Prague", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]


def spec(i: int) -> dict[str, Any]:
    return {"owner": f"user:owner-{i % 50}", "prompt": f"Summarize the state of service {i}",
            "channel": f"team-{i % 20}", "enabled": i % 97 != 0,
            "trigger": {"kind": "schedule", "schedule": {"cron": CRONS[i % len(CRONS)], "timezone": ZONES[i % len(ZONES)]}},
            "policies": {"jitter": "30s", "concurrency": "forbid"}, "delivery": {"mode": "logs_only"}}


def sign_in(url: str, token: str) -> httpx.Client:
    c = httpx.Client(base_url=url, follow_redirects=False, timeout=60)
    page = c.get("/ui/login")
    r = c.post("/ui/login", data={"csrf": CSRF.search(page.text).group(1), "token": token})  # type: ignore[union-attr]
    assert r.status_code == 303, r.text
    return c


def server_ms(r: httpx.Response) -> float:
    m = re.search(r"dur=([0-9.]+)", r.headers.get("server-timing", ""))
    return float(m.group(1)) if m else float("nan")


def measure(c: httpx.Client, path: str, repeat: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    server, wall = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        r = c.get(path, headers=headers)
        wall.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        server.append(server_ms(r))
    out = {"server_p50_ms": round(statistics.median(server), 2) if server[0] == server[0] else None,
           "server_max_ms": round(max(server), 2) if server[0] == server[0] else None,
           "wall_p50_ms": round(statistics.median(wall), 2), "wall_max_ms": round(max(wall), 2), "n": repeat}
    return out


def bench_pages(n: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(Path(tmp))
        d.start()
        try:
            t = time.perf_counter()
            put_routines(d.journal, [(f"routine-{i:05d}", spec(i)) for i in range(n)])
            setup_s = time.perf_counter() - t
            c = sign_in(d.url, d.token)
            api = httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {d.token}"}, timeout=60)
            cold = c.get("/ui/")
            results: dict[str, Any] = {"routines": n, "setup_s": round(setup_s, 1),
                                       "cold_first_page_server_ms": server_ms(cold)}
            mid = f"routine-{n // 2:05d}"
            pages = {
                "first page": "/ui/",
                "middle page (after=)": f"/ui/?after={mid}",
                "last page": f"/ui/?after=routine-{n - 30:05d}",
                "trigger_kind=schedule": "/ui/?trigger_kind=schedule",
                "channel=team-7 (1 in 20)": "/ui/?channel=team-7",
                "state=Pending": "/ui/?state=Pending",
                "state=Disabled (1 in 97)": "/ui/?state=Disabled",
                "state=Running (none: whole scan)": "/ui/?state=Running",
                "limit=500": "/ui/?limit=500",
                "live fragment (first page)": "/ui/live/routines",
                "routine page": f"/ui/routines/{mid}",
                "timeline (24 h of all)": "/ui/timeline",
                "approvals": "/ui/approvals",
                "system": "/ui/system",
            }
            timings = {name: measure(c, path, repeat if "timeline" not in name else max(3, repeat // 10))
                       for name, path in pages.items()}
            etag = c.get("/ui/live/routines").headers["etag"]
            timings["live fragment, unchanged (304)"] = _measure_304(c, "/ui/live/routines", etag, repeat)
            # the peer: the same page through the API's listing
            api_wall = []
            for _ in range(repeat):
                t = time.perf_counter()
                assert api.get("/console/v1/routines", params={"limit": 50}).status_code == 200
                api_wall.append((time.perf_counter() - t) * 1000)
            timings["PEER: API GET /console/v1/routines?limit=50"] = {
                "server_p50_ms": None, "wall_p50_ms": round(statistics.median(api_wall), 2),
                "wall_max_ms": round(max(api_wall), 2), "n": repeat}
            # cold again: a routine changes, the index is rebuilt on the next page
            cold_again = []
            for k in range(3):
                r = api.post("/console/v1/routines/upsert", json={"name": f"extra-{k}", "spec": spec(k)})
                assert r.status_code in (200, 201), r.text
                cold_again.append(server_ms(c.get("/ui/")))
            results["cold_after_a_change_server_ms"] = cold_again
            results["pages"] = timings
        finally:
            d.stop()
    return results


def _measure_304(c: httpx.Client, path: str, etag: str, repeat: int) -> dict[str, Any]:
    server, wall = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        r = c.get(path, headers={"if-none-match": etag})
        wall.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 304, r.status_code
        server.append(server_ms(r))
    return {"server_p50_ms": round(statistics.median(server), 2), "server_max_ms": round(max(server), 2),
            "wall_p50_ms": round(statistics.median(wall), 2), "wall_max_ms": round(max(wall), 2), "n": repeat}


# -- lag with and without a browser ------------------------------------------------------------------


def _lags(journal: Path, start_ms: int, end_ms: int) -> dict[str, Any]:
    with open_journal(journal) as j:
        rows = [r for r in j.runs_in_order() if r["scheduled_at_ms"] and start_ms <= r["scheduled_at_ms"] < end_ms]
    lags = [r["received_at_ms"] - r["scheduled_at_ms"] for r in rows if r["received_at_ms"] is not None]
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {**{k: (round(v, 2) if isinstance(v, float) else v) for k, v in summary(lags).items()},
            "statuses": statuses, "unreceived": len(rows) - len(lags)}


def bench_lag(n: int, seconds: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(Path(tmp))
        d.start()
        try:
            put_routines(d.journal, [(f"lag-{i:04d}", {"prompt": "x", "trigger": {"kind": "schedule",
                                                                                   "schedule": {"every": "1s"}}})
                                     for i in range(n)], phase_ms=3)
            time.sleep(3)
            windows: dict[str, Any] = {}

            def window(name: str) -> None:
                start = int(time.time() * 1000)
                time.sleep(seconds)
                windows[name] = (start, int(time.time() * 1000))

            window("without browser (1)")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
                ctx = browser.new_context()
                page = ctx.new_page()
                page.goto(d.url + "/ui/login")
                page.fill("#token", d.token)
                page.click("button[type=submit]")
                page.wait_for_url(d.url + "/ui/")
                second = ctx.new_page()
                second.goto(d.url + "/ui/routines/lag-0001")
                time.sleep(3)  # both pages polling
                refreshed_before = page.evaluate("document.querySelector('#routine-rows').dataset.refreshed || '0'")
                window("with browser (list + routine page live)")
                refreshed_after = page.evaluate("document.querySelector('#routine-rows').dataset.refreshed || '0'")
                browser.close()
            window("without browser (2)")
            clear_routines(d.journal)
            # every run of the windows received and finished before reading (a backlog is lag too)
            deadline = time.time() + 180
            while time.time() < deadline:
                with open_journal(d.journal) as j:
                    if not j.active_runs():
                        break
                time.sleep(0.5)
            result = {name: _lags(d.journal, a, b) for name, (a, b) in windows.items()}
            result["list fragment replaced during the browser window"] = refreshed_after != refreshed_before
        finally:
            d.stop()
    return {"routines": n, "window_s": seconds, "windows": result}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="all", choices=["pages", "lag", "all"])
    ap.add_argument("--routines", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--lag-routines", type=int, default=50)
    ap.add_argument("--lag-seconds", type=float, default=30.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out: dict[str, Any] = {}
    if args.what in ("pages", "all"):
        out["pages"] = bench_pages(args.routines, args.repeat)
        print(f"== console pages, {args.routines:,} routines (server = Server-Timing app;dur, wall = loopback round trip)")
        print(f"cold first page (index built): {out['pages']['cold_first_page_server_ms']:.1f} ms server; "
              f"after a routine changed: {', '.join(f'{v:.1f}' for v in out['pages']['cold_after_a_change_server_ms'])} ms")
        for name, t in out["pages"]["pages"].items():
            srv = f"{t['server_p50_ms']:8.2f} p50 {t['server_max_ms']:8.2f} max" if t.get("server_p50_ms") is not None else " " * 26
            print(f"  {name:42s} server {srv}   wall {t['wall_p50_ms']:8.2f} p50 {t['wall_max_ms']:8.2f} max  (n={t['n']})")
    if args.what in ("lag", "all"):
        out["lag"] = bench_lag(args.lag_routines, args.lag_seconds)
        print(f"== dispatch lag, {args.lag_routines} routines every 1 s, {args.lag_seconds:.0f} s windows")
        for name, w in out["lag"]["windows"].items():
            if not isinstance(w, dict):
                print(f"  {name}: {w}")
                continue
            print(f"  {name:42s} runs {w['n']:6d}  p50 {w['p50_ms']:7.1f} ms  p99 {w['p99_ms']:7.1f} ms  "
                  f"max {w['max_ms']:7.1f} ms  statuses {w['statuses']}  unreceived {w['unreceived']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
