"""`palyra-ops forecast` as text: the summary, busiest seconds, herds with their jitter, never-runs,
then one line per routine (the JSON view lists every fire time)."""

from __future__ import annotations

from collections.abc import Iterator

from palyra_ops.clock import rfc3339
from palyra_ops.durations import format_duration_ms
from palyra_ops.forecast import Forecast, Herd

#: routine names shown for one second or herd before "and N more"
SHOW_NAMES = 5


def names(routines: list[str], show: int = SHOW_NAMES) -> str:
    head = ", ".join(routines[:show])
    return head + (f" and {len(routines) - show} more" if len(routines) > show else "")


def herd_line(h: Herd) -> str:
    """The one-line form plan shows as a warning too."""
    when = rfc3339(h.seconds[0])
    at = f"at {when}" if len(h.seconds) == 1 else f"in {len(h.seconds)} seconds of the window, first {when}"
    head = f"{h.runs} runs due in the same second {at} ({names(h.routines)})"
    if h.jitter_ms is None:
        return f"{head}: {h.note}"
    tail = f"; {h.note}" if h.note else ""
    return (f"{head}: set policies.jitter: {format_duration_ms(h.jitter_ms)} on them "
            f"(at most {h.max_after} in any second then{tail})")


def forecast_text(f: Forecast) -> Iterator[str]:
    hours = f"{f.hours:g} h"
    yield (f"Forecast {rfc3339(f.start_ms)} to {rfc3339(f.end_ms)} ({hours}): {len(f.routines)} routines, "
           f"{f.total_runs} runs.\n")
    if f.skipped:
        yield f"Not forecast: {f.skipped} routines (not on a schedule, disabled or paused).\n"
    if f.busiest:
        yield "\nBusiest seconds:\n"
        for s in f.busiest:
            plural = "s" if s.runs != 1 else " "
            yield f"  {rfc3339(s.at_ms)}  {s.runs:>6} run{plural}  {names(s.routines)}\n"
    yield f"\nHerds ({f.herd_min} or more runs due in the same second): {len(f.herds) or 'none'}\n"
    for h in f.herds:
        yield f"  {herd_line(h)}\n"
    if f.herd_seconds > sum(len(h.seconds) for h in f.herds):
        yield f"  ({f.herd_seconds} herd seconds in all; the biggest are listed)\n"
    if f.never:
        yield "\nNever runs:\n"
        for n in f.never:
            yield f"  {n.message}\n"
    if f.routines:
        yield "\nRoutines:\n"
        rows = sorted(f.routines, key=lambda r: r.name)
        width = max(len(r.name) for r in rows)
        yield f"  {'NAME'.ljust(width)}  {'RUNS':>6}  {'FIRST':<29}  QUIET HOURS\n"
        for r in rows:
            first = rfc3339(int(r.due[0])) if len(r.due) else "-"
            quiet = []
            if r.quiet_skipped:
                quiet.append(f"{r.quiet_skipped} skipped")
            if r.deferred:
                quiet.append(f"{r.deferred} deferred")
            yield f"  {r.name.ljust(width)}  {len(r.due):>6}  {first:<29}  {', '.join(quiet) or '-'}\n"
