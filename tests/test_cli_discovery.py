"""The CLI finds the daemon `make run` started (issue 9 point 15).

`make run` keeps its state in `./.palyra` (PALYRA_STATE_ROOT=.palyra); a `palyra-ops cron status` in
another shell of the same checkout, with no PALYRA_* set, must reach that daemon: the daemon writes
`<state root>/daemon.json` (its address, pid), and the CLI looks in $PALYRA_STATE_ROOT, else
`./.palyra` of the cwd and its parents, then the default state root. The real Makefile runs here, in a
copy of the repository's sample, with the test's interpreter and a free port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import REPO, free_port

BIN = Path(sys.executable).parent


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PALYRA_", "XDG_"))}
    env.update({"HOME": str(home), "NO_COLOR": "1", "PYTHONPATH": str(REPO)}, **extra)
    return env


def cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "palyra_ops", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


class MakeRun:
    """`make run` in a copy of the repo's Makefile + routines.d, stopped with SIGTERM at the end."""

    def __init__(self, tmp: Path) -> None:
        self.repo = tmp / "checkout"
        self.repo.mkdir()
        shutil.copy(REPO / "Makefile", self.repo / "Makefile")
        shutil.copy(REPO / "pyproject.toml", self.repo / "pyproject.toml")
        shutil.copytree(REPO / "routines.d", self.repo / "routines.d")
        (self.repo / "schemas").symlink_to(REPO / "schemas")
        stamp = tmp / "installed"  # newer than pyproject.toml: make skips the install step
        stamp.touch()
        self.home = tmp / "home"
        self.home.mkdir()
        self.env = clean_env(self.home)
        self.port = free_port()
        self.log = tmp / "make-run.log"
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(
                ["make", "--no-print-directory", "run", f"BIN={BIN}", f"STAMP={stamp}", f"LISTEN=127.0.0.1:{self.port}"],
                cwd=self.repo, env=self.env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200 and \
                        (self.repo / ".palyra" / "daemon.json").exists():
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "make run did not bring the daemon up:\n" + self.log.read_text()
            time.sleep(0.1)

        self.daemon_pid = json.loads((self.repo / ".palyra" / "daemon.json").read_text())["pid"]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal make and the daemon (one process group), and wait for the daemon itself to exit."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(self.daemon_pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError("the daemon did not stop")


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[MakeRun]:
    run = MakeRun(tmp_path)
    yield run
    run.stop()


def test_cron_status_finds_the_daemon_make_run_started(make_run: MakeRun) -> None:
    doc = json.loads((make_run.repo / ".palyra" / "daemon.json").read_text())
    assert doc["url"] == make_run.url and doc["state_root"] == str((make_run.repo / ".palyra").resolve())
    for cwd in (make_run.repo, make_run.repo / "routines.d"):  # the checkout, or a directory inside it
        out = cli(cwd, make_run.env, "cron", "status")
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0].split() == ["NAME", "SCHEDULE", "TIMEZONE", "STATE", "NEXT", "RUN", "(LOCAL)",
                                                       "NEXT", "RUN", "(UTC)", "LAST", "STATUS"]
        assert {line.split()[0] for line in out.stdout.splitlines()[1:]} == {"heartbeat", "morning-summary"}
    # status also reports the live daemon found the same way
    out = cli(make_run.repo, make_run.env, "status", "--dir", "routines.d", "--journal", ".palyra/journal.sqlite3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("State: Synced")
    assert f"Daemon: up at {make_run.url}" in out.stdout


def test_discovery_file_is_removed_on_stop_and_ignored_when_stale(make_run: MakeRun, tmp_path: Path) -> None:
    disc = make_run.repo / ".palyra" / "daemon.json"
    stale = disc.read_text()
    make_run.stop()
    assert not disc.exists()  # a clean stop removes it
    # a daemon killed -9 leaves its file behind: a dead pid is not a daemon
    disc.write_text(stale)
    os.chmod(disc, 0o600)
    out = cli(make_run.repo, make_run.env, "cron", "status")
    assert out.returncode == 1
    assert out.stderr.startswith("palyra-ops: no API token: ") or "no daemon at http://127.0.0.1:7142 (the default address" in out.stderr


def test_untrusted_discovery_file_is_not_followed(tmp_path: Path) -> None:
    """The CLI sends its token to the address in daemon.json: a file others can write is ignored."""
    repo, home = tmp_path / "repo", tmp_path / "home"
    state = repo / ".palyra"
    state.mkdir(parents=True, mode=0o700)
    home.mkdir()
    (state / "token").write_text("t0k\n")
    disc = state / "daemon.json"
    disc.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": os.getpid()}))
    os.chmod(disc, 0o666)
    out = cli(repo, clean_env(home), "cron", "status")
    assert out.returncode == 1
    assert "http://127.0.0.1:9" not in out.stderr
    os.chmod(disc, 0o600)
    out = cli(repo, clean_env(home), "cron", "status")
    assert out.returncode == 1
    assert out.stderr.startswith(f"palyra-ops: no daemon at http://127.0.0.1:9 (found in {disc}): ")


def test_no_daemon_error_says_where_it_looked_and_how_to_point_elsewhere(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".local" / "state" / "palyra").mkdir(parents=True)
    (home / ".local" / "state" / "palyra" / "token").write_text("t0k\n")
    port = free_port()
    out = cli(tmp_path, clean_env(home, PALYRA_URL=f"http://127.0.0.1:{port}"), "cron", "status")
    assert out.returncode == 1
    assert out.stderr == (f"palyra-ops: no daemon at http://127.0.0.1:{port} (from PALYRA_URL): start one with "
                          "`palyra-ops daemon` (or `make run`), or point the CLI at it with --url/PALYRA_URL (and "
                          "--token/PALYRA_TOKEN) or PALYRA_STATE_ROOT=<the daemon's state root>\n")
    out = cli(tmp_path, clean_env(home), "cron", "status")
    assert out.returncode == 1
    if "no daemon at" in out.stderr:  # nothing else on this machine listens on the default port
        assert f"(the default address; no running daemon's daemon.json in {tmp_path / '.palyra' / 'daemon.json'}" in out.stderr
        assert "PALYRA_STATE_ROOT=<the daemon's state root>" in out.stderr


def test_token_is_the_discovered_daemons(make_run: MakeRun) -> None:
    out = cli(make_run.repo, make_run.env, "token")
    assert (out.returncode, out.stdout) == (0, (make_run.repo / ".palyra" / "token").read_text())
