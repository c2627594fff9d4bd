"""Differential testing of our cron evaluation against cronsim (Debian cron semantics).

Used by tests/test_cron_differential.py (a few hundred cases, fixed seed) and
bench/cron_differential.py (100,000 cases). Each case is (expression, zone, start instant); both
evaluators produce the next few fire instants and are compared:

* **Outside DST changes** (no offset change between a day before the start and a day after the last
  fire) ours must equal cronsim exactly.
* **Always**, ours must equal the *policy oracle*: cronsim used only as a wall-clock matcher (naive
  datetimes, so no tz handling of its own) plus zoneinfo applying the rules of docs/scheduling.md
  (fixed-time: once per day, gap → first instant after it, fold → first occurrence; anything else:
  every existing matching wall instant, twice in a fold). It shares no code with palyra_ops.schedule.
* **Across DST changes** ours and cronsim may differ only for a documented reason (`DST_CLASSES`);
  anything else is counted as a mismatch.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from palyra_ops.schedule import CronError, Schedule, compile_cron, resolve_zone
from palyra_ops.schedule.zones import transitions_between, transitions_in_year

ZONES = [
    "utc",
    "Europe/Prague",
    "Europe/London",
    "Europe/Dublin",  # negative DST in tzdata: winter is the "summer" offset
    "America/New_York",
    "America/St_Johns",  # -3:30 / -2:30
    "America/Havana",  # changes at midnight
    "America/Santiago",  # southern hemisphere, changes at 24:00
    "America/Sao_Paulo",
    "Australia/Lord_Howe",  # 30-minute DST
    "Australia/Adelaide",
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Kolkata",
    "Asia/Tehran",
    "Asia/Tokyo",
    "Africa/Casablanca",  # DST suspended during Ramadan: four changes a year
    "Antarctica/Troll",  # two-hour DST
]
MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
DAYS = "sun mon tue wed thu fri sat".split()
FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
          "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
#: documented reasons ours and cronsim may differ across a DST change (docs/scheduling.md)
DST_CLASSES = {
    "policy:cadence": "minute and hour fields hold several values without starting with '*' (e.g. "
    "'0,30 2 * * *', '0 1-3 * * *'): Debian cron (and cronsim) treat the job as fixed-time and run "
    "gap times once after the jump and fold times once; SPEC §5 keeps such crons on their real-time "
    "cadence (gap walls do not exist, fold walls happen twice)",
    "cronsim:rewind": "around a repeated hour cronsim returns a fire time at or before the start, or "
    "the same one again (it re-reads wall times with fold=0); Debian cron does not re-run a job "
    "already run when the clock goes back, neither do we",
    "cronsim:stuck": "cronsim loops forever (its tz-aware minute stepping crosses a fall-back that "
    "moves the date back, e.g. America/St_Johns' 00:01 changes until 2011); only the policy oracle "
    "is compared",
    "cronsim:fold-once": "a '*'-minute or '*'-hour cron whose wall time comes round again in a repeated "
    "hour: cronsim fires in the first pass only; Debian cron runs wildcard jobs whenever the clock "
    "reads a matching time, so both passes, as we do",
    "cronsim:gap-day": "a '*'-minute or '*'-hour cron on a local date whose early hours hold a gap "
    "(America/Havana, Santiago, Sao_Paulo at 00:00, St_Johns at 00:01, Lord_Howe at 02:00): cronsim starts the day at "
    "its 00:00, steps hours in real time across the gap and misses matching wall times later that "
    "day; Debian runs wildcard jobs whenever the clock reads a matching time, and so do we",
    "cronsim:half-hour": "a '*'-minute or '*'-hour cron across a 30-minute change (Australia/Lord_Howe): "
    "cronsim steps hours in real time, lands on :30 after the change and skips the matching :00 "
    "wall times of that day",
    "cronsim:imaginary": "cronsim returns a wall time that does not exist (inside a gap) for a "
    "'*'-minute or '*'-hour cron, i.e. an instant whose local reading does not match the cron; we "
    "only fire at instants whose wall-clock reading matches",
}


def _rand_value(rng: random.Random, i: int) -> str:
    lo, hi = FIELDS[i]
    v = rng.randint(lo, hi)
    if i == 3 and rng.random() < 0.3:
        return _case(rng, MONTHS[v - 1])
    if i == 4 and rng.random() < 0.3:
        return _case(rng, DAYS[v % 7])
    return f"{v:02d}" if rng.random() < 0.05 else str(v)


def _case(rng: random.Random, name: str) -> str:
    return rng.choice([name, name.upper(), name.capitalize()])


def _term(rng: random.Random, i: int) -> str:
    lo, hi = FIELDS[i]
    kind = rng.choices(["value", "same", "range", "range_step", "start_step"], [5, 2, 3, 2, 1])[0]
    if kind == "value":
        return _rand_value(rng, i)
    if kind == "same":  # the single-value range croniter >= 5 turns into '*'
        v = _rand_value(rng, i)
        return f"{v}-{v}" + (f"/{rng.randint(1, 5)}" if rng.random() < 0.3 else "")
    a, b = sorted((rng.randint(lo, hi), rng.randint(lo, hi)))
    if i == 4 and rng.random() < 0.3:
        a_s, b_s = _case(rng, DAYS[a % 7]) if a < 7 else "7", _case(rng, DAYS[b % 7]) if b < 7 else "7"
        if b == 7:
            b_s = "7"
        if a == 7:
            a_s = "7"
    elif i == 3 and rng.random() < 0.3:
        a_s, b_s = _case(rng, MONTHS[a - 1]), _case(rng, MONTHS[b - 1])
    else:
        a_s, b_s = str(a), str(b)
    if kind == "range":
        return f"{a_s}-{b_s}"
    if kind == "range_step":
        return f"{a_s}-{b_s}/{rng.randint(1, max(1, (hi - lo) // 2))}"
    return f"{a_s}/{rng.randint(1, max(1, (hi - lo) // 3))}"


def _field(rng: random.Random, i: int, star_weight: float) -> str:
    lo, hi = FIELDS[i]
    r = rng.random()
    if r < star_weight:
        return "*"
    if r < star_weight + 0.12:
        return f"*/{rng.choice([1, 2, 3, 4, 5, 6, 7, 10, 15, 20, 30, 45, 90])}"
    n = rng.choices([1, 2, 3], [6, 3, 1])[0]
    return ",".join(_term(rng, i) for _ in range(n))


def _invalid(rng: random.Random) -> str:
    """An expression both evaluators must refuse."""
    i = rng.randrange(5)
    lo, hi = FIELDS[i]
    bad = rng.choice([
        f"{hi}-{lo}",  # backwards range
        str(hi + 1 + rng.randrange(3)),  # out of range
        "*/0", f"{lo}-{hi}/0",  # step 0
        "?", f"{lo},,{hi}", f"{lo}-", "-1", "*-3", "1.5",
    ])
    fields = ["*"] * 5
    fields[i] = bad
    return " ".join(fields)


def random_expr(rng: random.Random) -> str:
    """A random 5-field expression (or macro) in the shared Vixie grammar; a few are invalid."""
    r = rng.random()
    if r < 0.03:
        return rng.choice(list(MACROS))
    if r < 0.06:
        return _invalid(rng)
    minute = _field(rng, 0, 0.1) if rng.random() < 0.5 else _rand_value(rng, 0)
    hour = _field(rng, 1, 0.2) if rng.random() < 0.6 else _rand_value(rng, 1)
    dom = _field(rng, 2, 0.6)
    month = _field(rng, 3, 0.6)
    dow = _field(rng, 4, 0.6)
    r = rng.random()
    if r < 0.04:
        dom = rng.choice(["L", "L,15", "1,L"])
    elif r < 0.08:  # weekday occurrences: only with an unrestricted day-of-month (SPEC subset)
        dom = "*"
        wd = rng.randint(0, 7)
        dow = rng.choice([f"{wd}#{rng.randint(1, 5)}", f"L{wd}", f"{wd}#1,{(wd + 1) % 7}#3"])
    return f"{minute} {hour} {dom} {month} {dow}"


def _cronsim_term(term: str, dow: bool) -> str:
    if dow and term[:1] in "lL" and term[1:].isdigit():
        return f"{term[1:]}L"  # croniter's `L5` (last Friday) is cronsim's `5L`
    head, _, step = term.partition("/")
    a, dash, b = head.partition("-")
    if step and dash and a.lower() == b.lower():
        # cronsim reads `a-a/n` as `a/n` (a to the end, every n); in Vixie cron it is the single value a
        return a
    return term


def to_cronsim(expr: str) -> str:
    """Our spelling → cronsim's, meaning for meaning (macros expanded, see _cronsim_term)."""
    expr = MACROS.get(expr.lower(), expr)
    fields = expr.split()
    return " ".join(
        ",".join(_cronsim_term(t, i == 4) for t in f.split(",")) for i, f in enumerate(fields)
    )


