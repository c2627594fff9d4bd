"""Plan: the diff between the routine directory (desired) and the journal (actual), as a value.

Like a Terraform plan, a `Plan` can be rendered, saved to a file, loaded and applied later; it
carries the journal identity (lineage + serial) it was computed against so applying it to a journal
that moved since is refused instead of silently doing something else.

Ownership rules (SPEC §3): objects written by apply are *managed*; a managed object missing from the
directory is pruned; objects created through the API are *unmanaged* and left alone unless
`prune_unmanaged`; a managed object whose stored body differs from what apply last wrote has
*drifted* and the plan puts the git version back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

from palyra_ops import schedule as sched
from palyra_ops.clock import Clock, SystemClock, rfc3339
from palyra_ops.errors import PalyraError
from palyra_ops.forecast_plan import plan_warnings
from palyra_ops.journal import Snapshot, StoredResource
from palyra_ops.model import Resource, flatten
from palyra_ops.pause import paused_warnings
from palyra_ops.plan_moves import find_moves
from palyra_ops.plan_select import Selection

FORMAT_VERSION = 1
#: how many upcoming fire times a plan shows per changed schedule
SHOW_FIRES = 3


class PlanAction(StrEnum):
    """What apply does with one object (the plan JSON's `action`, docs/gitops.md)."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NO_OP = "no-op"
    UNMANAGED = "unmanaged"  # created through the API, not in the directory: listed, left alone
    MOVE = "move"  # renamed with metadata.previous_names: history and schedule position follow (plan_moves)

    @property
    def is_change(self) -> bool:
        return self in _CHANGES


_CHANGES = frozenset({PlanAction.CREATE, PlanAction.UPDATE, PlanAction.DELETE, PlanAction.MOVE})
#: plan summary key of each action (`Plan: N to add, N to change, N to delete.`); a move changes one
#: object in place (its name, maybe more), so it counts as a change
_SUMMARY_KEY = {PlanAction.CREATE: "add", PlanAction.UPDATE: "change", PlanAction.DELETE: "delete",
                PlanAction.MOVE: "change",
                PlanAction.NO_OP: "unchanged", PlanAction.UNMANAGED: "unmanaged"}
#: the reason of an update whose only cause is an edit outside git (the watcher leaves those alone)
DRIFT_ONLY = "drift: changed outside git since the last apply; apply restores the git version"


@dataclass
class FieldChange:
    path: str
    before: Any
    after: Any


@dataclass
class ScheduleChange:
    timezone: str
    before: list[str]
    after: list[str]
    notes: list[str]


class _Body:
    """`Change.before`/`after`: a body dict, or the object it is the body of, decoded when read.

    A plan of 100,000 creates must not hold 100,000 decoded bodies (~4 KB of dicts each): compute_plan
    hands over the compact `Resource` (its canonical JSON, ~0.9 KB) and the views decode one change
    at a time, as they write it.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}_source"

    def __get__(self, obj: object, objtype: type | None = None) -> dict[str, Any] | None:
        if obj is None:
            raise AttributeError(self.slot)  # no default: the field stays a required argument
        value = obj.__dict__[self.slot]
        return value.body if isinstance(value, (Resource, StoredResource)) else value

    def __set__(self, obj: object, value: dict[str, Any] | Resource | StoredResource | None) -> None:
        obj.__dict__[self.slot] = value


def body_source(change: Change, side: str) -> dict[str, Any] | Resource | StoredResource | None:
    """What a change's `before`/`after` is read from, undecoded (apply takes a create's canonical JSON
    from its Resource instead of decoding and encoding it again)."""
    return change.__dict__[f"_{side}_source"]


@dataclass
class Change:
    kind: str
    name: str
    action: PlanAction
    reason: str
    source_file: str | None
    before: dict[str, Any] | None = _Body()  # type: ignore[assignment]
    after: dict[str, Any] | None = _Body()  # type: ignore[assignment]
    fields: list[FieldChange] = field(default_factory=list)
    unchanged_fields: int = 0
    drift: bool = False
    managed_before: bool | None = None
    schedule: ScheduleChange | None = None
    #: a no-op that keeps the object's last applied version because its file is invalid or unreadable
    #: (last-good isolation): the watcher reports these, apply has nothing to do for them
    kept: bool = False
    #: a move's old name (action `move`): apply renames the journal's routine from it
    moved_from: str | None = None

    @property
    def is_change(self) -> bool:
        return self.action.is_change

    @property
    def drift_only(self) -> bool:
        """An update whose only cause is an edit outside git (the file itself did not change)."""
        return self.action is PlanAction.UPDATE and self.reason == DRIFT_ONLY


@dataclass
class Plan:
    format_version: int
    created_at: str
    dir: str
    journal_path: str
    lineage: str | None
    serial: int
    changes: list[Change]
    warnings: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(_SUMMARY_KEY.values(), 0)
        for c in self.changes:
            counts[_SUMMARY_KEY[c.action]] += 1
        return counts

    @property
    def has_changes(self) -> bool:
        return any(c.is_change for c in self.changes)

    @property
    def targeted(self) -> bool:
        """Made with `--target`/`--exclude`: it covers part of the directory only."""
        return bool(self.options.get("targets") or self.options.get("excludes"))

    def to_json(self) -> dict[str, Any]:
        return {**self._json_head(), "changes": [_change_json(c) for c in self.changes]}

    def _json_head(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "created_at": self.created_at,
            "dir": self.dir,
            "journal": {"path": self.journal_path, "lineage": self.lineage, "serial": self.serial},
            "options": self.options,
            "summary": self.summary,
            "has_changes": self.has_changes,
            "warnings": self.warnings,
        }

    def iter_json(self, *, indent: int, ensure_ascii: bool = True) -> Iterator[str]:
        """`json.dumps(self.to_json(), indent=indent)`, the same text, one change at a time: the
        document of 100,000 creates is hundreds of MB, and `plan --out`/`--output json` write it as
        it is made instead of building it whole first."""
        head = json.dumps({**self._json_head(), "changes": []}, indent=indent, ensure_ascii=ensure_ascii)
        if not self.changes:
            yield head
            return
        cut = head.rindex("[]")  # "changes" is the last key: the document ends `"changes": []\n}`
        yield head[:cut] + "["
        pad = "\n" + " " * (2 * indent)
        for i, c in enumerate(self.changes):
            text = json.dumps(_change_json(c), indent=indent, ensure_ascii=ensure_ascii)
            yield ("," if i else "") + pad + text.replace("\n", pad)  # JSON text has no raw newline in a string
        yield "\n" + " " * indent + "]" + head[cut + 2:]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            got = data.get("format_version") if isinstance(data, dict) else None
            raise PalyraError(f"unsupported plan file format_version {got!r} (this palyra-ops reads {FORMAT_VERSION})")
        try:
            changes = []
            for c in data["changes"]:
                sc = c.get("schedule")
                changes.append(
                    Change(
                        kind=c["kind"],
                        name=c["name"],
                        action=PlanAction(c["action"]),
                        reason=c["reason"],
                        source_file=c.get("source_file"),
                        before=c.get("before"),
                        after=c.get("after"),
                        fields=[FieldChange(**f) for f in c.get("fields", [])],
                        unchanged_fields=c.get("unchanged_fields", 0),
                        drift=c.get("drift", False),
                        managed_before=c.get("managed_before"),
                        schedule=ScheduleChange(**sc) if sc else None,
                        kept=bool(c.get("kept", False)),
                        moved_from=c.get("moved_from"),
                    )
                )
            j = data["journal"]
            return cls(
                format_version=FORMAT_VERSION,
                created_at=data["created_at"],
                dir=data["dir"],
                journal_path=j["path"],
                lineage=j["lineage"],
                serial=int(j["serial"]),
                changes=changes,
                warnings=list(data.get("warnings", [])),
                options=dict(data.get("options", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PalyraError(f"malformed plan file: {exc}") from None

    def save(self, path: Path) -> None:
        tmp = Path(str(path) + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(self.iter_json(indent=1))
            fh.write("\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Plan:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PalyraError(f"plan file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PalyraError(f"cannot read plan file {path}: {exc}") from None
        return cls.from_json(data)


def _change_json(c: Change) -> dict[str, Any]:
    d = {
        "kind": c.kind,
        "name": c.name,
        "action": c.action,
        "reason": c.reason,
        "source_file": c.source_file,
        "drift": c.drift,
        "managed_before": c.managed_before,
        "before": c.before,
        "after": c.after,
        "fields": [asdict(f) for f in c.fields],
        "unchanged_fields": c.unchanged_fields,
        "schedule": asdict(c.schedule) if c.schedule else None,
    }
    if c.kept:  # only ever added (docs/gitops.md): plans the CLI prints never keep anything
        d["kept"] = True
    if c.moved_from is not None:  # only on a move (docs/plan-operator.md)
        d["moved_from"] = c.moved_from
    return d


# -- computing a plan -------------------------------------------------------------------------------


def compute_plan(
    desired: list[Resource],
    snapshot: Snapshot,
    *,
    dir: str,
    journal_path: str,
    clock: Clock | None = None,
    prune_unmanaged: bool = False,
    allow_empty: bool = False,
    dir_exists: bool = True,
    protected_files: set[str] | None = None,
    selection: Selection | None = None,
    warn: bool = True,
) -> Plan:
    """Diff `desired` against `snapshot`.

    `protected_files` are files currently invalid: their managed objects are neither pruned nor
    changed (the watcher's last-good isolation), since their desired state is unknown.
    `selection` (`--target`/`--exclude`) narrows the plan after the full diff (`plan_select`).
    `warn=False`: no herd, paused-routine or deleted-channel warnings (`status` never shows them;
    at 100,000 routines they are a tenth of a no-op plan).
    """
    now_ms = (clock or SystemClock()).now_ms()
    protected = protected_files or set()
    desired_by_key = {(r.kind, r.name): r for r in desired}
    if not desired and not allow_empty and not protected:
        _refuse_empty(snapshot, dir, dir_exists)
    moves, move_warnings = find_moves(desired_by_key, snapshot)
    changes: list[Change] = []
    for key, res in sorted(desired_by_key.items()):
        old = moves.get(key[1]) if key[0] == "Routine" else None
        stored = snapshot.resources.get(key if old is None else ("Routine", old))
        changes.append(_diff_one(res, stored, snapshot, now_ms, old))
    moved_away = {("Routine", old) for old in moves.values()}
    changes += [_not_desired(kind, name, stored, protected, prune_unmanaged)
                for (kind, name), stored in sorted(snapshot.resources.items())
                if (kind, name) not in desired_by_key and (kind, name) not in moved_away]
    options: dict[str, Any] = {"prune_unmanaged": prune_unmanaged, "allow_empty": allow_empty}
    everything = changes
    warnings: list[str] = move_warnings
    if selection is not None and selection.active:
        selection.check_known(chain(((c.kind, c.name) for c in changes),
                                    (("Routine", c.moved_from) for c in changes if c.moved_from)))
        keep, selected_warnings = selection.choose(
            [(c.kind, (c.name, c.moved_from) if c.moved_from else (c.name,), c.is_change, _delivers_to(c))
             for c in changes])
        warnings = selected_warnings + warnings
        changes = [c for i, c in enumerate(changes) if i in keep]
        options.update(selection.options())
        warnings.insert(0, selection.warning())
    if warn:
        warnings += _deleted_channel_warnings(changes, everything, desired_by_key, snapshot)
        warnings += paused_warnings(snapshot.jobs, {c.name for c in changes if c.kind == "Routine"})
        warnings += plan_warnings(everything, changes, desired_by_key, snapshot.jobs, now_ms)  # herds, never-runs
    return Plan(
        format_version=FORMAT_VERSION,
        created_at=rfc3339(now_ms) or "",
        dir=dir,
        journal_path=journal_path,
        lineage=snapshot.lineage,
        serial=snapshot.serial,
        changes=changes,
        warnings=warnings,
        options=options,
    )


def _refuse_empty(snapshot: Snapshot, dir: str, dir_exists: bool) -> None:
    """A missing or emptied directory must not read as "delete everything" (`--allow-empty`)."""
    managed = sum(1 for s in snapshot.resources.values() if s.managed)
    if managed:
        where = "missing" if not dir_exists else "empty"
        raise PalyraError(
            f"refusing to delete all {managed} managed object(s): the directory {dir} is {where} "
            "(pass --allow-empty if that is really what you want)"
        )


def _not_desired(kind: str, name: str, stored: StoredResource, protected: set[str], prune_unmanaged: bool) -> Change:
    """A journal object the directory does not (or, for an invalid file, cannot) say anything about."""
    if stored.managed and stored.source_file in protected:
        return Change(kind, name, PlanAction.NO_OP, f"kept: {stored.source_file} is invalid (last good version stays)",
                      stored.source_file, None, None, managed_before=True, kept=True)
    if stored.managed:
        return Change(kind, name, PlanAction.DELETE, f"removed from the directory (was in {stored.source_file})",
                      stored.source_file, stored.body, None, managed_before=True)
    if prune_unmanaged:
        return Change(kind, name, PlanAction.DELETE, "unmanaged and --prune-unmanaged given", None, stored.body, None,
                      managed_before=False)
    return Change(kind, name, PlanAction.UNMANAGED, "created through the API; not in the directory, left alone",
                  None, stored.body, None, managed_before=False)


def _delivers_to(c: Change) -> list[str]:
    """The channels a routine's planned body delivers to (a targeted routine takes them along)."""
    if c.kind != "Routine" or not c.is_change or c.action is PlanAction.DELETE:
        return []
    d = (c.after or {}).get("spec", {}).get("delivery", {})
    return [ch for ch in (d.get("channel"), d.get("failure_channel")) if isinstance(ch, str)]


def _deleted_channel_warnings(
    changes: list[Change], everything: list[Change], desired_by_key: dict[tuple[str, str], Resource],
    snapshot: Snapshot,
) -> list[str]:
    """A deleted channel still referenced by a routine that stays would break it at run time.

    `changes` is what the plan does, `everything` the whole diff: in a targeted plan a routine the
    plan leaves alone stays too, whatever the directory says about it."""
    deleted = {c.name for c in changes if c.kind == "Channel" and c.action is PlanAction.DELETE}
    warnings: list[str] = []
    if not deleted:
        return warnings
    deleting = {c.name for c in changes if c.kind == "Routine" and c.action is PlanAction.DELETE}
    planned = {id(c) for c in changes}
    for c in everything:
        if c.kind != "Routine" or c.name in deleting:
            continue
        # what stays: the directory's version when this plan writes it, else the journal's
        res: Resource | StoredResource | None = (desired_by_key.get(("Routine", c.name)) if id(c) in planned else None
                                                 ) or snapshot.resources.get(("Routine", c.name))
        d = res.body["spec"].get("delivery", {}) if res is not None else {}
        warnings.extend(f"routine {c.name!r} delivers to channel {ch!r}, which this plan deletes"
                        for ch in (d.get("channel"), d.get("failure_channel")) if ch in deleted)
    return warnings


def _diff_one(res: Resource, stored: StoredResource | None, snapshot: Snapshot, now_ms: int,
              moved_from: str | None = None) -> Change:
    """One desired object against what the journal holds under its name (or, for a move, under
    `moved_from`)."""
    if stored is None:
        # no field list for a create: `after` is the whole object (the text renderer flattens it)
        change = Change(res.kind, res.name, PlanAction.CREATE, f"new in {res.source_file}", res.source_file, None, res)
        change.schedule = _schedule_change(res, None, None, now_ms)
        return change

    moved = stored.source_file != res.source_file
    same = stored.hash == res.hash
    if same and stored.managed and not moved and not stored.drifted and moved_from is None:
        # the common case at scale: compare hashes, decode nothing
        return Change(res.kind, res.name, PlanAction.NO_OP, "up to date", res.source_file, None, None, managed_before=True)

    before_flat = flatten(stored.body)
    after_flat = flatten(res.body)  # decoded for the diff only: the change keeps `res`
    paths = sorted(set(before_flat) | set(after_flat))
    fields = [
        FieldChange(p, before_flat.get(p), after_flat.get(p))
        for p in paths
        if before_flat.get(p, _MISSING) != after_flat.get(p, _MISSING)
    ]
    if any(f.before == {} or f.after == {} for f in fields):  # `metadata: {}` gaining its first key
        fields = [f for f in fields if not _filled_in(f, paths)]
    unchanged = len(paths) - len(fields)
    if moved_from is not None:
        reason = f"metadata.previous_names in {res.source_file}"
        if not stored.managed:
            reason += "; adopted: it was unmanaged, apply makes it managed"
    elif not stored.managed:
        reason = "adopted: exists unmanaged (created through the API); apply makes it managed"
    elif stored.drifted and stored.applied_hash == res.hash:
        reason = DRIFT_ONLY
    elif stored.drifted:
        reason = f"changed in {res.source_file}, and drifted outside git since the last apply"
    elif fields:
        reason = f"changed in {res.source_file}"
    else:
        reason = f"moved from {stored.source_file} to {res.source_file}"
    change = Change(
        res.kind, res.name, PlanAction.MOVE if moved_from else PlanAction.UPDATE, reason, res.source_file,
        stored.body, res, fields=fields, unchanged_fields=unchanged, drift=stored.drifted,
        managed_before=stored.managed, moved_from=moved_from,
    )
    change.schedule = _schedule_change(res, stored, snapshot.jobs.get(moved_from or res.name), now_ms)
    return change


def _filled_in(f: FieldChange, paths: list[str]) -> bool:
    """An empty mapping on one side whose keys the other side lists: the keys are the change
    (`metadata.previous_names: (none) → ["old"]`), not the mapping (`metadata: {} → (none)`)."""
    return (f.before == {} and f.after is None or f.after == {} and f.before is None) and any(
        p.startswith(f.path + ".") for p in paths)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def schedule_of(body: dict[str, Any] | None) -> sched.Schedule | None:
    if not body:
        return None
    spec = body.get("spec", {})
    trig = spec.get("trigger", {})
    if trig.get("kind") != "schedule" or not trig.get("schedule"):
        return None
    return schedule_from_spec(trig["schedule"], spec.get("policies", {}).get("dst"))


def schedule_from_spec(spec: dict[str, Any], dst: dict[str, str] | None) -> sched.Schedule:
    """`Schedule.from_spec`, built once per spelling: the routines of a directory share a few
    dozen schedules, and plan and apply look at every one of them."""
    try:
        key = (tuple(sorted(spec.items())), tuple(sorted((dst or {}).items())) if dst is not None else None)
        hash(key)
    except TypeError:  # a value that is not hashable: no cache, same answer
        return sched.Schedule.from_spec(spec, dst)
    return _schedule_cached(key)


@lru_cache(maxsize=1024)
def _schedule_cached(key: tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, str], ...] | None]) -> sched.Schedule:
    spec, dst = key
    return sched.Schedule.from_spec(dict(spec), dict(dst) if dst is not None else None)


