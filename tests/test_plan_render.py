"""The plan's views: `render_text` (plain, colour, verbose) and the JSON view, against golden strings.

The goldens were produced by the renderer as it was before it moved out of `plan.py` (byte for byte
what `palyra-ops plan` printed), so a change to any line of the output shows up here, not only
through the CLI. The plans are in-memory values (tests/plan_values.py): no directory, no journal.
"""

from __future__ import annotations

import io
import json

import pytest
from plan_values import channel, plan_of, routine, snapshot, stored

from palyra_ops.cli._common import WRITERS, emit
from palyra_ops.model import Resource
from palyra_ops.plan import Plan
from palyra_ops.views.plan_json import apply_document, invalid_document
from palyra_ops.views.plan_text import render_text


def mixed() -> Plan:
    """create (with DST warnings), update (fields and next fires), no-op, delete, unmanaged, a warning."""
    old_report = routine("report", prompt="old", delivery={"channel": "old-ch"}, file="team/report.yaml")
    new_report = routine("report", prompt="new", cron="0 10 * * *", delivery={"channel": "old-ch"},
                         file="team/report.yaml")
    same = routine("same")
    desired = [routine("backup", cron="30 2 * * *", timezone="Europe/Prague", file="ops.yaml"), new_report, same]
    snap = snapshot(stored(old_report), stored(same), stored(routine("gone", file="old.yaml")),
                    stored(routine("api-made", file=None), managed=False, source_file=None),
                    stored(channel("old-ch", file="channels.yaml")),
                    jobs={"report": {"anchor_ms": None}})
    return plan_of(desired, snap)


def unchanged() -> Plan:
    same = routine("same")
    return plan_of([same], snapshot(stored(same)))


def kept() -> Plan:
    good = routine("good", file="good.yaml")
    return plan_of([good], snapshot(stored(good), stored(routine("kept-one", file="bad.yaml"))),
                   protected_files={"bad.yaml"})


def small() -> Plan:
    old = routine("report", prompt="old")
    return plan_of([routine("report", prompt="new")], snapshot(stored(old), stored(routine("gone", file="b.yaml"))))


@pytest.mark.parametrize(("make", "verbose", "expected"), [
    (mixed, False, "MIXED_PLAIN"),
    (mixed, True, "MIXED_VERBOSE"),
    (unchanged, False, "UNCHANGED_PLAIN"),
    (unchanged, True, "UNCHANGED_VERBOSE"),
    (kept, False, "KEPT_PLAIN"),
    (kept, True, "KEPT_VERBOSE"),
])
def test_render_text_plain(make, verbose: bool, expected: str) -> None:
    assert render_text(make(), verbose=verbose) == globals()[expected]


@pytest.mark.parametrize(("verbose", "expected"), [(False, "MIXED_COLOUR"), (True, "MIXED_COLOUR_VERBOSE")])
def test_render_text_colour(verbose: bool, expected: str) -> None:
    text = render_text(mixed(), colour=True, verbose=verbose)
    assert text == globals()[expected]
    # without the escape codes it is the plain text, line for line
    plain = MIXED_VERBOSE if verbose else MIXED_PLAIN
    for code in ("\033[32m", "\033[33m", "\033[31m", "\033[36m", "\033[1m", "\033[0m"):
        text = text.replace(code, "")
    assert text == plain


def test_colour_only_on_the_lines_of_a_change() -> None:
    lines = render_text(mixed(), colour=True).splitlines()
    assert '\033[32m  + routine "backup"\033[0m' in lines
    assert '\033[33m  ~ routine "report"\033[0m' in lines
    assert '\033[31m  - routine "gone"\033[0m' in lines
    assert '\033[36m  ? routine "api-made"\033[0m' in lines
    assert "\033[1mPlan: 1 to add, 1 to change, 2 to delete.\033[0m" in lines
    assert '  # routine "backup" will be created (new in ops.yaml)' in lines  # comments stay plain


