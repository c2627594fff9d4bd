"""Tests pass wherever the repository is checked out (issue 9 point 19).

`test_unreadable_file_keeps_last_good` runs a child as `nobody`; with the checkout under a directory
`nobody` cannot traverse (what `mktemp -d` makes: 0700) the child could not read the schema or lazily
imported modules and failed. Here a copy of the checkout lives in such a directory and the test runs
there with the same interpreter.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import REPO

IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".palyra", "*.egg-info")


def test_watcher_unreadable_test_passes_from_a_private_checkout() -> None:
    with tempfile.TemporaryDirectory(prefix="palyra-clone-") as tmp:  # 0700, like mktemp -d
        assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o700
        clone = Path(tmp) / "palyra-ops"
        clone.mkdir()
        for name in ("palyra_ops", "schemas", "tests", "routines.d"):
            shutil.copytree(REPO / name, clone / name, ignore=IGNORE, symlinks=True)
        shutil.copy(REPO / "pyproject.toml", clone / "pyproject.toml")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PALYRA_")}
        env["PYTHONPATH"] = str(clone)
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-x",
             "tests/test_watcher_core.py::test_unreadable_file_keeps_last_good"],
            cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "1 passed" in out.stdout, out.stdout[-4000:]
