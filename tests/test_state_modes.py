"""Owner-only state (SPEC §4, issue 9 point 8): under umask 000 every file the CLI and the daemon keep
in the state root is 0600 (installed skill copies 0400: read-only) and every directory 0700 — the
journal with its WAL/SHM, token, discovery file, source and compile caches, skills index/trust
store/copies, memory index, lock files. Read-only commands create nothing. A cache someone else could
have written is not trusted: it is ignored and rebuilt."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from gitops_helpers import routine_yaml, write
from skills.kit import build, new_key

FINAL = ("succeeded", "failed", "denied")


def cli(state: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PALYRA_")}
    env.update({"PALYRA_STATE_ROOT": str(state), "NO_COLOR": "1", "PYTHONPATH": str(REPO)})
    out = subprocess.run([sys.executable, "-m", "palyra_ops", *args], env=env, cwd=cwd, capture_output=True,
                         text=True, timeout=120, umask=0)
    return out


def modes(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = oct(stat.S_IMODE(os.lstat(p).st_mode))
    out["."] = oct(stat.S_IMODE(os.stat(root).st_mode))
    return out


def wrong_modes(root: Path) -> dict[str, str]:
    bad = {}
    for rel, mode in modes(root).items():
        p = root / rel
        if p.is_dir():
            ok = mode == "0o700"
        elif rel.startswith("skills/installed/"):
            ok = mode == "0o400"  # read-only owner-only copies: skills run only from them, never edited
        else:
            ok = mode == "0o600"
        if not ok:
            bad[rel] = mode
    return bad


def test_read_only_commands_create_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    d = tmp_path / "routines.d"
    write(d, "a.yaml", routine_yaml("alpha"))
    assert cli(state, "validate", str(d)).returncode == 0
    assert cli(state, "plan", "--dir", str(d)).returncode == 0
    assert cli(state, "status", "--dir", str(d), "--url", "http://127.0.0.1:9").returncode == 0
    assert not state.exists()


def test_every_state_file_is_owner_only_under_umask_000(daemon_factory, tmp_path: Path) -> None:
    d = daemon_factory(umask=0, extra_args=["--watch", "--rescan-interval", "1s"],
                       config={"memory": {"intervals": {"backfill": "1s", "maintenance": "1s"}}})
    state, journal = d.paths.state_root, str(d.paths.journal)
    key, pub = new_key()
    assert cli(state, "skills", "trust", "add", "acme", pub).returncode == 0
    pkg = build("upper", tmp_path / "pkg", key=key)
    out = cli(state, "skills", "install", str(pkg))
    assert out.returncode == 0, out.stderr
    write(d.paths.dir, "a.yaml", routine_yaml("shout", extra_spec="skill:\n  id: upper\n"),
          routine_yaml("kept", extra_spec="delivery: {mode: local_only}\n"))
    for args in (["validate", str(d.paths.dir)], ["plan", "--dir", str(d.paths.dir), "--journal", journal],
                 ["apply", "--dir", str(d.paths.dir), "--journal", journal, "--auto-approve"]):
        out = cli(state, *args)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
    c = d.client()
    d.wait_for(lambda: c.get("/console/v1/routines/shout").status_code == 200, timeout=30, what="applied")
    for name in ("shout", "kept"):
        assert c.post("/console/v1/routines/dispatch", json={"routine_id": name}).status_code == 202
        d.wait_for(lambda name=name: [r for r in d.runs(name) if r["status"] in FINAL], timeout=30, what=f"{name} ran")
    assert [r["status"] for r in d.runs("shout")] == ["succeeded"]  # the skill ran: compile cache written
    assert cli(state, "memory", "add", "a note added by hand", "--journal", journal).returncode == 0
    d.wait_for(lambda: c.get("/console/v1/memory/search", params={"q": "note"}).json()["pending"] == 0
               and (state / "journal.sqlite3.memory.hnsw").exists(), timeout=40, what="backfill")
    assert cli(state, "memory", "backfill", "--journal", journal).returncode == 0

    expected = {"token", "daemon.json", "journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm",
                "journal.sqlite3.memory.hnsw", "journal.sqlite3.memory.hnsw.json", "journal.sqlite3.memory.lock",
                "cache", "skills/index.json", "skills/trust.json", "skills/.lock", "skills/installed", "skills/cache"}
    seen = modes(state)
    assert expected <= set(seen), sorted(expected - set(seen))
    assert any(k.startswith("cache/source/source-v") and k.endswith(".json") for k in seen)
    assert any(k.endswith(".cwasm") for k in seen)
    assert wrong_modes(state) == {}
    d.stop()
    assert wrong_modes(state) == {}


def _forge(cache_root: Path, old: str, new: str) -> list[Path]:
    forged = []
    for p in cache_root.rglob("*.json"):
        text = p.read_text()
        if old in text:
            p.write_text(text.replace(old, new))
            forged.append(p)
    return forged


def test_a_cache_others_could_write_is_ignored_and_rebuilt(tmp_path: Path) -> None:
    """The per-file source cache decides what apply applies: an entry or directory that is group or
    world-writable (or not ours) must never be read — here it would swap in another prompt."""
    state = tmp_path / "state"
    d = tmp_path / "routines.d"
    write(d, "a.yaml", routine_yaml("alpha", prompt="the real prompt"))
    journal = str(state / "journal.sqlite3")
    assert cli(state, "apply", "--dir", str(d), "--journal", journal, "--auto-approve").returncode == 0
    source_cache = state / "cache" / "source"
    assert _forge(source_cache, "the real prompt", "an injected prompt")  # a tampered entry, still 0600
    # the routine changes in git: the file's content (and cache key) is new, so plant a forged entry for it
    write(d, "a.yaml", routine_yaml("alpha", prompt="the next prompt"))
    assert cli(state, "apply", "--dir", str(d), "--journal", journal, "--auto-approve").returncode == 0
    assert _forge(source_cache, "the next prompt", "an injected prompt")
    write(d, "a.yaml", routine_yaml("alpha", prompt="the real prompt"))  # back to the first content

    def stored_prompt() -> str:
        from palyra_ops.journal import read_snapshot

        return read_snapshot(journal).resources[("Routine", "alpha")].body["spec"]["prompt"]

    # a world-writable cache directory: anyone could have planted or swapped entries
    os.chmod(source_cache, 0o777)
    out = cli(state, "apply", "--dir", str(d), "--journal", journal, "--auto-approve")
    assert out.returncode == 0, out.stderr
    assert stored_prompt() == "the real prompt"
    assert oct(stat.S_IMODE(os.stat(source_cache).st_mode)) == "0o700"  # rebuilt private
    assert not _forge(source_cache, "an injected prompt", "x")  # the forged entries are gone
    # a world-writable entry in a private directory is not read either
    entries = [p for p in source_cache.rglob("*.json") if p.name != "resources.json" and "the real prompt" in p.read_text()]
    assert entries
    for p in entries:
        p.write_text(p.read_text().replace("the real prompt", "an injected prompt"))
        os.chmod(p, 0o666)
    write(d, "a.yaml", routine_yaml("alpha", prompt="the next prompt"))
    assert cli(state, "apply", "--dir", str(d), "--journal", journal, "--auto-approve").returncode == 0
    write(d, "a.yaml", routine_yaml("alpha", prompt="the real prompt"))
    out = cli(state, "plan", "--dir", str(d), "--journal", journal, "--output", "json")
    assert out.returncode == 0, out.stderr
    after = {(c["kind"], c["name"]): c for c in json.loads(out.stdout)["changes"]}
    assert "an injected prompt" not in out.stdout
    assert after[("Routine", "alpha")]["action"] == "update"
    assert cli(state, "apply", "--dir", str(d), "--journal", journal, "--auto-approve").returncode == 0
    assert stored_prompt() == "the real prompt"
    assert wrong_modes(state) == {}


def test_a_journal_that_cannot_be_created_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    d = tmp_path / "routines.d"
    write(d, "a.yaml", routine_yaml("alpha"))
    bad = tmp_path / "a-file" / "journal.sqlite3"
    out = cli(tmp_path / "state", "apply", "--dir", str(d), "--journal", str(bad), "--auto-approve")
    assert out.returncode == 1
    assert out.stderr == f"palyra-ops: journal {bad}: cannot be created: {bad.parent} is not a directory\n"