def _ms(dt: datetime) -> int:
    return int(dt.timestamp()) * 1000


class CronSimStuck(Exception):
    """cronsim went round in circles (seen at a 00:01 fall-back in America/St_Johns, 2010)."""


class _BoundedCronSim(CronSim):
    """cronsim with a step budget per fire time, so a loop in it is a finding, not a hung test."""

    budget = 200_000

    def tick(self, seconds: int = 1) -> None:
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps > self.budget:
            raise CronSimStuck()
        super().tick(seconds)

    def __next__(self) -> datetime:
        self.steps = 0
        return super().__next__()


def cronsim_datetimes(expr: str, zone: str, start_ms: int, n: int) -> list[datetime]:
    """cronsim's next `n` fire times after `start_ms`; raises CronSimStuck when it loops."""
    tz = UTC if zone == "utc" else ZoneInfo(zone)
    it = _BoundedCronSim(to_cronsim(expr), datetime.fromtimestamp(start_ms // 1000, tz))
    out: list[datetime] = []
    try:
        for _ in range(n):
            out.append(next(it))
    except StopIteration:
        pass
    return out


def cronsim_fires(expr: str, zone: str, start_ms: int, n: int) -> list[int]:
    return [_ms(dt) for dt in cronsim_datetimes(expr, zone, start_ms, n)]


def _imaginary(dt: datetime) -> bool:
    return dt.astimezone(UTC).astimezone(dt.tzinfo).replace(tzinfo=None) != dt.replace(tzinfo=None)


def _exists(naive: datetime, tz: ZoneInfo, fold: int) -> int | None:
    aware = naive.replace(tzinfo=tz, fold=fold)
    back = aware.astimezone(UTC).astimezone(tz)
    return _ms(aware) if back.replace(tzinfo=None) == naive else None


def oracle_fires(expr: str, zone: str, start_ms: int, n: int, fixed_time: bool) -> list[int]:
    """Our documented policy, computed from cronsim's naive wall-clock matches and zoneinfo."""
    if zone == "utc":
        return cronsim_fires(expr, zone, start_ms, n)
    tz = ZoneInfo(zone)
    start_wall = datetime.fromtimestamp(start_ms // 1000, tz).replace(tzinfo=None, fold=0)
    walls = CronSim(to_cronsim(expr), start_wall - timedelta(hours=27))
    found: list[int] = []
    limit_wall: datetime | None = None
    for wall in walls:
        if limit_wall is not None and wall > limit_wall:
            break
        if fixed_time:
            first = _exists(wall, tz, 0)
            if first is None:  # in a gap: the first existing minute after it (gap: shift)
                probe = wall
                while first is None:
                    probe += timedelta(minutes=1)
                    first = _exists(probe, tz, 0)
            instants = [first]  # fold: first
        else:
            instants = sorted({i for i in (_exists(wall, tz, 0), _exists(wall, tz, 1)) if i is not None})
        found.extend(i for i in instants if i > start_ms)
        if len(found) >= n and limit_wall is None:
            # walls map to instants within a few hours; look a day further for earlier instants
            limit_wall = wall + timedelta(hours=27)
    return sorted(set(found))[:n]


def _wild(expr: str) -> bool:
    fields = to_cronsim(expr).split()
    return fields[0].startswith("*") or fields[1].startswith("*")


@dataclass
class Result:
    cases: int = 0
    classes: Counter[str] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)

    def count(self, cls: str, example: str) -> None:
        self.classes[cls] += 1
        self.examples.setdefault(cls, example)


def run_case(expr: str, zone: str, start_ms: int, n: int, result: Result) -> None:
    result.cases += 1
    try:
        ours_error = "never fires" if compile_cron(expr).never else None
    except CronError as exc:
        ours_error = str(exc)
    try:
        CronSim(to_cronsim(expr), datetime(2000, 1, 1))
        theirs_error = None
    except (CronSimError, ValueError) as exc:
        theirs_error = str(exc) or type(exc).__name__
    if ours_error or theirs_error:
        if ours_error and theirs_error:
            result.count("both_invalid", f"{expr!r}: ours {ours_error}; cronsim {theirs_error}")
        else:
            result.mismatches.append(f"{expr!r}: ours {ours_error or 'valid'}, cronsim {theirs_error or 'valid'}")
        return
    schedule = Schedule.from_spec({"cron": expr, "timezone": zone})
    ours = schedule.next_n(start_ms, n)
    tag = f"{expr!r} in {zone} after {datetime.fromtimestamp(start_ms / 1000, UTC).isoformat()}"
    try:
        theirs_dt = cronsim_datetimes(expr, zone, start_ms, n)
    except CronSimStuck:
        theirs_dt = None
    theirs = [_ms(dt) for dt in theirs_dt or []]
    fixed = compile_cron(expr).fixed_time
    end = max(ours[-1:] + theirs[-1:] + [start_ms])
    day = 86_400_000
    window = transitions_between(resolve_zone(zone), start_ms - day, end + day) if zone != "utc" else []
    dst = bool(window)
    if len(ours) < n:
        # cronsim gives up after 50 years, we after 100: compare what both found
        theirs = theirs[: len(ours)]
    if not dst:
        if ours != theirs[: len(ours)] or len(theirs) < len(ours):
            result.mismatches.append(f"{tag}: ours {_fmt(ours, zone)} != cronsim {_fmt(theirs, zone)}")
        else:
            result.count("exact", tag)
        return
    expected = oracle_fires(expr, zone, start_ms, len(ours) or n, fixed)
    if ours != expected:
        result.mismatches.append(f"{tag}: ours {_fmt(ours, zone)} != policy oracle {_fmt(expected, zone)}")
        return
    detail = f"{tag}: ours {_fmt(ours, zone)}, cronsim {_fmt(theirs, zone)}"
    if theirs_dt is None:
        result.count("cronsim:stuck", detail)
    elif ours == theirs[: len(ours)]:
        result.count("dst_exact", detail)
    elif not fixed and not _wild(expr):
        result.count("policy:cadence", detail)
    elif any(t <= start_ms for t in theirs) or any(b <= a for a, b in zip(theirs, theirs[1:], strict=False)):
        result.count("cronsim:rewind", detail)
    elif any(_imaginary(dt) for dt in theirs_dt):
        result.count("cronsim:imaginary", detail)
    elif _wild(expr) and _only_second_passes_missing(ours, theirs, zone):
        result.count("cronsim:fold-once", detail)
    elif _wild(expr) and _only_gap_day_fires_missing(ours, theirs, zone):
        result.count("cronsim:gap-day", detail)
    elif _wild(expr) and any(_shift_s(zone, t) % 3600 for t in window):
        result.count("cronsim:half-hour", detail)
    else:
        result.mismatches.append(f"{tag}: ours {_fmt(ours, zone)} != cronsim {_fmt(theirs, zone)} (DST, unexplained)")


def _only_second_passes_missing(ours: list[int], theirs: list[int], zone: str) -> bool:
    """cronsim lacks exactly some second-pass fold instants of ours (and runs on past our end)."""
    tz = ZoneInfo(zone)
    missing = [t for t in ours if t not in set(theirs)]

    def second_pass(t: int) -> bool:
        dt = datetime.fromtimestamp(t // 1000, tz)
        return dt.fold == 1 and dt.replace(fold=0).utcoffset() != dt.utcoffset()

    return bool(missing) and all(map(second_pass, missing)) and all(t in ours or t > ours[-1] for t in theirs)


def _only_gap_day_fires_missing(ours: list[int], theirs: list[int], zone: str) -> bool:
    """cronsim lacks exactly fires later on a local date that began with a forward jump."""
    tz = ZoneInfo(zone)
    missing = [t for t in ours if t not in set(theirs)]

    def after_gap_same_day(t: int) -> bool:
        local = datetime.fromtimestamp(t // 1000, tz)
        begin = t - (local.hour + 3) * 3_600_000
        return any(
            _shift_forward(zone, x) and datetime.fromtimestamp(x // 1000, tz).date() == local.date()
            for x in transitions_between(resolve_zone(zone), begin, t)
        )

    return bool(missing) and all(map(after_gap_same_day, missing)) and all(t in ours or t > ours[-1] for t in theirs)


def _shift_forward(zone: str, t: int) -> bool:
    tz = ZoneInfo(zone)
    before = datetime.fromtimestamp(t // 1000 - 1, tz).utcoffset()
    after = datetime.fromtimestamp(t // 1000, tz).utcoffset()
    assert before is not None and after is not None
    return after > before


def _only_second_passes_missing(ours: list[int], theirs: list[int], zone: str) -> bool:
    """cronsim lacks exactly some second-pass fold instants of ours (and runs on past our end)."""
    tz = ZoneInfo(zone)
    missing = [t for t in ours if t not in set(theirs)]

    def second_pass(t: int) -> bool:
        dt = datetime.fromtimestamp(t // 1000, tz)
        return dt.fold == 1 and dt.replace(fold=0).utcoffset() != dt.utcoffset()

    return bool(missing) and all(map(second_pass, missing)) and all(t in ours or t > ours[-1] for t in theirs)


def _only_midnight_gap_days_missing(ours: list[int], theirs: list[int], zone: str) -> bool:
    """cronsim lacks exactly fires on local dates whose midnight does not exist (a gap at 00:00)."""
    tz = ZoneInfo(zone)
    missing = [t for t in ours if t not in set(theirs)]

    def on_gap_day(t: int) -> bool:
        midnight = datetime.fromtimestamp(t // 1000, tz).replace(tzinfo=None, hour=0, minute=0, second=0)
        return _exists(midnight, tz, 0) is None

    return bool(missing) and all(map(on_gap_day, missing)) and all(t in ours or t > ours[-1] for t in theirs)


def _shift_s(zone: str, t: int) -> int:
    """Size of the offset change at transition instant `t`, in seconds."""
    tz = ZoneInfo(zone)
    before = datetime.fromtimestamp(t // 1000 - 1, tz).utcoffset()
    after = datetime.fromtimestamp(t // 1000, tz).utcoffset()
    assert before is not None and after is not None
    return abs(int((after - before).total_seconds()))


def _fmt(values: list[int], zone: str) -> str:
    tz = UTC if zone == "utc" else ZoneInfo(zone)
    return "[" + ", ".join(datetime.fromtimestamp(v // 1000, tz).isoformat() for v in values) + "]"


def random_case(rng: random.Random) -> tuple[str, str, int]:
    expr = random_expr(rng)
    zone = rng.choice(ZONES)
    start = datetime(1990, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(48 * 365 * 86400))
    if zone != "utc" and rng.random() < 0.5:
        # half the zoned cases start shortly before an offset change, where the DST rules apply
        trans = transitions_in_year(resolve_zone(zone), start.year)
        if trans:
            start = datetime.fromtimestamp(rng.choice(trans) / 1000, UTC) - timedelta(
                seconds=rng.randrange(36 * 3600)
            )
    if rng.random() < 0.3:
        start = start.replace(second=0)
    return expr, zone, _ms(start)


def run(cases: int, seed: int, n: int = 5) -> Result:
    rng = random.Random(seed)
    result = Result()
    for _ in range(cases):
        expr, zone, start = random_case(rng)
        run_case(expr, zone, start, n, result)
    return result
