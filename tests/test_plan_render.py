"""Plan views: `views.plan_text.render_text` (plain, coloured, verbose) and the JSON documents of
`plan`/`apply --output json`, as golden strings.

The goldens were produced by the renderer before it moved out of `plan.py` (issue 11), so they pin
the output byte for byte: scripts and people read this text, and docs/gitops.md documents the JSON.
Colour codes are written as <G> green, <Y> yellow, <R> red, <C> cyan, <B> bold, <0> reset.
"""

from __future__ import annotations

from palyra_ops.cli._common import as_json
from palyra_ops.errors import Diagnostic, ValidationFailed
from palyra_ops.gitinfo import GitInfo
from palyra_ops.plan import Change, FieldChange, Plan, PlanAction, ScheduleChange
from palyra_ops.reconcile import ApplyResult
from palyra_ops.views.plan_json import applied_document, invalid_document, not_applied_document
from palyra_ops.views.plan_text import render_text

A = PlanAction
CODES = {"<G>": "\033[32m", "<Y>": "\033[33m", "<R>": "\033[31m", "<C>": "\033[36m", "<B>": "\033[1m", "<0>": "\033[0m"}


def coloured(golden: str) -> str:
    for token, code in CODES.items():
        golden = golden.replace(token, code)
    return golden

def plan(changes, warnings=()):
    return Plan(format_version=1, created_at="2026-03-27T12:00:00+00:00", dir="routines.d", journal_path="j.sqlite3",
                lineage="L1", serial=7, changes=list(changes), warnings=list(warnings),
                options={"prune_unmanaged": False, "allow_empty": False})


def body(prompt, **spec):
    return {"metadata": {"description": "hi \"there\""}, "spec": {"prompt": prompt, "enabled": True, **spec}}


def mixed():
    return plan([
        Change("Routine", "alpha", A.CREATE, "new in a.yaml", "a.yaml", None, body("say hello", tags=["x", "y"]),
               schedule=ScheduleChange("Europe/Prague", [], ["2026-03-28T10:30:00+01:00", "2026-03-29T10:30:00+02:00"],
                                       ["2026-03-29 02:00–03:00 does not exist in Europe/Prague"])),
        Change("Routine", "beta", A.UPDATE, "changed in b.yaml", "b.yaml", body("old"), body("new"),
               fields=[FieldChange("spec.prompt", "old", "new"), FieldChange("spec.owner", None, "ops")],
               unchanged_fields=2, managed_before=True,
               schedule=ScheduleChange("utc", ["2026-03-28T09:00:00+00:00"], ["2026-03-28T10:00:00+00:00"], [])),
        Change("Routine", "gamma", A.UPDATE, "changed in g.yaml", "g.yaml", body("x"), body("x", retries=3),
               fields=[FieldChange("spec.retries", None, 3)], unchanged_fields=1, managed_before=True),
        Change("Channel", "team", A.DELETE, "removed from the directory (was in c.yaml)", "c.yaml",
               {"metadata": {}, "spec": {"type": "file", "path": "out.jsonl"}}, None, managed_before=True),
        Change("Routine", "old-sched", A.DELETE, "removed from the directory (was in o.yaml)", "o.yaml", body("bye"), None,
               managed_before=True, schedule=ScheduleChange("utc", ["2026-03-28T09:00:00+00:00"], [], [])),
        Change("Routine", "from-api", A.UNMANAGED, "created through the API; not in the directory, left alone", None,
               body("api"), None, managed_before=False),
        Change("Routine", "same", A.NO_OP, "up to date", "s.yaml", None, None, managed_before=True),
    ], warnings=["routine 'alpha' delivers to channel 'team', which this plan deletes"])


def quiet():
    return plan([
        Change("Routine", "same", A.NO_OP, "up to date", "s.yaml", None, None, managed_before=True),
        Change("Routine", "from-api", A.UNMANAGED, "created through the API; not in the directory, left alone", None,
               body("api"), None, managed_before=False),
    ])


def detailed():
    """For the verbose view: what it adds (unchanged fields, deleted fields, up-to-date objects)."""
    return plan([
        Change("Routine", "delta", A.UPDATE, "changed in d.yaml", "d.yaml", body("before", owner="ops"),
               body("after", owner="ops"), fields=[FieldChange("spec.prompt", "before", "after")],
               unchanged_fields=3, managed_before=True),
        Change("Channel", "pager", A.DELETE, "removed from the directory (was in p.yaml)", "p.yaml",
               {"metadata": {}, "spec": {"type": "webhook", "url": "https://example.invalid/hook"}}, None,
               managed_before=True),
        Change("Routine", "steady", A.NO_OP, "up to date", "s.yaml", None, None, managed_before=True),
    ])


