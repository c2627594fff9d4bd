"""Targeted plans: `plan`/`apply` `--target NAME` and `--exclude NAME` (SPEC §12, docs/gitops.md).

Like Terraform's `-target` and OpenTofu's `-exclude`: a way out for an exceptional moment (roll out
one urgent routine while a colleague's half-reviewed change sits in the same directory), not the
normal loop. So a targeted plan says so loudly (a warning in every view), and it is narrowed after
the full diff is computed: the selection never changes *what* a change is, only which changes go.

Rules:
- a selector is `NAME` (any kind with that name) or `KIND/NAME` (`routine/daily-report`,
  `Channel/pager`; the kind is case-insensitive);
- a selector that matches no object in the directory or the journal is an error: a typo must not
  read as "nothing to do" (`UnknownTarget`, exit 1);
- with targets, only the matching objects are planned; excludes are then removed (an object both
  targeted and excluded is excluded, as in OpenTofu);
- a targeted routine takes along the channels it delivers to when the plan creates or changes them
  (Terraform includes a target's dependencies too): applying the routine alone would leave it
  delivering to a channel the journal does not have. An excluded channel is not taken along; the
  plan warns instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from palyra_ops.errors import UnknownTarget
from palyra_ops.model import KINDS

_KIND_BY_LOWER = {k.lower(): k for k in KINDS}


@dataclass(frozen=True)
class Selector:
    """One `--target`/`--exclude` value."""

    kind: str | None
    name: str

    @classmethod
    def parse(cls, text: str, flag: str = "--target") -> Selector:
        kind, sep, name = text.partition("/")
        if not sep:
            kind, name = "", text
        if not name or (sep and not kind):
            raise UnknownTarget(f"{flag} {text!r}: expected NAME or KIND/NAME (e.g. routine/daily-report)")
        if sep:
            canon = _KIND_BY_LOWER.get(kind.lower())
            if canon is None:
                raise UnknownTarget(f"{flag} {text!r}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
            return cls(canon, name)
        return cls(None, name)

    def matches(self, kind: str, name: str) -> bool:
        return self.name == name and (self.kind is None or self.kind == kind)

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}" if self.kind else self.name


@dataclass(frozen=True)
class Selection:
    """What `--target`/`--exclude` asked for; empty means the whole directory."""

    targets: tuple[Selector, ...] = ()
    excludes: tuple[Selector, ...] = ()

    @classmethod
    def from_flags(cls, targets: Iterable[str] | None, excludes: Iterable[str] | None) -> Selection:
        return cls(tuple(Selector.parse(t, "--target") for t in targets or ()),
                   tuple(Selector.parse(e, "--exclude") for e in excludes or ()))

    @property
    def active(self) -> bool:
        return bool(self.targets or self.excludes)

    def options(self) -> dict[str, list[str]]:
        """The plan's `options` entries (only when targeted: an untargeted plan's JSON is unchanged)."""
        out: dict[str, list[str]] = {}
        if self.targets:
            out["targets"] = [str(t) for t in self.targets]
        if self.excludes:
            out["excludes"] = [str(e) for e in self.excludes]
        return out

    def check_known(self, keys: Iterable[tuple[str, str]]) -> None:
        """Every selector names something that exists (in the directory or the journal)."""
        known = list(keys)
        for flag, sels in (("--target", self.targets), ("--exclude", self.excludes)):
            for s in sels:
                if not any(s.matches(k, n) for k, n in known):
                    names = sorted({n for _, n in known})
                    raise UnknownTarget(f"{flag} {str(s)!r} matches no object in the directory or the journal"
                                        f"{_did_you_mean(s.name, names)}")

    def choose(self, changes: Sequence[tuple[str, Sequence[str], bool, Sequence[str]]]) -> tuple[set[int], list[str]]:
        """Indexes of the changes the plan keeps, and the warnings selection itself has to give.

        `changes`: per plan change (kind, its names — a move has its new and its old one —, is it a
        change, the channels its new body delivers to).
        """
        def hit(sels: tuple[Selector, ...], kind: str, names: Sequence[str]) -> bool:
            return any(s.matches(kind, n) for s in sels for n in names)

        if self.targets:
            keep = {i for i, (k, ns, _, _) in enumerate(changes) if hit(self.targets, k, ns)}
        else:
            keep = set(range(len(changes)))
        keep = {i for i in keep if not hit(self.excludes, changes[i][0], changes[i][1])}
        warnings: list[str] = []
        channel_at = {ns[0]: i for i, (k, ns, _, _) in enumerate(changes) if k == "Channel"}
        for i in sorted(keep):
            kind, (name, *_), is_change, delivers_to = changes[i]
            if kind != "Routine" or not is_change:
                continue
            for ch in delivers_to:
                j = channel_at.get(ch)
                if j is None or j in keep or not changes[j][2]:
                    continue
                if hit(self.excludes, "Channel", (ch,)):
                    warnings.append(f"routine {name!r} delivers to channel {ch!r}, which is excluded from this "
                                    "plan but has changes of its own")
                elif self.targets:
                    keep.add(j)  # a dependency of a target comes along
        return keep, warnings

    def warning(self) -> str:
        parts = []
        if self.targets:
            parts.append("only " + ", ".join(str(t) for t in self.targets) + " (and the channels they need)")
        if self.excludes:
            parts.append("not " + ", ".join(str(e) for e in self.excludes))
        return ("targeted plan: it covers " + "; ".join(parts) + ". The rest of the directory is not planned and "
                "may still differ from the journal after apply; --target/--exclude are for exceptional "
                "situations, not for routine use")


def _did_you_mean(word: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


__all__ = ["Selection", "Selector"]
