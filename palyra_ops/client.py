"""A small synchronous client of the console API, for the CLI.

The CLI talks to a running daemon rather than to the journal because the daemon owns the runtime:
an upsert must wake its scheduler, a dispatch must go through its gateway. Every failure becomes a
`PalyraError` with a message fit for one line on stderr (no httpx traceback for a daemon that is not
running, the server's own message for an HTTP error).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from palyra_ops.errors import PalyraError

DEFAULT_URL = "http://127.0.0.1:7142"
TOKEN_FILE = "token"


def resolve_url(url: str | None = None) -> str:
    """`--url`, else `$PALYRA_URL`, else the daemon's default listen address."""
    return (url or os.environ.get("PALYRA_URL") or DEFAULT_URL).rstrip("/")


def resolve_token(token: str | None = None, state_root: Path | None = None) -> str:
    """`--token`, else `$PALYRA_TOKEN`, else the token file the daemon wrote in the state root."""
    if token:
        return token
    if os.environ.get("PALYRA_TOKEN"):
        return os.environ["PALYRA_TOKEN"]
    if state_root is None:
        from palyra_ops.cli._common import state_root as default_state_root

        state_root = default_state_root()
    path = Path(state_root) / TOKEN_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise PalyraError(
            f"no API token: pass --token, set PALYRA_TOKEN, or start the daemon once to create {path}"
        ) from None
    except OSError as exc:
        raise PalyraError(f"cannot read the API token from {path}: {exc.strerror}") from None
    if not text:
        raise PalyraError(f"the token file {path} is empty")
    return text


class ConsoleClient:
    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 state_root: Path | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.url = resolve_url(url)
        self._token = token
        self._state_root = state_root
        self._client = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ConsoleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        token = resolve_token(self._token, self._state_root)
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self._client.request(
                method, path, json=json, params=clean, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.ConnectError:
            raise PalyraError(f"no daemon at {self.url} (start one with `palyra-ops daemon`)") from None
        except httpx.TimeoutException:
            raise PalyraError(f"the daemon at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise PalyraError(f"request to {self.url} failed: {exc}") from None
        if resp.status_code >= 400:
            raise _error_from(resp)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise PalyraError(f"{self.url}{path}: the daemon answered with non-JSON content") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body if body is not None else {})

    def paginate(self, path: str, *, limit: int = 500, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paginated listing, following `next_cursor`."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.get(path, limit=limit, cursor=cursor, **params)
            items.extend(page.get("items", []))
            cursor = page.get("next_cursor")
            if not cursor:
                return items


def _error_from(resp: httpx.Response) -> PalyraError:
    """The server's own message (and details, for validation errors) as a PalyraError."""
    code, message, details = "error", f"HTTP {resp.status_code}", []
    try:
        body = resp.json()
        error = body.get("error", {}) if isinstance(body, dict) else {}
        code = error.get("code", code)
        message = error.get("message", message)
        details = error.get("details") or []
    except ValueError:
        text = resp.text.strip()
        if text:
            message = f"{message}: {text[:200]}"
    if resp.status_code == 401:
        message = f"{message} (check --token / PALYRA_TOKEN, or `palyra-ops token`)"
    lines = [message]
    for d in details:
        where = d.get("path") or ""
        lines.append(f"  {where}: {d.get('message')}" if where else f"  {d.get('message')}")
    err = PalyraError("\n".join(lines), code=code, status=resp.status_code)
    err.details = details  # type: ignore[attr-defined]
    return err
