"""Soak: does any scheduled run get lost on its way through the loopback? (issue 9, point 1)

    .venv/bin/python bench/soak_dispatch.py [--minutes 10] [--variant plain|same-ms|both]
                                            [--routines-plain 4] [--routines-same-ms 200] [--every 5s]
                                            [--keep-alive 20s] [--repo PATH] [--json OUT]

plain    the field setup: N routines `every: 5s` written as YAML and put in with `palyra-ops apply`
         into a plain `palyra-ops daemon` (their anchors are the apply instant).
same-ms  the harder one: M routines `every: 5s` all due in the same millisecond, so M loopback calls
         leave together and every pooled connection goes idle for the same ~5 s.
both     both at once, each on its own daemon and journal (the default; they share the machine).

After the soak the daemon is stopped with SIGTERM and its journal is read: total runs, runs by
status, **lost** (left `accepted`, or `failed` with a `dispatch_failed` reason — the run never got
through the loopback), other failures, missing occurrences (a scheduled instant between a routine's
first and last run with no run record), and the Loopback's own retry counters from the daemon's
`/console/v1/system/status`. `--repo` runs another checkout's code (e.g. the code before the fix,
`git archive HEAD | tar -x -C /tmp/before`) for the before/after figure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def routine_doc(name: str, every: str) -> str:
    return (f"apiVersion: palyra/v1\nkind: Routine\nmetadata:\n  name: {name}\nspec:\n  prompt: soak {name}\n"
            f"  trigger:\n    kind: schedule\n    schedule:\n      every: {every}\n")


def run_variant(name: str, routines: int, every: str, minutes: float, keep_alive: str | None, repo: Path,
                out: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix=f"soak-{name}-") as tmp:
        root = Path(tmp)
        rdir, state = root / "routines.d", root / "state"
        rdir.mkdir()
        journal = state / "journal.sqlite3"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PALYRA_")},
               "PALYRA_STATE_ROOT": str(state), "PYTHONPATH": str(repo), "NO_COLOR": "1"}
        py = [sys.executable, "-m", "palyra_ops"]
        port = free_port()
        args = [*py, "daemon", "--listen", f"127.0.0.1:{port}", "--journal", str(journal), "--dir", str(rdir),
                "--log-level", "warning"]
        if keep_alive:
            cfg = root / "palyra.yaml"
            cfg.write_text(f"dispatch: {{keep_alive: {keep_alive}}}\n", encoding="utf-8")
            args += ["--config", str(cfg)]
        log_path = root / "daemon.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        token = (state / "token").read_text().strip()
        if name == "plain":
            for i in range(routines):
                (rdir / f"r{i}.yaml").write_text(routine_doc(f"r{i}", every), encoding="utf-8")
            subprocess.run([*py, "apply", "--dir", str(rdir), "--journal", str(journal), "--auto-approve"],
                           env=env, check=True, capture_output=True, cwd=root)
        else:  # one transaction, one anchor: every routine due in the same millisecond
            sys.path.insert(0, str(repo))
            from palyra_ops.journal import open_journal
            from palyra_ops.model import Resource
            from palyra_ops.reconcile import _write_job

            with open_journal(journal) as j, j.transaction() as c:
                now = j.clock.now_ms()
                for i in range(routines):
                    spec = {"prompt": f"soak s{i}", "trigger": {"kind": "schedule", "schedule": {"every": every}}}
                    res = Resource.from_spec("Routine", f"s{i}", spec)
                    j.put_resource(c, kind="Routine", name=res.name, body=res.body, hash=res.hash, managed=False,
                                   applied_hash=None, source_file=None)
                    _write_job(j, c, res, None, now)
                j.bump_serial(c)
        started = time.time()
        print(f"[{name}] {routines} routines every {every} for {minutes:g} min (daemon pid {proc.pid}, {url})",
              flush=True)
        while time.time() - started < minutes * 60:
            time.sleep(5)
            if proc.poll() is not None:
                raise SystemExit(f"[{name}] the daemon exited with {proc.returncode}; see {log_path}")
        status: dict[str, Any] = {}
        try:
            status = httpx.get(url + "/console/v1/system/status", headers={"Authorization": f"Bearer {token}"},
                               timeout=10).json().get("scheduler") or {}
        except httpx.HTTPError as exc:
            status = {"error": str(exc)}
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log_text = log_path.read_text(errors="replace")
        with sqlite_rows(journal) as rows:
            out[name] = summarise(rows, every, status, log_text, proc.returncode)


class sqlite_rows:  # noqa: N801 - a small context manager
    def __init__(self, journal: Path) -> None:
        import sqlite3

        self.conn = sqlite3.connect(str(journal))
        self.conn.row_factory = sqlite3.Row

    def __enter__(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM journal_cron_runs ORDER BY rowid")]

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def summarise(rows: list[dict[str, Any]], every: str, status: dict[str, Any], log_text: str, rc: int) -> dict[str, Any]:
    period_ms = int(every.rstrip("s")) * 1000
    by_status = Counter(r["status"] for r in rows)
    lost = [r for r in rows if r["status"] == "accepted"
            or (r["status"] == "failed" and (r["reason"] or "").startswith("dispatch_failed"))]
    failed_other = [r for r in rows if r["status"] == "failed" and r not in lost]
    missing = 0
    by_routine: dict[str, set[int]] = {}
    for r in rows:
        if r["scheduled_at_ms"] is not None:
            by_routine.setdefault(r["routine_id"], set()).add(r["scheduled_at_ms"])
            by_routine[r["routine_id"]].update(json.loads(r["skipped_times"] or "[]"))
    for times in by_routine.values():
        first, last = min(times), max(times)
        missing += len(set(range(first, last + 1, period_ms)) - times)
    return {
        "runs": len(rows),
        "by_status": dict(by_status),
        "lost": len(lost),
        "lost_examples": [(r["run_id"], r["status"], r["reason"]) for r in lost[:5]],
        "failed_other": len(failed_other),
        "missing_occurrences": missing,
        "loopback_retries": status.get("loopback_retries_total"),
        "loopback_failures": status.get("loopback_failures_total"),
        "dispatch_errors": status.get("dispatch_errors_total"),
        "tracebacks_in_log": log_text.count("Traceback"),
        "daemon_exit": rc,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--variant", choices=["plain", "same-ms", "both"], default="both")
    ap.add_argument("--routines-plain", type=int, default=4)
    ap.add_argument("--routines-same-ms", type=int, default=200)
    ap.add_argument("--every", default="5s", help="whole seconds, e.g. 5s")
    ap.add_argument("--keep-alive", default=None, help="the daemon's dispatch.keep_alive (default: its own)")
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose palyra_ops to run")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    variants = {"plain": a.routines_plain, "same-ms": a.routines_same_ms}
    chosen = list(variants) if a.variant == "both" else [a.variant]
    out: dict[str, Any] = {}
    threads = [threading.Thread(target=run_variant, args=(v, variants[v], a.every, a.minutes, a.keep_alive,
                                                          a.repo.resolve(), out)) for v in chosen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for v in chosen:
        s = out.get(v)
        if s is None:
            print(f"[{v}] no result")
            continue
        print(f"[{v}] runs {s['runs']}  lost {s['lost']}  other failed {s['failed_other']}  missing occurrences "
              f"{s['missing_occurrences']}  by status {s['by_status']}  loopback retries {s['loopback_retries']} "
              f"(gave up {s['loopback_failures']})  tracebacks {s['tracebacks_in_log']}")
        for ex in s["lost_examples"]:
            print(f"    lost: {ex}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0 if all(out.get(v, {}).get("lost", 1) == 0 for v in chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