MIXED_PLAIN = r"""palyra-ops will perform the following actions:

  # routine "alpha" will be created (new in a.yaml)
  + routine "alpha"
      + metadata.description = "hi \"there\""
      + spec.enabled = true
      + spec.prompt = "say hello"
      + spec.tags = ["x", "y"]
      next fires (Europe/Prague): 2026-03-28T10:30:00+01:00, 2026-03-29T10:30:00+02:00
      warning: 2026-03-29 02:00–03:00 does not exist in Europe/Prague

  # routine "beta" will be updated in-place (changed in b.yaml)
  ~ routine "beta"
      ~ spec.prompt: "old" → "new"
      ~ spec.owner: (none) → "ops"
        (2 unchanged fields hidden)
      next fires (utc): 2026-03-28T09:00:00+00:00 → 2026-03-28T10:00:00+00:00

  # routine "gamma" will be updated in-place (changed in g.yaml)
  ~ routine "gamma"
      ~ spec.retries: (none) → 3
        (1 unchanged field hidden)

  # channel "team" will be deleted (removed from the directory (was in c.yaml))
  - channel "team"

  # routine "old-sched" will be deleted (removed from the directory (was in o.yaml))
  - routine "old-sched"
      next fires (utc): 2026-03-28T09:00:00+00:00 → (never)

  # routine "from-api" is unmanaged (created through the API; not in the directory, left alone)
  ? routine "from-api"

Warning: routine 'alpha' delivers to channel 'team', which this plan deletes

Plan: 1 to add, 2 to change, 2 to delete.
1 unmanaged object(s) left alone (use --prune-unmanaged to delete them).
"""

DETAILED_VERBOSE = r"""palyra-ops will perform the following actions:

  # routine "delta" will be updated in-place (changed in d.yaml)
  ~ routine "delta"
      ~ spec.prompt: "before" → "after"
        metadata.description = "hi \"there\""
        spec.enabled = true
        spec.owner = "ops"

  # channel "pager" will be deleted (removed from the directory (was in p.yaml))
  - channel "pager"
      - metadata = {}
      - spec.type = "webhook"
      - spec.url = "https://example.invalid/hook"

  # routine "steady" is up to date (up to date)
    routine "steady"

Plan: 0 to add, 1 to change, 1 to delete.
"""


MIXED_COLOUR = r"""palyra-ops will perform the following actions:

  # routine "alpha" will be created (new in a.yaml)
<G>  + routine "alpha"<0>
<G>      + metadata.description = "hi \"there\""<0>
<G>      + spec.enabled = true<0>
<G>      + spec.prompt = "say hello"<0>
<G>      + spec.tags = ["x", "y"]<0>
      next fires (Europe/Prague): 2026-03-28T10:30:00+01:00, 2026-03-29T10:30:00+02:00
<Y>      warning: 2026-03-29 02:00–03:00 does not exist in Europe/Prague<0>

  # routine "beta" will be updated in-place (changed in b.yaml)
<Y>  ~ routine "beta"<0>
<Y>      ~ spec.prompt: "old" → "new"<0>
<Y>      ~ spec.owner: (none) → "ops"<0>
        (2 unchanged fields hidden)
      next fires (utc): 2026-03-28T09:00:00+00:00 → 2026-03-28T10:00:00+00:00

  # routine "gamma" will be updated in-place (changed in g.yaml)
<Y>  ~ routine "gamma"<0>
<Y>      ~ spec.retries: (none) → 3<0>
        (1 unchanged field hidden)

  # channel "team" will be deleted (removed from the directory (was in c.yaml))
<R>  - channel "team"<0>

  # routine "old-sched" will be deleted (removed from the directory (was in o.yaml))
<R>  - routine "old-sched"<0>
      next fires (utc): 2026-03-28T09:00:00+00:00 → (never)

  # routine "from-api" is unmanaged (created through the API; not in the directory, left alone)
<C>  ? routine "from-api"<0>

<Y>Warning: routine 'alpha' delivers to channel 'team', which this plan deletes<0>

<B>Plan: 1 to add, 2 to change, 2 to delete.<0>
1 unmanaged object(s) left alone (use --prune-unmanaged to delete them).
"""

QUIET_PLAIN = r"""  # routine "from-api" is unmanaged (created through the API; not in the directory, left alone)
  ? routine "from-api"

No changes. The journal matches the directory.
1 unmanaged object(s) left alone (use --prune-unmanaged to delete them).
"""

QUIET_PLAIN_VERBOSE = r"""  # routine "same" is up to date (up to date)
    routine "same"

  # routine "from-api" is unmanaged (created through the API; not in the directory, left alone)
  ? routine "from-api"

No changes. The journal matches the directory.
1 unmanaged object(s) left alone (use --prune-unmanaged to delete them).
"""

QUIET_COLOUR = r"""  # routine "from-api" is unmanaged (created through the API; not in the directory, left alone)
<C>  ? routine "from-api"<0>

No changes. The journal matches the directory.
1 unmanaged object(s) left alone (use --prune-unmanaged to delete them).
"""

