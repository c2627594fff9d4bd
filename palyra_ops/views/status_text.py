"""`palyra-ops status` as human lines: the sync state (`syncstatus.directory_status`), the last
apply, the next runs, and the running daemon's own view (scheduler, watcher, tasks).

The watcher's lines are drawn here too (`watcher_lines`), so the wording of a state is one place
whether it comes from the CLI's fresh plan or from the daemon's watcher.
"""

from __future__ import annotations

from typing import Any

from palyra_ops.syncstatus import SyncState


def _shown(value: Any, missing: str = "—") -> str:
    """A value for a human line: never the text `None`."""
    return missing if value is None or value == "" else str(value)


def render_status(report: dict[str, Any]) -> str:
    """The whole report of `palyra-ops status` (its `daemon` part included)."""
    out = [f"State: {report['state']}  ({report['dir']} vs {report['journal']})"]
    for f in report.get("invalid_files", []):
        out.append(f"  invalid: {f['file']}")
        out += [f"    {d}" for d in f["diagnostics"]]
    if report.get("error"):
        out.append(f"  {report['error']}")
    out += [f"  warning: {w}" for w in report.get("warnings", [])]
    out += [f"  {c['action']}: {c['kind'].lower()} {c['name']} ({_shown(c['reason'], 'changed')})"
            for c in report.get("out_of_sync", [])]
    if report.get("unmanaged"):
        out.append(f"  unmanaged (left alone): {', '.join(report['unmanaged'])}")
    out.append(_last_apply_line(report.get("last_apply")))
    if report["next_runs"]:
        out.append("Next runs:")
        out += [f"  {r['next_run_at']}  {r['routine_id']}" for r in report["next_runs"]]
    out += daemon_lines(report["daemon"])
    return "\n".join(out)


def _last_apply_line(last: dict[str, Any] | None) -> str:
    if not last:
        return "Last apply: never"
    commit = last["git_commit"][:12] if last["git_commit"] else "not a git work tree"
    dirty = " (dirty)" if last["git_dirty"] else ""
    return f"Last apply: {last['at']} from {commit}{dirty}"


def daemon_lines(daemon: dict[str, Any]) -> list[str]:
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
    lines += ["  " + line for line in watcher_lines(daemon.get("watcher") or {})]
    lines += [f"  task {name}: {_task_text(task)}" for name, task in (daemon.get("tasks") or {}).items()
              if isinstance(task, dict)]
    return lines


def _task_text(task: dict[str, Any]) -> str:
    if task.get("last_run_at"):
        took = f" ({task['duration_ms']} ms)" if task.get("duration_ms") is not None else ""
        last = f"last {task['last_run_at']} {_shown(task.get('outcome'), 'running')}{took}"
    else:
        last = "not run yet"
    return last + (f", next {task['next_run_at']}" if task.get("next_run_at") else " (disabled)")


def watcher_lines(status: dict[str, Any]) -> list[str]:
    """The watcher's `status()` document (`GET /console/v1/system/status` → `watcher`) as lines."""
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


__all__ = ["daemon_lines", "render_status", "watcher_lines"]