@lru_cache(maxsize=1024)
def _fingerprint(s: sched.Schedule) -> str:
    return s.fingerprint()


def _schedule_change(
    res: Resource, stored: StoredResource | None, job: dict[str, Any] | None, now_ms: int
) -> ScheduleChange | None:
    if res.kind != "Routine":
        return None
    body = res.core  # what scheduling reads: a compact resource keeps it, the rest of its body stays JSON
    new = schedule_of(body)
    old = schedule_of(stored.body) if stored else None
    if new is None and old is None:
        return None
    if new is not None and old is None:
        quiet = body["spec"].get("quiet_hours")
        return _created_schedule(new, json.dumps(quiet, sort_keys=True) if quiet else None, now_ms)
    if new is not None and old is not None and _fingerprint(new) == _fingerprint(old):
        return None  # schedule untouched: next fires do not move
    tz = (new or old).timezone  # type: ignore[union-attr]
    zone = sched.resolve_zone(tz)
    before: list[str] = []
    if old is not None:
        anchor = job.get("anchor_ms") if job else None
        before = [rfc3339(ms, sched.resolve_zone(old.timezone)) or "" for ms in _next_n(old, now_ms, anchor)]
    after: list[str] = []
    notes: list[str] = []
    if new is not None:
        fires = _next_n(new, now_ms, now_ms)
        after = [rfc3339(ms, zone) or "" for ms in fires]
        notes = _notes(new, body["spec"].get("quiet_hours"), now_ms)
    return ScheduleChange(timezone=tz, before=before, after=after, notes=notes)


