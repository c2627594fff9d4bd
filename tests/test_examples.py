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
import yaml
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


#: examples that are not a routine set but show how to run palyra-ops somewhere (tested below)
TOOLING = {"ci", "deploy"}


def test_every_example_is_tested_and_complete() -> None:
    tested = {"sre-reports", "webhook-automation", "personal-assistant"}
    assert set(EXAMPLES) == tested | TOOLING
    for name in sorted(tested):
        d = REPO / "examples" / name
        assert (d / "README.md").exists() and (d / "palyra.yaml").exists() and (d / "routines.d").is_dir()


@pytest.mark.parametrize("wat", sorted((REPO / "examples").glob("*/skills/*/*.wat")), ids=lambda p: p.parent.name)
def test_shipped_wasm_is_the_wat_compiled(wat: Path) -> None:
    assert wat.with_suffix(".wasm").read_bytes() == wasmtime.wat2wasm(wat.read_text())


# -- examples/ci: the pull-request plan workflow -------------------------------------------------------

WORKFLOW = REPO / "examples" / "ci" / "palyra-plan.yml"
#: what the workflow's `${{ ... }}` expressions stand for in this test (a `vars.X || 'default'` is its default)
EXPRESSIONS = {"github.token": "test-token", "github.event.pull_request.number": "7",
               "vars.PALYRA_OPS_VERSION": ""}
FAKE_GH = """#!/bin/sh
# a stand-in gh: records each call and the body it was given; --edit-last fails until a comment exists
echo "$*" >> "$GH_LOG"
case "$*" in *--edit-last*) [ -e "$GH_LOG.posted" ] || { echo "no comments found" >&2; exit 1; } ;; esac
touch "$GH_LOG.posted"
while [ $# -gt 0 ]; do [ "$1" = --body-file ] && cat "$2" > "$GH_LOG.body"; shift; done
exit 0
"""


def _expression(expr: str, outputs: dict[str, str]) -> str:
    expr = expr.strip()
    if expr.startswith("steps.plan.outputs."):
        return outputs.get(expr.rsplit(".", 1)[1], "")
    if (m := re.fullmatch(r"vars\.\w+ \|\| '([^']*)'", expr)) is not None:
        return m.group(1)
    return EXPRESSIONS[expr]


def _resolve(value: str, outputs: dict[str, str]) -> str:
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: _expression(m.group(1), outputs), str(value))


def _palyra_commands(script: str) -> list[list[str]]:
    """Every `palyra-ops ...` command line of a run script, as argv (up to a redirection or operator)."""
    import shlex

    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line.strip(), comments=True) if "palyra-ops " in line else []
        if words[:1] == ["palyra-ops"]:
            argv = []
            for w in words[1:]:
                if w in (">", "2>", "|", "||", "&&", ";") or w.startswith((">", "2>")):
                    break
                argv.append(w)
            commands.append(argv)
    return commands


