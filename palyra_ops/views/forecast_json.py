"""`palyra-ops forecast --output json`: the forecast as a stable document (docs/scheduling.md).

Instants are RFC 3339 in UTC, as `clock.rfc3339` writes them (milliseconds only when non-zero);
the fire-time lists are formatted by numpy in one call each, since a fleet's forecast holds hundreds
of thousands of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from palyra_ops.clock import rfc3339
from palyra_ops.durations import format_duration_ms
from palyra_ops.forecast import Forecast, Herd, RoutineRuns

#: bump only with an incompatible change of the document (fields may be added freely)
FORMAT_VERSION = 1


def instants(ms: np.ndarray) -> list[str]:
    """`rfc3339(ms)` for every element (UTC), vectorised."""
    if not len(ms):
        return []
    stamps = np.asarray(ms, dtype=np.int64).astype("datetime64[ms]")
    whole = np.datetime_as_string(stamps, unit="s")
    if not (ms % 1000).any():
        return [f"{s}+00:00" for s in whole.tolist()]
    frac = np.datetime_as_string(stamps, unit="ms")
    return [f"{f if m % 1000 else s}+00:00" for s, f, m in zip(whole.tolist(), frac.tolist(), ms.tolist(), strict=True)]


def _herd(h: Herd) -> dict[str, Any]:
    return {
        "runs": h.runs,
        "routines": h.routines,
        "seconds": [rfc3339(s) for s in h.seconds],
        "suggested_jitter": format_duration_ms(h.jitter_ms) if h.jitter_ms is not None else None,
        "max_runs_per_second_after": h.max_after,
        "note": h.note or None,
    }


def _routine(r: RoutineRuns) -> dict[str, Any]:
    return {
        "name": r.name,
        "timezone": r.timezone,
        "jitter": format_duration_ms(r.jitter_ms),
        "runs": len(r.due),
        "quiet_skipped": r.quiet_skipped,
        "deferred": r.deferred,
        "fire_times": instants(r.due),
    }


def forecast_document(f: Forecast) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "start": rfc3339(f.start_ms),
        "end": rfc3339(f.end_ms),
        "hours": f.hours,
        "herd_min": f.herd_min,
        "summary": {
            "routines": len(f.routines),
            "runs": f.total_runs,
            "not_forecast": f.skipped,
            "herds": f.herd_groups,
            "herd_seconds": f.herd_seconds,
            "never_runs": len(f.never),
        },
        "busiest": [{"at": rfc3339(s.at_ms), "runs": s.runs, "routines": s.routines} for s in f.busiest],
        "herds": [_herd(h) for h in f.herds],
        "never_runs": [{"routine": n.name, "kind": n.kind, "message": n.message} for n in f.never],
        "routines": [_routine(r) for r in sorted(f.routines, key=lambda r: r.name)],
    }
