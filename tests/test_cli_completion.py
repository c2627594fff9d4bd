"""Issue 12 (CLI habits): `palyra-ops completion bash|zsh|fish` prints a script that a real shell loads
and that completes command names, subcommands, flags and flag values."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_cli_basics import run_cli

from palyra_ops.cli import COMMANDS

#: drives the bash completion function the way readline does: COMP_WORDS/COMP_CWORD, then COMPREPLY
DRIVER = r"""
source "$1"; shift
fn=$(complete -p palyra-ops | sed -E 's/.* -F ([^ ]+).*/\1/')
COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
"$fn" palyra-ops "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("completion")
    paths = {}
    for shell in ("bash", "zsh", "fish"):
        done = run_cli("completion", shell)
        assert (done.returncode, done.stderr) == (0, ""), shell
        paths[shell] = out / f"palyra-ops.{shell}"
        paths[shell].write_text(done.stdout)
    return paths


def _bash_complete(script: Path, *words: str) -> list[str]:
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", DRIVER, "drive", str(script), "palyra-ops", *words],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_bash_script_is_valid_and_completes_commands(scripts: dict[str, Path]) -> None:
    check = subprocess.run(["bash", "-n", str(scripts["bash"])], capture_output=True, text=True, timeout=60)
    assert (check.returncode, check.stderr) == (0, "")
    assert _bash_complete(scripts["bash"], "") == list(COMMANDS)
    assert _bash_complete(scripts["bash"], "cr") == ["cron"]
    assert _bash_complete(scripts["bash"], "co") == ["completion"]
    assert _bash_complete(scripts["bash"], "cron", "l") == ["list", "logs"]
    assert _bash_complete(scripts["bash"], "skills", "trust", "") == ["add", "remove", "list"]
    assert _bash_complete(scripts["bash"], "plan", "--ou") == ["--output", "--out"]
    assert _bash_complete(scripts["bash"], "plan", "--output", "") == ["text", "json", "markdown"]
    assert _bash_complete(scripts["bash"], "apply", "--output", "") == ["text", "json"]
    assert _bash_complete(scripts["bash"], "completion", "") == ["bash", "zsh", "fish"]


def test_zsh_script_names_every_command(scripts: dict[str, Path]) -> None:
    text = scripts["zsh"].read_text()
    assert text.startswith("#compdef palyra-ops")
    for name in COMMANDS:
        assert f"\n    {name}:'" in text, name
    assert "\n    logs:'" in text and "--detailed-exitcode" in text
    assert "\n    completion:'print a shell completion script (bash, zsh or fish)'\n" in text  # the one-line help
    assert shutil.which("zsh"), "zsh is missing: tools/system-deps.sh installs it"
    check = subprocess.run(["zsh", "-n", str(scripts["zsh"])], capture_output=True, text=True, timeout=60)
    assert (check.returncode, check.stderr) == (0, "")


def test_fish_script_completes_commands(scripts: dict[str, Path]) -> None:
    text = scripts["fish"].read_text()
    for name in COMMANDS:
        assert f"-a '{name}'" in text, name
    assert shutil.which("fish"), "fish is missing: tools/system-deps.sh installs it"
    check = subprocess.run(["fish", "-n", str(scripts["fish"])], capture_output=True, text=True, timeout=60)
    assert (check.returncode, check.stderr) == (0, "")

    def complete(line: str) -> list[str]:
        done = subprocess.run(["fish", "--no-config", "-c", f"source {scripts['fish']}; complete -C '{line}'"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [row.split("\t")[0] for row in done.stdout.splitlines()]

    assert complete("palyra-ops cr") == ["cron"]
    assert complete("palyra-ops cron l") == ["list", "logs"]
    assert complete("palyra-ops cron logs --li") == ["--limit"]
    assert sorted(complete("palyra-ops plan --output ")) == ["json", "markdown", "text"]


def test_unknown_shell_is_a_usage_error() -> None:
    done = run_cli("completion", "powershell")
    assert done.returncode == 2 and "invalid choice: 'powershell'" in done.stderr and "Traceback" not in done.stderr
