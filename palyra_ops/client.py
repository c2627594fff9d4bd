"""A small synchronous client of the console API, for the CLI.

The CLI talks to a running daemon rather than to the journal because the daemon owns the runtime:
an upsert must wake its scheduler, a dispatch must go through its gateway. Every failure becomes a
`PalyraError` with a message fit for one line on stderr (no httpx traceback for a daemon that is not
running, the server's own message for an HTTP error).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from palyra_ops.answers import answer_error
from palyra_ops.errors import PalyraError
from palyra_ops.statepaths import DISCOVERY_FILE, TOKEN_FILE, default_root

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:7142"
#: the state root `make run` uses, relative to the repository (looked for in the cwd and its parents)
PROJECT_STATE_DIR = ".palyra"

POINT_ELSEWHERE = ("point the CLI at it with --url/PALYRA_URL (and --token/PALYRA_TOKEN) "
                   "or PALYRA_STATE_ROOT=<the daemon's state root>")


class DaemonUnreachable(PalyraError):
    """No daemon answers at the address, or the connection broke (`cron logs --follow` stops on it)."""

    code = "unreachable"


@dataclass(frozen=True)
class Target:
    """Which daemon the CLI talks to, and why (for error messages)."""

    url: str
    state_root: Path
    how: str  # "--url", "PALYRA_URL", "<path>/daemon.json", "the default address"
    looked_in: tuple[Path, ...] = ()


def write_discovery(state_root: Path, url: str, *, journal: Path | str, pid: int | None = None) -> Path:
    """The daemon's address for CLIs in other shells: `<state_root>/daemon.json`, 0600."""
    from palyra_ops.fsmodes import write_private
    from palyra_ops.journal.faults import is_postgres_url, redact

    path = Path(state_root) / DISCOVERY_FILE
    doc = {"url": url, "pid": pid or os.getpid(), "state_root": str(Path(state_root).resolve()),
           "journal": redact(journal) if is_postgres_url(journal) else str(Path(journal).resolve())}
    write_private(path, json.dumps(doc, indent=2) + "\n")
    return path


def remove_discovery(state_root: Path, *, pid: int | None = None) -> None:
    """Remove the discovery file if it is still ours (a newer daemon may have replaced it)."""
    path = Path(state_root) / DISCOVERY_FILE
    doc = read_discovery(path)
    if doc is not None and doc.get("pid") == (pid or os.getpid()):
        with contextlib.suppress(OSError):
            path.unlink()


def read_discovery(path: Path) -> dict[str, Any] | None:
    """A discovery file's content when it is trustworthy and names a live process, else None.

    The CLI sends its bearer token to the URL in this file, so it must be one only we could have
    written (ours, not group/world-writable, in a directory of the same kind).
    """
    from palyra_ops.fsmodes import trusted, trusted_fd

    try:
        if not trusted(path.parent):
            return None
        with open(path, encoding="utf-8") as fh:
            if not trusted_fd(fh.fileno()):
                return None
            doc = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("url"), str) or not isinstance(doc.get("pid"), int):
        return None
    try:
        os.kill(doc["pid"], 0)
    except ProcessLookupError:
        return None  # the daemon died without cleaning up
    except PermissionError:
        pass
    return doc


def candidate_state_roots() -> list[Path]:
    """Where a running daemon is looked for: $PALYRA_STATE_ROOT alone when it is set; otherwise
    `./.palyra` in the current directory and its parents (what `make run` uses), then the default
    state root ($XDG_STATE_HOME/palyra)."""
    if os.environ.get("PALYRA_STATE_ROOT"):
        return [default_root()]
    cwd = Path.cwd()
    out = [d / PROJECT_STATE_DIR for d in (cwd, *cwd.parents)]
    out.append(default_root())
    return list(dict.fromkeys(out))