@lru_cache(maxsize=4096)
def _created_schedule(new: sched.Schedule, quiet_json: str | None, now_ms: int) -> ScheduleChange:
    """A created routine's next fires and notes: one value shared by every create with the same
    schedule and quiet hours (an apply of 100,000 routines has a few dozen), as plan values are never
    changed in place."""
    fires = _next_n(new, now_ms, now_ms)
    zone = sched.resolve_zone(new.timezone)
    return ScheduleChange(timezone=new.timezone, before=[], after=[rfc3339(ms, zone) or "" for ms in fires],
                          notes=list(_notes_cached(new, quiet_json, now_ms)))


def _next_n(s: sched.Schedule, now_ms: int, anchor_ms: int | None) -> list[int]:
    # Many routines share a schedule; the fire list depends only on (schedule, now, anchor).
    return list(_next_n_cached(s, now_ms, anchor_ms))


@lru_cache(maxsize=4096)
def _next_n_cached(s: sched.Schedule, now_ms: int, anchor_ms: int | None) -> tuple[int, ...]:
    return tuple(s.next_n(now_ms, SHOW_FIRES, anchor_ms))


def _notes(s: sched.Schedule, quiet: dict[str, Any] | None, now_ms: int) -> list[str]:
    return list(_notes_cached(s, json.dumps(quiet, sort_keys=True) if quiet else None, now_ms))


