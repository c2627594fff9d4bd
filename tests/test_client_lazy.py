"""The CLI's console client makes its HTTP client only when it has a token to send."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from palyra_ops.client import ConsoleClient
from palyra_ops.errors import PalyraError


def test_no_token_no_http_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PALYRA_TOKEN", raising=False)
    with ConsoleClient("http://127.0.0.1:9", None, state_root=tmp_path) as client:
        with pytest.raises(PalyraError, match="no API token"):
            client.get("/console/v1/system/status")
        assert client._client is None  # nothing built, nothing to close


def test_status_without_a_token_never_imports_httpx(tmp_path: Path) -> None:
    """`status` with no daemon to ask (no token) costs what a no-op plan costs: httpx's import and a
    client's TLS context were a fixed ~0.1 s of it (bench/README.md, "GitOps at scale")."""
    (tmp_path / "routines.d").mkdir()
    code = ("import sys; from palyra_ops.cli import main; rc = main(['status', '--dir', sys.argv[1], '--url', "
            "'http://127.0.0.1:9']); print('httpx' in sys.modules); sys.exit(rc)")
    env = {"PALYRA_STATE_ROOT": str(tmp_path / "state"), "NO_COLOR": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "routines.d")], capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "no API token" in out.stdout
