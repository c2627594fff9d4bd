"""`palyra-ops cron logs NAME --follow` against a real daemon: the runs so far, then each new run and
status change as a line of its own, until SIGINT/SIGTERM (exit 0, no traceback) or the daemon stops."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import IO

from conftest import REPO, DaemonHandle

ROUTINE = {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "tick"},
           "spec": {"prompt": "p", "trigger": {"kind": "manual"}}}


class Follow:
    """`cron logs --follow` in a subprocess, its stdout read line by line on a thread."""

    def __init__(self, d: DaemonHandle, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PALYRA_")}
        env.update({"PYTHONPATH": str(REPO), "NO_COLOR": "1", "PALYRA_STATE_ROOT": str(d.paths.state_root)})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "palyra_ops", "cron", "logs", "tick", "--follow", "--interval", "0.2",
             "--url", d.base_url, "--token", d.token, *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout: float = 30) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line from --follow within {timeout} s") from None

    def until(self, predicate: object, timeout: float = 30) -> list[str]:
        """Lines up to and including the first one `predicate` accepts."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.1, deadline - time.monotonic()))
            seen.append(line)
            if predicate(line):  # type: ignore[operator]
                return seen

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        code = self.proc.wait(timeout)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()


def _dispatch(d: DaemonHandle) -> str:
    r = d.client().post("/console/v1/routines/dispatch", json={"routine_id": "tick"})
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


def test_follow_prints_new_runs_and_stops_on_sigint(daemon: DaemonHandle) -> None:
    daemon.write("r.yaml", ROUTINE)
    daemon.apply()
    daemon.wait_for(lambda: daemon.client().get("/console/v1/routines/tick").status_code == 200, timeout=30,
                    what="the routine on the daemon")
    old = _dispatch(daemon)
    daemon.wait_for(lambda: any(r["status"] == "succeeded" for r in daemon.runs("tick")), timeout=30, what="a run")
    f = Follow(daemon)
    try:
        first = f.next_line()
        assert first.split("  ")[1:5] == [old, "manual", "attempt 1", "succeeded"], first  # the run so far
        new = _dispatch(daemon)
        lines = f.until(lambda line: new in line and line.split("  ")[4] == "succeeded")
        assert all(new in line for line in lines), lines  # nothing else, the old run is not repeated
        assert len(lines) <= 3  # queued/running (if a poll saw them), then succeeded: a line per change
        assert f.proc.poll() is None  # still following
        f.proc.send_signal(signal.SIGINT)
        code, err = f.finish()
    finally:
        if f.proc.poll() is None:
            f.proc.kill()
    assert (code, err) == (0, "")


def test_follow_json_lines_and_sigterm(daemon: DaemonHandle) -> None:
    daemon.write("r.yaml", ROUTINE)
    daemon.apply()
    daemon.wait_for(lambda: daemon.client().get("/console/v1/routines/tick").status_code == 200, timeout=30,
                    what="the routine on the daemon")
    f = Follow(daemon, "--output", "json", "--status", "succeeded")
    try:
        time.sleep(0.5)  # let it make its first (empty) poll; a run dispatched before then would show anyway
        run_id = _dispatch(daemon)
        row = json.loads(f.next_line())
        assert (row["run_id"], row["status"], row["routine_id"]) == (run_id, "succeeded", "tick")
        f.proc.send_signal(signal.SIGTERM)
        code, err = f.finish()
    finally:
        if f.proc.poll() is None:
            f.proc.kill()
    assert (code, err) == (0, "")


def test_follow_ends_when_the_daemon_goes_away(daemon_factory) -> None:
    d = daemon_factory()
    d.write("r.yaml", ROUTINE)
    d.apply()
    d.wait_for(lambda: d.client().get("/console/v1/routines/tick").status_code == 200, timeout=30,
               what="the routine on the daemon")
    run_id = _dispatch(d)
    f = Follow(d)
    try:
        f.until(lambda line: run_id in line)
        d.stop()
        code, err = f.finish()
    finally:
        if f.proc.poll() is None:
            f.proc.kill()
    assert code == 0 and err.startswith("palyra-ops: stopped following: ") and "Traceback" not in err, err
    assert err.count("\n") == 1


def test_follow_errors_before_it_starts(daemon: DaemonHandle) -> None:
    """A routine that does not exist, or a bad --interval: one line, exit 1 / usage error 2."""
    f = Follow(daemon)
    code, err = f.finish()
    assert code == 1 and err == "palyra-ops: no routine 'tick'\n"
    bad = subprocess.run([sys.executable, "-m", "palyra_ops", "cron", "logs", "tick", "-f", "--interval", "0"],
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "must be between 0.1 and 60 seconds, got 0" in bad.stderr