def test_hidden_field_count_is_singular_for_one() -> None:
    def one_field(path: str) -> Resource:
        return Resource("Channel", "c", {"metadata": {}, "spec": {"path": path}}, "a.yaml")

    plan = plan_of([one_field("b.jsonl")], snapshot(stored(one_field("a.jsonl"))))
    assert render_text(plan) == (
        "palyra-ops will perform the following actions:\n\n"
        '  # channel "c" will be updated in-place (changed in a.yaml)\n'
        '  ~ channel "c"\n'
        '      ~ spec.path: "a.jsonl" → "b.jsonl"\n'
        "        (1 unchanged field hidden)\n\n"
        "Plan: 0 to add, 1 to change, 0 to delete.\n"
    )


def test_json_view_is_the_documented_document() -> None:
    out = io.StringIO()
    emit(small(), "json", render_text, stream=out)
    assert out.getvalue() == SMALL_JSON
    assert json.loads(out.getvalue()) == small().to_json()


def test_json_view_of_every_action_is_the_plan_file_document(tmp_path) -> None:
    plan = mixed()
    out = io.StringIO()
    emit(plan, "json", render_text, stream=out)
    doc = json.loads(out.getvalue())
    assert [c["action"] for c in doc["changes"]] == ["create", "update", "no-op", "delete", "unmanaged", "delete"]
    assert all("kept" not in c for c in doc["changes"])  # only ever added, and only when true
    plan.save(tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text()) == doc


def test_text_view_through_emit_is_render_text() -> None:
    out = io.StringIO()
    emit(mixed(), "text", lambda p: render_text(p), stream=out)
    assert out.getvalue() == MIXED_PLAIN
    assert set(WRITERS) == {"text", "json"}


def test_invalid_and_apply_documents() -> None:
    assert invalid_document([]) == {"format_version": 1, "error": "invalid", "diagnostics": []}
    doc = apply_document(small(), None)
    assert doc["applied"] is False and doc["plan"] == small().to_json()


# -- goldens ----------------------------------------------------------------------------------------

MIXED_PLAIN = '''\
palyra-ops will perform the following actions:

  # routine "backup" will be created (new in ops.yaml)
  + routine "backup"
      + metadata = {}
      + spec.prompt = "say hello"
      + spec.trigger.kind = "schedule"
      + spec.trigger.schedule.cron = "30 2 * * *"
      + spec.trigger.schedule.timezone = "Europe/Prague"
      next fires (Europe/Prague): 2026-03-28T02:30:00+01:00, 2026-03-29T03:00:00+02:00, 2026-03-30T02:30:00+02:00
      warning: 2026-03-29: 02:30 does not exist in Europe/Prague (DST gap); fires at 03:00+02:00
      warning: 2026-10-25: 02:30 occurs twice in Europe/Prague (DST fold); fires once, at 02:30+02:00 (fold: first)
      warning: 2027-03-28: 02:30 does not exist in Europe/Prague (DST gap); fires at 03:00+02:00

  # routine "report" will be updated in-place (changed in team/report.yaml)
  ~ routine "report"
      ~ spec.prompt: "old" → "new"
      ~ spec.trigger.schedule.cron: "0 9 * * *" → "0 10 * * *"
        (4 unchanged fields hidden)
      next fires (utc): 2026-03-28T09:00:00+00:00, 2026-03-29T09:00:00+00:00, 2026-03-30T09:00:00+00:00 → 2026-03-28T10:00:00+00:00, 2026-03-29T10:00:00+00:00, 2026-03-30T10:00:00+00:00

  # channel "old-ch" will be deleted (removed from the directory (was in channels.yaml))
  - channel "old-ch"

  # routine "api-made" is unmanaged (created through the API; not in the directory, left alone)
  ? routine "api-made"

  # routine "gone" will be deleted (removed from the directory (was in old.yaml))
  - routine "gone"

Warning: routine 'report' delivers to channel 'old-ch', which this plan deletes

Plan: 1 to add, 1 to change, 2 to delete.
1 unmanaged object(s) left alone (use --prune-unmanaged to delete them).
'''