CHANGES_JSON = r"""{
  "format_version": 1,
  "created_at": "2026-03-27T12:00:00+00:00",
  "dir": "routines.d",
  "journal": {
    "path": "j.sqlite3",
    "lineage": "L1",
    "serial": 7
  },
  "options": {
    "prune_unmanaged": false,
    "allow_empty": false
  },
  "summary": {
    "add": 1,
    "change": 1,
    "delete": 0,
    "unchanged": 0,
    "unmanaged": 0
  },
  "has_changes": true,
  "warnings": [
    "routine 'alpha' delivers to channel 'team', which this plan deletes"
  ],
  "changes": [
    {
      "kind": "Routine",
      "name": "alpha",
      "action": "create",
      "reason": "new in a.yaml",
      "source_file": "a.yaml",
      "drift": false,
      "managed_before": null,
      "before": null,
      "after": {
        "metadata": {
          "description": "hi \"there\""
        },
        "spec": {
          "prompt": "say hello",
          "enabled": true,
          "tags": [
            "x",
            "y"
          ]
        }
      },
      "fields": [],
      "unchanged_fields": 0,
      "schedule": {
        "timezone": "Europe/Prague",
        "before": [],
        "after": [
          "2026-03-28T10:30:00+01:00",
          "2026-03-29T10:30:00+02:00"
        ],
        "notes": [
          "2026-03-29 02:00–03:00 does not exist in Europe/Prague"
        ]
      }
    },
    {
      "kind": "Routine",
      "name": "beta",
      "action": "update",
      "reason": "changed in b.yaml",
      "source_file": "b.yaml",
      "drift": false,
      "managed_before": true,
      "before": {
        "metadata": {
          "description": "hi \"there\""
        },
        "spec": {
          "prompt": "old",
          "enabled": true
        }
      },
      "after": {
        "metadata": {
          "description": "hi \"there\""
        },
        "spec": {
          "prompt": "new",
          "enabled": true
        }
      },
      "fields": [
        {
          "path": "spec.prompt",
          "before": "old",
          "after": "new"
        },
        {
          "path": "spec.owner",
          "before": null,
          "after": "ops"
        }
      ],
      "unchanged_fields": 2,
      "schedule": {
        "timezone": "utc",
        "before": [
          "2026-03-28T09:00:00+00:00"
        ],
        "after": [
          "2026-03-28T10:00:00+00:00"
        ],
        "notes": []
      }
    }
  ]
}
"""


def test_text_plain() -> None:
    assert render_text(mixed()) == MIXED_PLAIN


def test_text_verbose_shows_unchanged_fields_deleted_fields_and_up_to_date_objects() -> None:
    assert render_text(detailed(), verbose=True) == DETAILED_VERBOSE
    assert render_text(detailed()) == (
        'palyra-ops will perform the following actions:\n\n'
        '  # routine "delta" will be updated in-place (changed in d.yaml)\n  ~ routine "delta"\n'
        '      ~ spec.prompt: "before" → "after"\n        (3 unchanged fields hidden)\n\n'
        '  # channel "pager" will be deleted (removed from the directory (was in p.yaml))\n  - channel "pager"\n\n'
        'Plan: 0 to add, 1 to change, 1 to delete.\n')


def _plain(text: str) -> str:
    for code in CODES.values():
        text = text.replace(code, "")
    return text


def test_text_coloured() -> None:
    assert render_text(mixed(), colour=True) == coloured(MIXED_COLOUR)
    verbose = render_text(detailed(), colour=True, verbose=True)
    assert _plain(verbose) == DETAILED_VERBOSE  # the colour codes are all that differs
    assert coloured('<R>      - spec.type = "webhook"<0>\n') in verbose  # deleted fields in the delete colour
    assert '\n        spec.enabled = true\n' in verbose  # unchanged fields stay plain
    assert '\n    routine "steady"\n' in verbose  # no colour for an up-to-date object


def test_text_without_changes() -> None:
    assert render_text(quiet()) == QUIET_PLAIN
    assert render_text(quiet(), verbose=True) == QUIET_PLAIN_VERBOSE
    assert render_text(quiet(), colour=True) == coloured(QUIET_COLOUR)
    assert render_text(plan([])) == "No changes. The journal matches the directory.\n"


def test_json_view_of_a_plan_is_the_documented_document() -> None:
    changes = plan(mixed().changes[:2], mixed().warnings)  # a create with fires and notes, an update with fields
    assert as_json(changes) == CHANGES_JSON
    assert Plan.from_json(mixed().to_json()) == mixed()


def test_json_documents_of_an_invalid_directory_and_of_apply() -> None:
    diag = Diagnostic(file="routines.d/a.yaml", line=3, column=7, path="spec.prompt", message="is required")
    assert invalid_document(ValidationFailed([diag])) == {
        "format_version": 1, "error": "invalid", "diagnostics": [diag.to_json()]}
    assert not_applied_document(quiet()) == {"applied": False, "plan": quiet().to_json()}
    result = ApplyResult(added=1, changed=2, deleted=0, serial=8, git=GitInfo(commit="abc123", dirty=True))
    assert applied_document(result) == {"applied": True, "added": 1, "changed": 2, "deleted": 0, "serial": 8,
                                        "git_commit": "abc123", "git_dirty": True}
    assert applied_document(ApplyResult(0, 0, 1, 9, None))["git_commit"] is None
