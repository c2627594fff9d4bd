"""`palyra-ops status` as text: the sync state and what is at fault, the last apply, the next runs,
and the running daemon's own view (scheduler, watcher, maintenance tasks).

The data comes from `palyra_ops.syncstatus` (and the daemon's `GET /console/v1/system/status`);
this only words it, in one place, so the watcher's wording is the same wherever it is shown.
Values that do not exist yet read `never`, `not yet` or `—`, never `None` (docs/gitops.md).
"""

from __future__ import annotations

from typing import Any

from palyra_ops.syncstatus import SyncState


def _shown(value: Any, missing: str = "—") -> str:
    """A value for a human line: never the text `None`."""
    return missing if value is None or value == "" else str(value)


def status_text(report: dict[str, Any]) -> str:
    """The whole `status` report (`syncstatus.directory_status` plus `daemon`)."""
    lines = [f"State: {report['state']}  ({report['dir']} vs {report['journal']})"]
    lines += _sync_lines(report)
    lines.append(_last_apply_line(report.get("last_apply")))
    if report["next_runs"]:
        lines.append("Next runs:")
        lines += [f"  {r['next_run_at']}  {r['routine_id']}" + ("  (paused: recorded as skipped)" if r.get("paused") else "")
                  for r in report["next_runs"]]
    if report.get("paused"):
        lines.append("Paused (runtime state; `palyra-ops cron resume NAME`):")
        lines += [f"  {p['routine_id']}" + (f": {p['note']}" if p.get("note") else "")
                  + f"  (by {_shown(p.get('by'))} since {_shown(p.get('since'))})" for p in report["paused"]]
    lines += daemon_lines(report["daemon"])
    return "\n".join(lines) + "\n"


def _sync_lines(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for f in report.get("invalid_files", []):
        lines.append(f"  invalid: {f['file']}")
        lines += [f"    {d}" for d in f["diagnostics"]]
    if report.get("error"):
        lines.append(f"  {report['error']}")
    lines += [f"  warning: {w}" for w in report.get("warnings", [])]
    lines += [f"  {c['action']}: {c['kind'].lower()} {c['name']} ({_shown(c['reason'], 'changed')})"
              for c in report.get("out_of_sync", [])]
    if report.get("unmanaged"):
        lines.append(f"  unmanaged (left alone): {', '.join(report['unmanaged'])}")
    return lines


def _last_apply_line(last: dict[str, Any] | None) -> str:
    if not last:
        return "Last apply: never"
    commit = last["git_commit"][:12] if last["git_commit"] else "not a git work tree"
    dirty = " (dirty)" if last["git_dirty"] else ""
    return f"Last apply: {last['at']} from {commit}{dirty}"


def daemon_lines(daemon: dict[str, Any]) -> list[str]:
    """The daemon's part: reachable or why not, its scheduler, its watcher, its maintenance tasks."""
    if not daemon.get("reachable"):
        return [f"Daemon: not reachable ({_shown(daemon.get('detail'))})"]
    sched = daemon.get("scheduler") or {}
    lines = [f"Daemon: up at {daemon['url']}"]
    if sched:
        lines.append(
            "  scheduler: last tick {}, due backlog {}, running {}, next due {}".format(
                _shown(sched.get("last_tick_at"), "not yet"), _shown(sched.get("due_backlog"), "0"),
                _shown(sched.get("running_count"), "0"), _shown(sched.get("next_due_at"), "nothing scheduled"),
            )
        )
    lines.extend("  " + line for line in format_status(daemon.get("watcher") or {}))
    lines.extend(_task_line(name, task) for name, task in (daemon.get("tasks") or {}).items() if isinstance(task, dict))
    return lines


def _task_line(name: str, task: dict[str, Any]) -> str:
    if task.get("last_run_at"):
        took = f" ({task['duration_ms']} ms)" if task.get("duration_ms") is not None else ""
        last = f"last {task['last_run_at']} {_shown(task.get('outcome'), 'running')}{took}"
    else:
        last = "not run yet"
    nxt = f", next {task['next_run_at']}" if task.get("next_run_at") else " (disabled)"
    return f"  task {name}: {last}{nxt}"


def format_status(status: dict[str, Any]) -> list[str]:
    """The directory watcher's `status()` (docs/watcher.md) as lines: its state, the files that are not
    Synced with their diagnostics, and the drift it leaves alone."""
    if not status or not status.get("enabled"):
        return ["watcher: off (daemon started without --watch)"]
    head = f"watcher: {status['state']}"
    if status.get("last_reconcile_at"):
        head += f", last reconcile {status['last_reconcile_at']} ({status.get('duration_ms')} ms, #{status['reconcile_count']})"
    if status.get("git"):
        head += f", commit {status['git']['commit'][:12]}{' (dirty)' if status['git'].get('dirty') else ''}"
    lines = [head]
    if status.get("last_error"):
        lines.append(f"  error: {status['last_error']}")
    for rel, info in status.get("files", {}).items():
        if info["state"] == SyncState.SYNCED:
            continue
        lines.append(f"  {info['state']:<9} {rel}")
        lines.extend(f"      {d}" for d in info["diagnostics"])
    if status.get("drift_pending"):
        lines.append("  drift left alone (apply or --self-heal restores git): " + ", ".join(status["drift_pending"]))
    return lines

__all__ = ["daemon_lines", "format_status", "status_text"]
