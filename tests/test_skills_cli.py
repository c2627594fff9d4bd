"""`palyra-ops skills ...` end to end through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from skills.kit import build

from palyra_ops.cli import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PALYRA_STATE_ROOT", str(tmp_path / "state"))
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_publisher_and_operator_flow(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = env / "keys" / "acme.pem"
    code, pub, _ = cli(capsys, "skills", "keygen", str(key))
    assert code == 0 and pub.startswith("ed25519:")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    pkg = build("echo", env / "src")
    code, out, _ = cli(capsys, "skills", "sign", str(pkg), "--key", str(key), "--archive", str(env / "echo.tar.gz"))
    assert code == 0 and out.startswith("signed 2 files as acme with SHA256:")

    code, _, err = cli(capsys, "skills", "install", str(env / "echo.tar.gz"))
    assert (code, err) == (1, "palyra-ops: unknown publisher 'acme': not in the trust store\n")

    assert cli(capsys, "skills", "trust", "add", "acme", pub.strip())[0] == 0
    code, out, _ = cli(capsys, "skills", "install", str(env / "echo.tar.gz"), "-o", "json")
    installed = json.loads(out)
    assert (code, installed["id"], installed["status"], installed["capabilities"]) == (0, "echo", "active", [])

    code, out, _ = cli(capsys, "skills", "run", "echo", "--input", '{"a": 1}', "--prompt", "hi")
    assert code == 0
    assert json.loads(out) == {"echo": {"prompt": "hi", "trigger": {"kind": "manual"}, "input": {"a": 1}}}

    assert cli(capsys, "skills", "quarantine", "echo", "--reason", "suspicious")[1] == "echo: quarantined\n"
    code, _, err = cli(capsys, "skills", "run", "echo")
    assert (code, err) == (1, "palyra-ops: denied: skill 'echo' is quarantined: suspicious\n")
    code, out, _ = cli(capsys, "skills", "list")
    assert code == 0 and "echo: quarantined: suspicious" in out
    assert cli(capsys, "skills", "release", "echo")[0] == 0

    code, out, _ = cli(capsys, "skills", "audit")
    assert (code, out) == (0, "echo: ok\n")
    assert cli(capsys, "skills", "trust", "remove", "acme")[0] == 0
    code, out, _ = cli(capsys, "skills", "audit")
    assert (code, out) == (1, "echo: FAILED (quarantined): unknown publisher 'acme': not in the trust store\n")
    code, out, _ = cli(capsys, "skills", "list", "-o", "json")
    assert json.loads(out)["skills"][0]["status"] == "quarantined"

    assert cli(capsys, "skills", "remove", "echo")[0] == 0
    assert cli(capsys, "skills", "list")[1] == "no skills installed\n"
    code, _, err = cli(capsys, "skills", "remove", "echo")
    assert (code, err) == (1, "palyra-ops: skill 'echo' is not installed\n")


def test_keygen_refuses_to_overwrite(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = env / "k.pem"
    assert cli(capsys, "skills", "keygen", str(key))[0] == 0
    code, _, err = cli(capsys, "skills", "keygen", str(key))
    assert (code, err) == (1, f"palyra-ops: {key}: already exists; refusing to overwrite a key\n")
