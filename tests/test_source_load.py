"""load_directory: discovery, identity of documents, cross-file checks and the per-file cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import palyra_ops.source.directory as source_mod
from palyra_ops.errors import PalyraError
from palyra_ops.source import Document, load_directory

CHANNEL = "apiVersion: palyra/v1\nkind: Channel\nmetadata: {{name: {name}}}\nspec: {{type: log}}\n"
ROUTINE = """apiVersion: palyra/v1
kind: Routine
metadata: {{name: {name}}}
spec:
  prompt: hi
  trigger: {{kind: manual}}
  delivery: {{mode: specific_channel, channel: {channel}}}
"""


def _tree(root: Path) -> None:
    (root / "team").mkdir(parents=True)
    (root / "channels.yaml").write_text(CHANNEL.format(name="ops") + "---\n" + CHANNEL.format(name="pager"))
    (root / "team" / "sre.yml").write_text(ROUTINE.format(name="a", channel="ops") + "---\n" + ROUTINE.format(name="b", channel="pager"))
    (root / ".hidden.yaml").write_text("not: [valid\n")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.yaml").write_text("not: [valid\n")
    (root / "README.md").write_text("# notes\n")


def test_documents_carry_file_identity_position_and_body(tmp_path: Path) -> None:
    root = tmp_path / "routines.d"
    _tree(root)
    source = load_directory(root, display_root="routines.d")
    assert source.ok
    assert sorted(source.files) == ["channels.yaml", "team/sre.yml"]
    b = source.documents[-1]
    assert b == Document(
        file="team/sre.yml", display="routines.d/team/sre.yml", index=1, line=9, column=1, kind="Routine", name="b",
        body={
            "apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "b"},
            "spec": {"prompt": "hi", "trigger": {"kind": "manual"}, "delivery": {"mode": "specific_channel", "channel": "pager"}},
        },
    )
    assert [(d.file, d.index, d.name) for d in source.documents] == [
        ("channels.yaml", 0, "ops"), ("channels.yaml", 1, "pager"), ("team/sre.yml", 0, "a"), ("team/sre.yml", 1, "b"),
    ]
    report = source.files["team/sre.yml"]
    assert report.ok and report.names == [("Routine", "a"), ("Routine", "b")] and len(report.sha256) == 64


def test_display_defaults_to_the_directory_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path / "r")
    monkeypatch.chdir(tmp_path)
    assert load_directory(Path("r")).documents[0].display == "r/channels.yaml"


def test_missing_or_empty_root_is_an_empty_set_and_a_file_root_is_an_error(tmp_path: Path) -> None:
    assert load_directory(tmp_path / "nope").ok and not load_directory(tmp_path / "nope").files
    assert load_directory(tmp_path).documents == []
    (tmp_path / "f.yaml").write_text("")
    with pytest.raises(PalyraError, match="is not a directory"):
        load_directory(tmp_path / "f.yaml")


def test_symlinks_inside_the_directory_are_followed_once(tmp_path: Path) -> None:
    root = tmp_path / "r"
    _tree(root)
    os.symlink("team", root / "alias-of-team")  # same directory twice: walked once
    os.symlink("channels.yaml", root / "link.yaml")  # a file link: its documents count (and clash)
    source = load_directory(root, display_root="")
    assert [d.format() for d in source.diagnostics] == [
        "link.yaml:3:18: metadata.name: duplicate Channel name 'ops' (first defined at channels.yaml:3:18)",
        "link.yaml:8:18: metadata.name: duplicate Channel name 'pager' (first defined at channels.yaml:8:18)",
    ]
    assert {d.file for d in source.documents} == {"channels.yaml", "alias-of-team/sre.yml"}


def test_an_invalid_file_withholds_its_documents_but_still_defines_names(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CHANNEL.format(name="ops").replace("type: log", "type: log, level: loud"))
    (tmp_path / "r.yaml").write_text(ROUTINE.format(name="a", channel="ops"))
    source = load_directory(tmp_path, display_root="")
    assert [d.format() for d in source.diagnostics] == [
        "c.yaml:4:26: spec.level: 'loud' is not one of debug, info, warning, error"
    ]
    assert [d.name for d in source.documents] == ["a"]  # no cascade "no Channel named 'ops'"
    assert source.files["c.yaml"].names == [("Channel", "ops")] and not source.files["c.yaml"].ok


def test_references_to_channels_and_skills(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        ROUTINE.format(name="a", channel="opps")
        + "  skill: {id: incident-digest}\n"
        + "---\n"
        + CHANNEL.format(name="ops")
    )
    diags = [d.format() for d in load_directory(tmp_path, display_root="", known_skills={"incident-digets"}).diagnostics]
    assert diags == [
        "r.yaml:7:47: spec.delivery.channel: no Channel named 'opps' in the directory (did you mean 'ops'?)",
        "r.yaml:8:15: spec.skill.id: skill 'incident-digest' is not installed (did you mean 'incident-digets'?) (palyra-ops skills list)",
    ]
    assert len(load_directory(tmp_path, display_root="").diagnostics) == 1  # skills unchecked without known_skills


def test_cache_reuses_unchanged_files_and_reparses_edited_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "r"
    _tree(root)
    cache = tmp_path / "cache"
    cold = load_directory(root, cache_dir=cache)
    calls: list[bytes] = []
    real = source_mod.check_file
    monkeypatch.setattr(source_mod, "check_file", lambda data: calls.append(data) or real(data))
    warm = load_directory(root, cache_dir=cache)
    assert calls == [] and warm.documents == cold.documents and warm.files == cold.files
    (root / "team" / "sre.yml").write_text(ROUTINE.format(name="a", channel="nope"))
    edited = load_directory(root, cache_dir=cache, display_root="")
    assert len(calls) == 1
    assert [d.format() for d in edited.diagnostics] == [
        "team/sre.yml:7:47: spec.delivery.channel: no Channel named 'nope' in the directory"
    ]
    # a cached *invalid* file replays its diagnostics without parsing
    (root / "bad.yaml").write_text("a: !!binary aGk=\n")
    first = [d.format() for d in load_directory(root, cache_dir=cache, display_root="").diagnostics]
    again = [d.format() for d in load_directory(root, cache_dir=cache, display_root="").diagnostics]
    assert first == again and len(calls) == 2  # the edited sre.yml once, bad.yaml once


def test_a_damaged_cache_entry_is_a_miss(tmp_path: Path) -> None:
    root = tmp_path / "r"
    _tree(root)
    cache = tmp_path / "cache"
    cold = load_directory(root, cache_dir=cache)
    for entry in cache.rglob("*.json"):
        entry.write_text("{not json")
    assert load_directory(root, cache_dir=cache).documents == cold.documents


def test_check_document_words_problems_like_validate() -> None:
    from palyra_ops.source import check_document

    doc = {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "a"},
           "spec": {"prompt": "x", "trigger": {"kind": "manual"}, "policies": {"concurrency": "sometimes"}}}
    assert check_document(doc) == [
        ("spec.policies.concurrency", "'sometimes' is not one of allow, forbid, replace, queue_one")
    ]


def test_check_document_checks_references_like_the_directory_does() -> None:
    """The console API's upsert judges a routine's channels and skill with the directory's wording,
    against what it knows instead of a directory (here: "in the journal")."""
    from palyra_ops.source import check_document

    spec = {"prompt": "x", "trigger": {"kind": "manual"}, "skill": {"id": "incident-digest"},
            "delivery": {"mode": "specific_channel", "channel": "opps", "failure_channel": "ops"}}
    doc = {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "a"}, "spec": spec}
    assert check_document(doc, channels={"ops"}, skills={"incident-digets"}, where="in the journal") == [
        ("spec.delivery.channel", "no Channel named 'opps' in the journal (did you mean 'ops'?)"),
        ("spec.skill.id", "skill 'incident-digest' is not installed (did you mean 'incident-digets'?) (palyra-ops skills list)"),
    ]
    assert check_document(doc, channels={"ops", "opps"}) == []  # skills None: not checked
    assert check_document(doc) == []  # no channels given: no reference checks at all
    # a spec that is already wrong is not checked for references (no cascade of findings)
    broken = {**doc, "spec": {**spec, "policies": {"concurrency": "sometimes"}}}
    assert check_document(broken, channels=set(), skills=set()) == [
        ("spec.policies.concurrency", "'sometimes' is not one of allow, forbid, replace, queue_one")
    ]
