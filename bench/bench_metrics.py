"""`/metrics` with per-routine gauges on 10,000 routines (issue 12, Performance: under 50 ms).

Each routine has a last success and a next run, so both gauges carry 10,000 samples. Measured in the
same run: the route's work in-process (`job_times()` from the journal + `Metrics.render`), and a
real `GET /metrics` against a daemon serving that journal (best and p50 of `--repeat`).

Run by hand: `.venv/bin/python bench/bench_metrics.py [--routines 10000 --repeat 20]`.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from palyra_ops.clock import FakeClock
from palyra_ops.journal import ResourceWrite, open_journal
from palyra_ops.metrics import Metrics

T0 = 1_772_409_600_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--routines", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        jpath = Path(tmp) / "journal.sqlite3"
        with open_journal(jpath, clock=FakeClock(T0)) as j:
            with j.transaction() as c:
                j.put_resources(c, [ResourceWrite("Routine", f"r{i:05d}", '{"metadata":{},"spec":{"prompt":"p",'
                                                  '"trigger":{"kind":"manual"}}}', f"h{i}", True, f"h{i}", "x.yaml")
                                    for i in range(a.routines)])
                j.put_jobs(c, [(f"r{i:05d}", {"trigger_kind": "manual", "last_success_at_ms": T0 + i,
                                             "next_run_at_unix_ms": T0 + 3_600_000 + i}) for i in range(a.routines)], ())
            m = Metrics()
            times = []
            for _ in range(a.repeat):
                t = time.perf_counter()
                text = m.render(j.job_times())
                times.append(time.perf_counter() - t)
        print(f"{a.routines:,} routines, {text.count(chr(10)):,} lines, {len(text) / 1e6:.2f} MB")
        print(f"in-process job_times + render: best {min(times) * 1000:.1f} ms, p50 {statistics.median(times) * 1000:.1f} ms")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "PALYRA_STATE_ROOT": tmp, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        proc = subprocess.Popen([sys.executable, "-m", "palyra_ops", "daemon", "--journal", str(jpath), "--listen",
                                 f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            token = (Path(tmp) / "token").read_text().strip()
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
                http = []
                for _ in range(a.repeat):
                    t = time.perf_counter()
                    r = c.get("/metrics")
                    http.append(time.perf_counter() - t)
                    assert r.status_code == 200
            print(f"GET /metrics on the daemon:    best {min(http) * 1000:.1f} ms, p50 {statistics.median(http) * 1000:.1f} ms"
                  "  (target < 50 ms)")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
