"""Every example works as its README says, on a fresh machine (issue 9 point 14).

Each README's ```sh blocks run as written, in a copy of `examples/` (so channel files and state land in
a temp dir), with `palyra-ops` on PATH, a fresh HOME and no PALYRA_* set. The first block ends with
`palyra-ops daemon --config ...`: it runs in the background and the test waits for the daemon it
starts; the later blocks run one after the other (`APPROVAL_ID` is replaced by the pending approval's
id, `127.0.0.1:7142` by the test's free port, also in the copied palyra.yaml). Then the runs the README
promises are checked in the journal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import wasmtime
from conftest import REPO, free_port

from palyra_ops.journal import open_journal

EXAMPLES = sorted(p.name for p in (REPO / "examples").iterdir() if p.is_dir())


class Example:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name, self.root = name, tmp / "checkout"
        shutil.copytree(REPO / "examples", self.root / "examples")
        (self.root / "schemas").symlink_to(REPO / "schemas")
        self.port = free_port()
        cfg = self.root / "examples" / name / "palyra.yaml"
        cfg.write_text(cfg.read_text().replace("127.0.0.1:7142", f"127.0.0.1:{self.port}"))
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        wrapper = bin_dir / "palyra-ops"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m palyra_ops "$@"\n')
        wrapper.chmod(0o755)
        home = tmp / "home"
        home.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PALYRA_", "XDG_"))}
        self.env.update({"HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "NO_COLOR": "1",
                         "PYTHONPATH": str(REPO)})
        readme = (self.root / "examples" / name / "README.md").read_text()
        self.blocks = [b.replace("127.0.0.1:7142", f"127.0.0.1:{self.port}") for b in re.findall(r"```sh\n(.*?)```", readme, re.S)]
        self.state = self.root / ".palyra-examples" / name
        self.log = tmp / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        setup = self.blocks[0]
        assert setup.rstrip().splitlines()[-1].startswith(f"palyra-ops daemon --config examples/{self.name}/palyra.yaml")
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(["sh", "-ec", setup], cwd=self.root, env=self.env, stdout=logf,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the README's commands failed ({self.proc.returncode}):\n{self.log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=0.5).status_code == 200 and \
                        (self.state / "daemon.json").exists():
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def run_block(self, i: int) -> str:
        block = self.blocks[i]
        if "APPROVAL_ID" in block:
            block = block.replace("APPROVAL_ID", self.pending_approval())
        out = subprocess.run(["sh", "-ec", block], cwd=self.root, env=self.env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, f"block {i} failed:\n{block}\n--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}"
        return out.stdout

    def pending_approval(self) -> str:
        def pending() -> list[dict[str, Any]]:
            with open_journal(self.state / "journal.sqlite3") as j:
                return [a for a in j.list_approvals() if a["state"] == "pending"]

        return str(self.wait_for(pending, "a pending approval")[0]["approval_id"])

    def runs(self, routine: str) -> list[dict[str, Any]]:
        with open_journal(self.state / "journal.sqlite3") as j:
            return list(reversed(j.list_runs(routine, limit=100)))

    def wait_run(self, routine: str, status: str) -> dict[str, Any]:
        return self.wait_for(lambda: next((r for r in self.runs(routine) if r["status"] == status), None),
                             f"a {status} run of {routine}")

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.log.read_text()[-4000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def example(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Example]:
    ex = Example(request.param, tmp_path)
    yield ex
    ex.stop()


@pytest.mark.parametrize("example", ["sre-reports"], indirect=True)
def test_sre_reports(example: Example) -> None:
    example.start()
    out = example.run_block(1)
    assert "daily-incident-report" in out and "awaiting_approval" in out
    out = example.run_block(2)
    digest = example.wait_run("daily-incident-report", "succeeded")
    report = json.loads(digest["output"])
    assert report["report"].startswith("Incident digest") and report["request"]["input"]["since"] == "24h"
    assert digest["delivery_status"] == "failed"
    assert digest["delivery_error"] == "header Authorization: environment variable SRE_HOOK_TOKEN is not set"
    assert example.wait_run("oncall-handover", "succeeded")
    logs = json.loads(out[out.index("\n[") + 1:])  # the last command's JSON, after the other lines
    assert logs[0]["run_id"] == digest["run_id"]


@pytest.mark.parametrize("example", ["webhook-automation"], indirect=True)
def test_webhook_automation(example: Example) -> None:
    example.start()
    example.run_block(1)
    deploy = example.wait_run("deploy-hook", "succeeded")
    assert json.loads(deploy["trigger_payload"])["data"] == {"service": "payments", "version": "1.2.0"}
    notes_file = example.state / "deliveries" / "release-notes.jsonl"
    notes = example.wait_for(lambda: notes_file.exists() and notes_file.read_text(), "release-notes.jsonl")
    assert json.loads(notes.splitlines()[0])["routine_id"] == "deploy-hook"
    release = example.wait_run("release-announcement", "succeeded")
    assert json.loads(release["output"])["announcement"].startswith("A new release was published")
    assert release["delivery_status"] == "failed"
    # a webhook that is not signed with the secret is refused and runs nothing
    r = httpx.post(f"http://127.0.0.1:{example.port}/webhooks/github", content=b"{}",
                   headers={"X-GitHub-Event": "release", "X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert r.status_code == 401
    assert len(example.runs("release-announcement")) == 1


@pytest.mark.parametrize("example", ["personal-assistant"], indirect=True)
def test_personal_assistant(example: Example) -> None:
    example.start()
    assert example.wait_run("hello-on-start", "succeeded")["trigger_kind"] == "system_event"
    now = datetime.now(ZoneInfo("Europe/Prague"))
    quiet = now.hour >= 22 or now.hour < 7
    out = example.run_block(1)
    at_line = next(line for line in out.splitlines() if line.startswith("passport-reminder"))
    assert "2027-03-01T09:00:00+01:00" in at_line.split("at ", 1)[1] and "2027-03-01T08:00:00+00:00" in at_line
    journal_run = example.wait_for(lambda: next((r for r in example.runs("evening-journal")
                                                 if r["status"] in ("succeeded", "skipped")), None), "evening-journal")
    if quiet:
        assert (journal_run["status"], journal_run["reason"].startswith("quiet_hours")) == ("skipped", True)
    else:
        assert journal_run["status"] == "succeeded"
        assert "Ask me three short questions about my day" in out  # `memory list` shows the kept output


def test_every_example_is_tested_and_complete() -> None:
    tested = {"sre-reports", "webhook-automation", "personal-assistant"}
    assert set(EXAMPLES) == tested
    for name in EXAMPLES:
        d = REPO / "examples" / name
        assert (d / "README.md").exists() and (d / "palyra.yaml").exists() and (d / "routines.d").is_dir()


@pytest.mark.parametrize("wat", sorted((REPO / "examples").glob("*/skills/*/*.wat")), ids=lambda p: p.parent.name)
def test_shipped_wasm_is_the_wat_compiled(wat: Path) -> None:
    assert wat.with_suffix(".wasm").read_bytes() == wasmtime.wat2wasm(wat.read_text())