MIXED_VERBOSE = '''\
palyra-ops will perform the following actions:

  # routine "backup" will be created (new in ops.yaml)
  + routine "backup"
      + metadata = {}
      + spec.prompt = "say hello"
      + spec.trigger.kind = "schedule"
      + spec.trigger.schedule.cron = "30 2 * * *"
      + spec.trigger.schedule.timezone = "Europe/Prague"
      next fires (Europe/Prague): 2026-03-28T02:30:00+01:00, 2026-03-29T03:00:00+02:00, 2026-03-30T02:30:00+02:00
      warning: 2026-03-29: 02:30 does not exist in Europe/Prague (DST gap); fires at 03:00+02:00
      warning: 2026-10-25: 02:30 occurs twice in Europe/Prague (DST fold); fires once, at 02:30+02:00 (fold: first)
      warning: 2027-03-28: 02:30 does not exist in Europe/Prague (DST gap); fires at 03:00+02:00

  # routine "report" will be updated in-place (changed in team/report.yaml)
  ~ routine "report"
      ~ spec.prompt: "old" → "new"
      ~ spec.trigger.schedule.cron: "0 9 * * *" → "0 10 * * *"
        metadata = {}
        spec.delivery.channel = "old-ch"
        spec.trigger.kind = "schedule"
        spec.trigger.schedule.timezone = "utc"
      next fires (utc): 2026-03-28T09:00:00+00:00, 2026-03-29T09:00:00+00:00, 2026-03-30T09:00:00+00:00 → 2026-03-28T10:00:00+00:00, 2026-03-29T10:00:00+00:00, 2026-03-30T10:00:00+00:00

  # routine "same" is up to date (up to date)
    routine "same"

  # channel "old-ch" will be deleted (removed from the directory (was in channels.yaml))
  - channel "old-ch"
      - metadata = {}
      - spec.path = "out.jsonl"
      - spec.type = "file"

  # routine "api-made" is unmanaged (created through the API; not in the directory, left alone)
  ? routine "api-made"

  # routine "gone" will be deleted (removed from the directory (was in old.yaml))
  - routine "gone"
      - metadata = {}
      - spec.prompt = "say hello"
      - spec.trigger.kind = "schedule"
      - spec.trigger.schedule.cron = "0 9 * * *"
      - spec.trigger.schedule.timezone = "utc"

Warning: routine 'report' delivers to channel 'old-ch', which this plan deletes

Plan: 1 to add, 1 to change, 2 to delete.
1 unmanaged object(s) left alone (use --prune-unmanaged to delete them).
'''


MIXED_COLOUR = '''\
palyra-ops will perform the following actions:

  # routine "backup" will be created (new in ops.yaml)
\033[32m  + routine "backup"\033[0m
\033[32m      + metadata = {}\033[0m
\033[32m      + spec.prompt = "say hello"\033[0m
\033[32m      + spec.trigger.kind = "schedule"\033[0m
\033[32m      + spec.trigger.schedule.cron = "30 2 * * *"\033[0m
\033[32m      + spec.trigger.schedule.timezone = "Europe/Prague"\033[0m
      next fires (Europe/Prague): 2026-03-28T02:30:00+01:00, 2026-03-29T03:00:00+02:00, 2026-03-30T02:30:00+02:00
\033[33m      warning: 2026-03-29: 02:30 does not exist in Europe/Prague (DST gap); fires at 03:00+02:00\033[0m
\033[33m      warning: 2026-10-25: 02:30 occurs twice in Europe/Prague (DST fold); fires once, at 02:30+02:00 (fold: first)\033[0m
\033[33m      warning: 2027-03-28: 02:30 does not exist in Europe/Prague (DST gap); fires at 03:00+02:00\033[0m

  # routine "report" will be updated in-place (changed in team/report.yaml)
\033[33m  ~ routine "report"\033[0m
\033[33m      ~ spec.prompt: "old" → "new"\033[0m
\033[33m      ~ spec.trigger.schedule.cron: "0 9 * * *" → "0 10 * * *"\033[0m
        (4 unchanged fields hidden)
      next fires (utc): 2026-03-28T09:00:00+00:00, 2026-03-29T09:00:00+00:00, 2026-03-30T09:00:00+00:00 → 2026-03-28T10:00:00+00:00, 2026-03-29T10:00:00+00:00, 2026-03-30T10:00:00+00:00

  # channel "old-ch" will be deleted (removed from the directory (was in channels.yaml))
\033[31m  - channel "old-ch"\033[0m

  # routine "api-made" is unmanaged (created through the API; not in the directory, left alone)
\033[36m  ? routine "api-made"\033[0m

  # routine "gone" will be deleted (removed from the directory (was in old.yaml))
\033[31m  - routine "gone"\033[0m

\033[33mWarning: routine 'report' delivers to channel 'old-ch', which this plan deletes\033[0m

\033[1mPlan: 1 to add, 1 to change, 2 to delete.\033[0m
1 unmanaged object(s) left alone (use --prune-unmanaged to delete them).
'''