def resolve_target(url: str | None = None, state_root: Path | None = None) -> Target:
    """`--url`, else `$PALYRA_URL`, else the first running daemon found by `candidate_state_roots`,
    else the default address. The token comes from the same state root as the address."""
    explicit = url or os.environ.get("PALYRA_URL")
    roots = [Path(state_root)] if state_root is not None else candidate_state_roots()
    found: list[tuple[Path, dict[str, Any]]] = []
    for root in roots:
        doc = read_discovery(root / DISCOVERY_FILE)
        if doc is not None:
            found.append((root, doc))
    if explicit:
        clean = explicit.rstrip("/")
        match = next((root for root, doc in found if doc["url"].rstrip("/") == clean), None)
        root = Path(state_root) if state_root is not None else match or default_root()
        return Target(clean, root, "--url" if url else "PALYRA_URL", tuple(roots))
    if found:
        root, doc = found[0]
        return Target(doc["url"].rstrip("/"), root, str(root / DISCOVERY_FILE), tuple(roots))
    root = Path(state_root) if state_root is not None else default_root()
    return Target(DEFAULT_URL, root, "the default address", tuple(roots))


def resolve_url(url: str | None = None) -> str:
    """`--url`, else `$PALYRA_URL`, else a discovered daemon's address, else the default one."""
    return resolve_target(url).url


def _where_looked(target: Target) -> str:
    if target.how in ("--url", "PALYRA_URL"):
        return f"from {target.how}"
    if target.how != "the default address":
        return f"found in {target.how}"
    shown = ", ".join(str(p / DISCOVERY_FILE) for p in target.looked_in[:3])
    more = f" and {len(target.looked_in) - 3} more" if len(target.looked_in) > 3 else ""
    return f"the default address; no running daemon's {DISCOVERY_FILE} in {shown}{more}"


def resolve_token(token: str | None = None, state_root: Path | None = None, *, target: Target | None = None) -> str:
    """`--token`, else `$PALYRA_TOKEN`, else the token file in the state root of the daemon found."""
    if token:
        return token
    if os.environ.get("PALYRA_TOKEN"):
        return os.environ["PALYRA_TOKEN"]
    if state_root is None:
        state_root = (target or resolve_target()).state_root
    path = Path(state_root) / TOKEN_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise PalyraError(
            f"no API token: pass --token, set PALYRA_TOKEN, or start the daemon once to create {path} "
            f"(for a daemon with another state root, set PALYRA_STATE_ROOT)"
        ) from None
    except OSError as exc:
        raise PalyraError(f"cannot read the API token from {path}: {exc.strerror}") from None
    if not text:
        raise PalyraError(f"the token file {path} is empty")
    return text


class ConsoleClient:
    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 state_root: Path | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.target = resolve_target(url, state_root)
        self.url = self.target.url
        self._token = token
        self._state_root = state_root
        self._timeout, self._transport = timeout, transport
        # made at the first request, once there is a token to send: httpx (its import and a client's
        # TLS context, ~0.1 s) is not paid by a command that finds none (`status` with no daemon)
        self._client: httpx.Client | None = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            import httpx

            self._client = httpx.Client(base_url=self.url, timeout=self._timeout, transport=self._transport)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> ConsoleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        token = resolve_token(self._token, self._state_root, target=self.target)
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        client = self._http()
        import httpx  # loaded by `_http`

        try:
            resp = client.request(
                method, path, json=json, params=clean, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.ConnectError:
            raise DaemonUnreachable(
                f"no daemon at {self.url} ({_where_looked(self.target)}): start one with `palyra-ops daemon` "
                f"(or `make run`), or {POINT_ELSEWHERE}"
            ) from None
        except httpx.TimeoutException:
            raise PalyraError(f"the daemon at {self.url} did not answer in time") from None
        except httpx.TransportError as exc:  # the connection broke (a daemon shutting down mid-request)
            raise DaemonUnreachable(f"request to {self.url} failed: {exc}") from None
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
    err = answer_error(resp.status_code, code, "\n".join(lines))
    err.details = details  # type: ignore[attr-defined]
    return err
