"""`palyra-ops cron logs NAME --follow`: a routine's runs as they happen, like `tail -f`.

The console API has no push channel for the CLI, so this polls the runs listing (newest first) and
prints a line for every run it has not seen and for every run whose status, attempt or delivery
changed since the last poll — a run shows as `running`, then as `succeeded`. Lines come oldest first.
It ends cleanly: Ctrl-C (or SIGTERM) exits 0, and a daemon that stops answering ends the follow with
a note on stderr and exit 0 (the stream is over, as `kubectl logs -f` ends with its pod).

Run ids are ULIDs, ordered by creation, so "older than everything shown at the start" is a plain string
comparison: a run that falls out of the first page is never mistaken for a new one later.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

from palyra_ops.client import ConsoleClient, DaemonUnreachable

#: newest runs asked for per poll; a burst of more between two polls is read page by page
WINDOW = 100
#: at most this many pages per poll (a backlog of 2,000 runs in one second is shown from its newest)
MAX_PAGES = 20

#: what makes a run worth a new line: its status, attempt or delivery changed
State = tuple[Any, Any, Any]


def run_line(run: dict[str, Any]) -> str:
    """One run on one line: when, id, trigger, attempt, status, then the reason and delivery if any."""
    when = run.get("finished_at") or run.get("started_at") or run.get("scheduled_at") or "-"
    line = f"{when}  {run['run_id']}  {run.get('trigger_kind') or '-'}  attempt {run.get('attempt') or '-'}  " \
           f"{run.get('status')}"
    if run.get("reason"):
        line += f"  reason: {run['reason']}"
    if run.get("delivery_status"):
        line += f"  delivery: {run['delivery_status']}"
        if run.get("delivery_error"):
            line += f" ({run['delivery_error']})"
    return line


def _state(run: dict[str, Any]) -> State:
    return run.get("status"), run.get("attempt"), run.get("delivery_status")


def _newest(client: ConsoleClient, path: str, status: str | None, limit: int,
            known: dict[str, State], floor: str) -> list[dict[str, Any]]:
    """The newest runs, paging on while a whole page is new (a burst since the last poll)."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(MAX_PAGES):
        page = client.get(path, limit=limit, status=status, cursor=cursor)
        batch = page.get("items", [])
        items.extend(batch)
        cursor = page.get("next_cursor")
        if not cursor or not batch or any(r["run_id"] in known or r["run_id"] < floor for r in batch):
            break
    return items


def _changes(items: list[dict[str, Any]], known: dict[str, State], floor: str) -> Iterator[dict[str, Any]]:
    for run in sorted(items, key=lambda r: r["run_id"]):
        rid = run["run_id"]
        if rid < floor and rid not in known:
            continue  # older than the start, fell out of the first page: not new
        if known.get(rid) != _state(run):
            yield run


def _write(run: dict[str, Any], fmt: str) -> None:
    text = json.dumps(run, ensure_ascii=False, sort_keys=True) if fmt == "json" else run_line(run)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()  # a pipe (`| grep failed`) sees each run as it happens


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def follow_runs(client: ConsoleClient, path: str, args: argparse.Namespace) -> int:
    """Print the last `--limit` runs, then every new run and status change until stopped."""
    # SIGINT too: a process started in the background by a non-interactive shell inherits SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler, so Ctrl-C/`kill -INT` would
    # never end the follow (the test suite run from a background job showed it)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    previous_int = signal.signal(signal.SIGINT, _stop_on_sigterm)
    known: dict[str, State] = {}
    floor = ""
    try:
        first = client.get(path, limit=args.limit, status=args.status).get("items", [])  # errors: exit 1
        floor = min((r["run_id"] for r in first), default="")
        for run in sorted(first, key=lambda r: r["run_id"]):
            _write(run, args.output)
            known[run["run_id"]] = _state(run)
        while True:
            time.sleep(args.interval)
            try:
                items = _newest(client, path, args.status, WINDOW, known, floor)
            except DaemonUnreachable as exc:
                print(f"palyra-ops: stopped following: {exc.message}", file=sys.stderr)
                return 0
            for run in _changes(items, known, floor):
                _write(run, args.output)
                known[run["run_id"]] = _state(run)
            window = {r["run_id"] for r in items}
            known = {rid: s for rid, s in known.items() if rid in window}  # bounded by the window
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