@lru_cache(maxsize=4096)
def _notes_cached(s: sched.Schedule, quiet_json: str | None, now_ms: int) -> tuple[str, ...]:
    """DST and quiet-hours warnings for the coming fire times.

    Besides the next few fires, look at the fires around each DST transition of the zone in the
    coming year: a daily 02:30 job meets the gap months from now, and that is when a warning helps.
    """
    fires = list(s.next_n(now_ms, 10, now_ms))
    for t in _transitions(s.timezone, now_ms // 3_600_000):
        fires.extend(s.fires_between(t - 36 * 3_600_000, t + 36 * 3_600_000, now_ms, limit=200))
    fires = sorted({f for f in fires if f > now_ms})
    quiet = json.loads(quiet_json) if quiet_json else None
    notes = sched.notes_for(s, fires, quiet)
    seen: list[str] = []
    for n in notes:
        if n.message not in seen:
            seen.append(n.message)
    return tuple(seen)


@lru_cache(maxsize=256)
def _transitions(tz: str, hour_key: int) -> tuple[int, ...]:
    """UTC offset changes of `tz` within the next ~400 days (instants in ms, hour precision)."""
    zone = sched.resolve_zone(tz)
    start = datetime.fromtimestamp(hour_key * 3600, UTC)
    out: list[int] = []
    prev = start.astimezone(zone).utcoffset()
    day = start
    for _ in range(400):
        nxt = day + timedelta(days=1)
        off = nxt.astimezone(zone).utcoffset()
        if off != prev:
            lo, hi = day, nxt  # bisect to the hour
            while hi - lo > timedelta(hours=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(zone).utcoffset() == prev:
                    lo = mid
                else:
                    hi = mid
            out.append(int(hi.timestamp() * 1000))
            prev = off
        day = nxt
    return tuple(out)
