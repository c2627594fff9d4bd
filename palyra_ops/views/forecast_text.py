"""`palyra-ops forecast` as text: the summary, busiest seconds, herds with their jitter, never-runs,
then one line per routine (the JSON view lists every fire time)."""

from __future__ import annotations

from collections.abc import Iterator

from palyra_ops.clock import rfc3339
from palyra_ops.forecast import Forecast
from palyra_ops.forecast_plan import describe_herd, names_text

names = names_text
herd_line = describe_herd


def forecast_text(f: Forecast) -> Iterator[str]:
    hours = f"{f.hours:g} h"
    n, runs = len(f.routines), f.total_runs
    yield (f"Forecast {rfc3339(f.start_ms)} to {rfc3339(f.end_ms)} ({hours}): {n} routine{'s' if n != 1 else ''}, "
           f"{runs} run{'s' if runs != 1 else ''}.\n")
    if f.skipped:
        yield f"Not forecast: {f.skipped} routine{'s' if f.skipped != 1 else ''} (not on a schedule, disabled or paused).\n"
    if f.busiest:
        yield "\nBusiest seconds:\n"
        for s in f.busiest:
            plural = "s" if s.runs != 1 else " "
            yield f"  {rfc3339(s.at_ms)}  {s.runs:>6} run{plural}  {names(s.routines)}\n"
    yield f"\nHerds ({f.herd_min} or more runs due in the same second): {f.herd_groups or 'none'}\n"
    for h in f.herds:
        yield f"  {herd_line(h)}\n"
    if f.herd_groups > len(f.herds):
        yield (f"  ... and {f.herd_groups - len(f.herds)} smaller herds ({f.herd_seconds} seconds with "
               f"{f.herd_min} or more runs in all)\n")
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