MIXED_COLOUR_VERBOSE = '''\
palyra-ops will perform the following actions:

  # routine "backup" will be created (new in ops.yaml)
\033[32m  + routine "backup"\033[0m
\033[32m      + metadata = {}\033[0m
\033[32m      + spec.prompt = "say hello"\033[0m
\033[32m      + spec.trigger.kind = "schedule"\033[0m
\033[32m      + spec.trigger.schedule.cron = "30 2 * * *"\033[0m
\033[32m      + spec.trigger.schedule.timezone = "Europe/Prague"\033[0m
      next fires (Europe/Prague): 2026-03-28T02:30:00+01:00, 2026-03-29T03:00:00+02:00, 2026-03-30T02:30:00+02:00
\033[33m      warning: 2026-03-29: 02:30 does not exist in Europe/Prague (DST gap); fires at 03:00+02:00\033[0m
\033[33m      warning: 2026-10-25: 02:30 occurs twice in Europe/Prague (DST fold); fires once, at 02:30+02:00 (fold: first)\033[0m
\033[33m      warning: 2027-03-28: 02:30 does not exist in Europe/Prague (DST gap); fires at 03:00+02:00\033[0m

  # routine "report" will be updated in-place (changed in team/report.yaml)
\033[33m  ~ routine "report"\033[0m
\033[33m      ~ spec.prompt: "old" → "new"\033[0m
\033[33m      ~ spec.trigger.schedule.cron: "0 9 * * *" → "0 10 * * *"\033[0m
        metadata = {}
        spec.delivery.channel = "old-ch"
        spec.trigger.kind = "schedule"
        spec.trigger.schedule.timezone = "utc"
      next fires (utc): 2026-03-28T09:00:00+00:00, 2026-03-29T09:00:00+00:00, 2026-03-30T09:00:00+00:00 → 2026-03-28T10:00:00+00:00, 2026-03-29T10:00:00+00:00, 2026-03-30T10:00:00+00:00

  # routine "same" is up to date (up to date)
    routine "same"

  # channel "old-ch" will be deleted (removed from the directory (was in channels.yaml))
\033[31m  - channel "old-ch"\033[0m
\033[31m      - metadata = {}\033[0m
\033[31m      - spec.path = "out.jsonl"\033[0m
\033[31m      - spec.type = "file"\033[0m

  # routine "api-made" is unmanaged (created through the API; not in the directory, left alone)
\033[36m  ? routine "api-made"\033[0m

  # routine "gone" will be deleted (removed from the directory (was in old.yaml))
\033[31m  - routine "gone"\033[0m
\033[31m      - metadata = {}\033[0m
\033[31m      - spec.prompt = "say hello"\033[0m
\033[31m      - spec.trigger.kind = "schedule"\033[0m
\033[31m      - spec.trigger.schedule.cron = "0 9 * * *"\033[0m
\033[31m      - spec.trigger.schedule.timezone = "utc"\033[0m

\033[33mWarning: routine 'report' delivers to channel 'old-ch', which this plan deletes\033[0m

\033[1mPlan: 1 to add, 1 to change, 2 to delete.\033[0m
1 unmanaged object(s) left alone (use --prune-unmanaged to delete them).
'''


