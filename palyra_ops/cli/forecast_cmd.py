"""`palyra-ops forecast`: every routine's runs over the next hours, busiest seconds, herds, never-runs.

The clock is read here (for the default `--from`); `palyra_ops.forecast` computes the rest with the
scheduler's own time math (SPEC §12). Routines come from a directory (every `every` anchored at the
start, as if applied then) or from a journal (what the daemon would run: its anchors, enabled and
paused state). An invalid directory is refused like `plan` refuses it: diagnostics on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from palyra_ops.cli._common import Lazy, add_output_flag, emit, journal_arg, state_paths
from palyra_ops.clock import InstantRangeError, SystemClock, parse_rfc3339
from palyra_ops.errors import PalyraError, ValidationFailed
from palyra_ops.forecast import (
    DEFAULT_HERD_MIN,
    DEFAULT_HOURS,
    DEFAULT_TOP,
    MAX_HOURS,
    Forecaster,
    Outcome,
    Splitter,
    Timing,
    forecast,
)
from palyra_ops.model import Routine
from palyra_ops.numbers import IntegerError, parse_int
from palyra_ops.source import FileDocuments

HELP = "forecast the runs of the next hours: busiest seconds, herds, routines that never run"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("forecast", help=HELP, description=(
        "Forecast every scheduled routine's runs over a window (default the next 24 h) with the "
        "scheduler's own time math: the busiest seconds, herds (many runs due in the same second) "
        "with a suggested policies.jitter, and routines that can never run."))
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dir", type=Path, default=None, help="routine directory (default: routines.d)")
    src.add_argument("--journal", type=journal_arg, default=None,
                     help="forecast what this journal holds (anchors, enabled and paused state) instead of a directory")
    p.add_argument("--hours", default=str(DEFAULT_HOURS), metavar="N",
                   help=f"window length in whole hours, 1 to {MAX_HOURS} (default {DEFAULT_HOURS})")
    p.add_argument("--from", dest="from_", metavar="RFC3339", default=None,
                   help="start of the window (default: now)")
    p.add_argument("--herd", default=str(DEFAULT_HERD_MIN), metavar="N",
                   help=f"runs due in one second that make a herd (default {DEFAULT_HERD_MIN})")
    p.add_argument("--top", default=str(DEFAULT_TOP), metavar="N",
                   help=f"how many busiest seconds to list (default {DEFAULT_TOP})")
    add_output_flag(p)
    p.set_defaults(func=run)


def _int_flag(flag: str, text: str, lo: int, hi: int) -> int:
    try:
        return parse_int(text, lo, hi, flag)
    except IntegerError as exc:
        raise PalyraError(str(exc)) from None


def _start(text: str | None) -> int:
    if text is None:
        return SystemClock().now_ms()
    try:
        return parse_rfc3339(text)
    except InstantRangeError as exc:
        raise PalyraError(f"--from: {exc}") from None
    except ValueError:
        raise PalyraError(f"--from: {text!r} is not an RFC 3339 date-time with offset "
                          "(e.g. 2026-03-29T00:00:00+01:00)") from None


class _Outcomes:
    """`load_directory`'s `on_file` for the forecast: of each document only its forecast outcome is
    kept, computed where the file is checked (maybe in the forked child, whose compiled schedules
    are then at hand), never the body. None marks a routine that is not forecast."""

    def __init__(self, forecaster: Forecaster) -> None:
        self.forecaster = forecaster
        self.by_file: dict[str, list[Outcome | None]] = {}

    def prepare(self, rel: str, sha: str, docs: FileDocuments) -> list[Outcome | None]:
        out: list[Outcome | None] = []
        for kind, name, body in docs:
            if kind == "Routine":
                t = Timing.of_body(name, body)
                out.append(self.forecaster.outcome(t) if t is not None else None)
        return out

    def accept(self, rel: str, sha: str, prepared: object) -> None:
        self.by_file[rel] = prepared  # type: ignore[assignment]  # what `prepare` returned


def outcomes_from_directory(directory: Path, forecaster: Forecaster,
                            journal: Path | str | None = None) -> tuple[list[Outcome], int]:
    """The forecast outcomes of the directory's enabled schedule routines, and how many routines
    are not forecast.

    Files already checked by an `apply` come from the source cache beside `journal` (read only, as
    `plan` reads it): at 10,000 routines parsing and validating is most of the command's time, so a
    cold directory is checked on two cores (`source.parallel`), each routine's runs computed by the
    process that checked its file.
    """
    from palyra_ops.cli.plan_cmd import CHECK_WORKERS, require_directory
    from palyra_ops.reconcile import cache_dir_for
    from palyra_ops.source import load_directory

    require_directory(directory)
    cache = cache_dir_for(journal) if journal is not None else None
    sink = _Outcomes(forecaster)
    source = load_directory(directory, cache_dir=cache if cache and cache.is_dir() else None, cache_readonly=True,
                            on_file=sink, workers=CHECK_WORKERS)
    if not source.ok:
        raise ValidationFailed(source.diagnostics)
    out: list[Outcome] = []
    skipped = 0
    for rel in sorted(sink.by_file):  # file then document order, as `iter_documents` lists them
        for o in sink.by_file[rel]:
            if o is None:
                skipped += 1
            else:
                out.append(o)
    return out, skipped


def timings_from_journal(journal: Path | str) -> tuple[list[Timing], int]:
    """The journal's routines as the scheduler sees them (a missing SQLite journal is refused, not
    created; a PostgreSQL URL is read as it is)."""
    from palyra_ops.journal import is_postgres_url, read_snapshot

    if not is_postgres_url(journal) and not Path(journal).exists():
        raise PalyraError(f"journal {journal} does not exist")
    snap = read_snapshot(journal)
    out: list[Timing] = []
    skipped = 0
    for (kind, _name), stored in sorted(snap.resources.items()):
        if kind != "Routine":
            continue
        routine = Routine.from_resource(stored)
        job = snap.jobs.get(routine.name)
        t = Timing.of(routine, job if job is not None else {"enabled": 0})
        if t is None:
            skipped += 1
        else:
            out.append(t)
    return out, skipped


#: below this many routines a second process costs more than it saves
SPLIT_MIN_ROUTINES = 2000


def _splitter(n: int) -> Splitter | None:
    """The forecast's per-routine work on two cores for a large fleet (a CLI process holds no threads
    that a fork could copy mid-lock, which is what `source.parallel` requires)."""
    from palyra_ops.source.parallel import can_fork, run_split, usable_cores

    if n < SPLIT_MIN_ROUTINES or not can_fork() or usable_cores() < 2:
        return None
    return run_split


def run(args: argparse.Namespace) -> int:
    from palyra_ops.views.forecast_json import forecast_document
    from palyra_ops.views.forecast_text import forecast_text

    hours = _int_flag("--hours", args.hours, 1, MAX_HOURS)
    herd_min = _int_flag("--herd", args.herd, 2, 1_000_000)
    top = _int_flag("--top", args.top, 0, 1000)
    start = _start(args.from_)
    forecaster = Forecaster(start, hours)
    try:
        if args.journal is not None:
            timings, skipped = timings_from_journal(args.journal)
            result = forecast(timings, start, hours, herd_min=herd_min, top=top, skipped=skipped,
                              split=_splitter(len(timings)))
        else:
            outcomes, skipped = outcomes_from_directory(args.dir or Path("routines.d"), forecaster,
                                                        state_paths(args).journal)
            result = forecaster.finish(outcomes, herd_min=herd_min, top=top, skipped=skipped,
                                       split=_splitter(len(outcomes)))
    except ValidationFailed as exc:
        for d in exc.diagnostics:
            print(d.format(), file=sys.stderr)
        n = len(exc.diagnostics)
        print(f"{n} error{'s' if n != 1 else ''}; nothing forecast.", file=sys.stderr)
        return 1
    emit(Lazy(lambda: forecast_document(result)), args.output, lambda _: forecast_text(result))
    return 0