def _run_workflow(cwd: Path, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Run the workflow's `run` steps in order, as GitHub does (bash -eo pipefail, env, step outputs)."""
    doc = yaml.safe_load(WORKFLOW.read_text())
    job = doc["jobs"]["plan"]
    outputs: dict[str, str] = {}
    ran = []
    for step in job["steps"]:
        if "run" not in step or step["name"] == "Install palyra-ops":  # palyra-ops is on PATH already
            continue
        if "if" in step and not outputs.get("exitcode"):
            continue
        out_file = cwd / "github_output"
        out_file.write_text("")
        step_env = {**env, "GITHUB_OUTPUT": str(out_file)}
        step_env.update({k: _resolve(v, outputs) for k, v in {**doc["env"], **step.get("env", {})}.items()})
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=cwd,
                              env=step_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{step['name']}:\n{done.stdout}\n{done.stderr}"
        outputs.update(line.split("=", 1) for line in out_file.read_text().splitlines())
        ran.append(step["name"])
    return ran, outputs


def test_ci_workflow_parses_and_names_real_commands() -> None:
    from palyra_ops.cli import build_parser

    doc = yaml.safe_load(WORKFLOW.read_text())
    assert doc[True] == {"pull_request": {"paths": ["routines.d/**", ".github/workflows/palyra-plan.yml"]}}  # `on:`
    assert doc["permissions"] == {"contents": "read", "pull-requests": "write"}
    steps = doc["jobs"]["plan"]["steps"]
    commands = [argv for s in steps if "run" in s for argv in _palyra_commands(s["run"])]
    assert [argv[0] for argv in commands] == ["validate", "plan"]
    parser = build_parser(full=True)
    for argv in commands:
        args = parser.parse_args([os.path.expandvars(w) for w in argv])  # SystemExit on an unknown flag
        assert args.command == argv[0]
    assert "--output" in commands[1] and "markdown" in commands[1] and "--detailed-exitcode" in commands[1]
    install = next(s for s in steps if s.get("name") == "Install palyra-ops")
    assert '"palyra-ops${PALYRA_OPS_VERSION:+==$PALYRA_OPS_VERSION}"' in install["run"]


def test_ci_workflow_posts_the_plan(tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples" / "personal-assistant" / "routines.d", tmp_path / "routines.d")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("palyra-ops", f'#!/bin/sh\nexec "{sys.executable}" -m palyra_ops "$@"\n'), ("gh", FAKE_GH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    gh_log = tmp_path / "gh.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PALYRA_", "FORCE_COLOR"))}
    env.update({"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO), "GH_LOG": str(gh_log),
                "PALYRA_STATE_ROOT": str(tmp_path / "state")})
    ran, outputs = _run_workflow(tmp_path, env)
    assert ran == ["Validate", "Plan", "Comment on the pull request"] and outputs == {"exitcode": "2"}
    assert gh_log.read_text() == "pr comment 7 --body-file comment.md --edit-last\npr comment 7 --body-file comment.md\n"
    body = Path(f"{gh_log}.body").read_text()
    assert body.startswith("<!-- palyra-ops plan -->\n### palyra-ops plan: ")
    assert "to add, 0 to change, 0 to delete" in body and '| `+` | routine "evening-journal" | create |' in body
    assert body.endswith("<sub>palyra-ops plan exit code: 2 (0 no changes, 2 changes, 1 error)</sub>\n")
    # after an apply the same workflow reports no changes (exit 0), updating its comment
    subprocess.run(["palyra-ops", "apply", "--dir", "routines.d", "--journal", ".palyra/journal.sqlite3",
                    "--auto-approve"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    ran, outputs = _run_workflow(tmp_path, env)
    assert outputs == {"exitcode": "0"}
    assert gh_log.read_text().splitlines()[-1] == "pr comment 7 --body-file comment.md --edit-last"
    assert Path(f"{gh_log}.body").read_text().startswith(
        "<!-- palyra-ops plan -->\n### palyra-ops plan: no changes\n\nThe journal matches the directory.\n")


# -- examples/deploy: the systemd unit -------------------------------------------------------------------

UNIT = REPO / "examples" / "deploy" / "palyra-ops.service"


def _unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as section → key → values (a key may repeat), comments and blank lines left out."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_deploy_unit_is_hardened_type_notify() -> None:
    import shlex

    from palyra_ops.cli import build_parser
    from palyra_ops.config import load_config

    service = _unit(UNIT.read_text())["Service"]
    one = {k: v[-1] for k, v in service.items()}
    assert (one["Type"], one["NotifyAccess"], one["WatchdogSec"], one["Restart"]) == ("notify", "main", "30s", "on-failure")
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectControlGroups", "RestrictNamespaces", "RestrictSUIDSGID",
                "LockPersonality"):
        assert one[key] == "yes", key
    assert (one["ProtectSystem"], one["ReadWritePaths"], one["StateDirectory"]) == ("strict", "/var/lib/palyra-ops", "palyra-ops")
    assert one["Environment"] == "PALYRA_STATE_ROOT=/var/lib/palyra-ops"  # the state dir is the writable one
    assert one["CapabilityBoundingSet"] == "" and one["User"] != "root" and "MemoryDenyWriteExecute" not in one
    argv = shlex.split(one["ExecStart"])
    assert argv[0].endswith("/palyra-ops")
    args = build_parser(full=True).parse_args(argv[1:])  # a real command line of the real CLI
    assert (args.command, str(args.config)) == ("daemon", "/etc/palyra-ops/palyra.yaml")
    config = load_config(REPO / "examples" / "deploy" / "palyra.yaml")  # the daemon's own checks
    assert (config.listen, str(config.dir), config.watch) == ("127.0.0.1:7142", "/srv/palyra-ops/routines.d", True)


def test_deploy_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own parser: an unknown key or a bad value is reported on stderr (its exit code is 0)."""
    exe = tmp_path / "palyra-ops"  # ExecStart must name an existing executable
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m palyra_ops "$@"\n')
    exe.chmod(0o755)
    unit = tmp_path / "palyra-ops.service"
    unit.write_text(UNIT.read_text().replace("/opt/palyra-ops/venv/bin/palyra-ops", str(exe)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    problems = [line for line in done.stderr.splitlines() if line.strip()]
    assert (done.returncode, problems) == (0, [])