UNCHANGED_PLAIN = '''\
No changes. The journal matches the directory.
'''


UNCHANGED_VERBOSE = '''\
  # routine "same" is up to date (up to date)
    routine "same"

No changes. The journal matches the directory.
'''


KEPT_PLAIN = '''\
No changes. The journal matches the directory.
'''


KEPT_VERBOSE = '''\
  # routine "good" is up to date (up to date)
    routine "good"

  # routine "kept-one" is up to date (kept: bad.yaml is invalid (last good version stays))
    routine "kept-one"

No changes. The journal matches the directory.
'''


SMALL_JSON = '''\
{
  "format_version": 1,
  "created_at": "2026-03-27T12:00:00+00:00",
  "dir": "routines.d",
  "journal": {
    "path": "j.sqlite3",
    "lineage": "lineage-1",
    "serial": 3
  },
  "options": {
    "prune_unmanaged": false,
    "allow_empty": false
  },
  "summary": {
    "add": 0,
    "change": 1,
    "delete": 1,
    "unchanged": 0,
    "unmanaged": 0
  },
  "has_changes": true,
  "warnings": [],
  "changes": [
    {
      "kind": "Routine",
      "name": "report",
      "action": "update",
      "reason": "changed in a.yaml",
      "source_file": "a.yaml",
      "drift": false,
      "managed_before": true,
      "before": {
        "metadata": {},
        "spec": {
          "prompt": "old",
          "trigger": {
            "kind": "schedule",
            "schedule": {
              "cron": "0 9 * * *",
              "timezone": "utc"
            }
          }
        }
      },
      "after": {
        "metadata": {},
        "spec": {
          "prompt": "new",
          "trigger": {
            "kind": "schedule",
            "schedule": {
              "cron": "0 9 * * *",
              "timezone": "utc"
            }
          }
        }
      },
      "fields": [
        {
          "path": "spec.prompt",
          "before": "old",
          "after": "new"
        }
      ],
      "unchanged_fields": 4,
      "schedule": null
    },
    {
      "kind": "Routine",
      "name": "gone",
      "action": "delete",
      "reason": "removed from the directory (was in b.yaml)",
      "source_file": "b.yaml",
      "drift": false,
      "managed_before": true,
      "before": {
        "metadata": {},
        "spec": {
          "prompt": "say hello",
          "trigger": {
            "kind": "schedule",
            "schedule": {
              "cron": "0 9 * * *",
              "timezone": "utc"
            }
          }
        }
      },
      "after": null,
      "fields": [],
      "unchanged_fields": 0,
      "schedule": null
    }
  ]
}
'''


def test_the_plain_create_block_is_the_general_one() -> None:
    """A create without colour takes a short cut (`_plain_create`, most of a first apply's text): the
    same text as the general block for odd bodies too — keys with dots, empty keys and mappings,
    lists, numbers, null, unicode, a create with no body, a routine with DST warnings, a channel."""
    from palyra_ops.plan import Change, PlanAction
    from palyra_ops.views.plan_text import _change_block, _lines, _plain_create

    odd = routine("odd", cron="30 2 * * *", timezone="Europe/Prague",
                  skill={"id": "s", "input": {"a.b": 1, "a": {"b": 2, "": {"x": None}}, "": {"y": [1, "ž"]},
                                              "e": {}, "f": 1.5, "t": True}},
                  labels={"tier": "t1"})
    desired = [odd, routine("plain"), channel("ch", file="c.yaml")]
    plan = plan_of(desired, snapshot())
    creates = [c for c in plan.changes if c.action is PlanAction.CREATE]
    creates.append(Change("Routine", "bare", PlanAction.CREATE, "new in x.yaml", "x.yaml", None, None))
    assert len(creates) == 4
    for ch in creates:
        assert _plain_create(ch) == _lines(_change_block(ch, lambda action, text: text, False))
