"""Who is looking at the console: server-side sessions and the CSRF tokens of their forms (SPEC §13).

Sign-in exchanges the API token (checked by `server.auth.who_is`, the same check as the bearer
header) for an opaque random session id in an HttpOnly, SameSite=Strict cookie. Sessions live in the
daemon's memory, not in the cookie, because sign-out must really end one (a signed cookie stays valid
until it expires whatever the server does) and a restart signing everyone out is what an operator
expects of a token-guarded admin page. The store keeps only a SHA-256 of each id, so a heap dump
shows no usable cookie.

Each session has its own CSRF token, compared in constant time on every POST. The sign-in form has
no session yet: its token is an HMAC, under a per-process secret, of a random nonce that rides in a
short-lived cookie of its own (the double-submit pattern, signed so that a cookie planted by a
sibling origin cannot be paired with a made-up form value).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from palyra_ops.context import DaemonContext
from palyra_ops.server.auth import CONSOLE, who_is

SESSION_COOKIE = "palyra_ui_session"
LOGIN_COOKIE = "palyra_ui_login"
CSRF_FIELD = "csrf"

#: a session ends after this long without a request, and in any case after MAX_AGE
IDLE_MS = 8 * 3600 * 1000
MAX_AGE_MS = 24 * 3600 * 1000
#: the sign-in nonce's lifetime (the form must be posted within it)
LOGIN_NONCE_S = 3600
#: sessions kept at most; signing in past it ends the least recently used one
MAX_SESSIONS = 1000


@dataclass
class Session:
    csrf: str
    created_ms: int
    seen_ms: int
    #: (kind, text) messages for the next page shown, after a POST redirected to it
    flash: list[tuple[str, str]] = field(default_factory=list)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


class SessionStore:
    """The sessions of one daemon process, and the secret its sign-in forms are signed with."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    # -- sign-in ------------------------------------------------------------------------------------

    @staticmethod
    def token_is_valid(ctx: DaemonContext, presented: str) -> bool:
        """The console's API token, checked exactly as the bearer header is (the internal per-process
        credential of the scheduler's loopback calls does not open the console)."""
        presented = presented.strip()
        return bool(presented) and who_is(f"Bearer {presented}", ctx) == CONSOLE

    def login_nonce(self) -> str:
        return secrets.token_urlsafe(24)

    def login_csrf(self, nonce: str) -> str:
        return hmac.new(self._secret, b"login:" + nonce.encode(), hashlib.sha256).hexdigest()

    def login_csrf_ok(self, nonce: str | None, presented: str | None) -> bool:
        if not nonce or not presented:
            return False
        return hmac.compare_digest(self.login_csrf(nonce), presented)

    # -- sessions -----------------------------------------------------------------------------------

    def create(self, now_ms: int) -> tuple[str, Session]:
        """A new session; its id (the cookie value) is returned once and never stored."""
        sid = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), created_ms=now_ms, seen_ms=now_ms)
        self._sessions[_digest(sid)] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return sid, session

    def get(self, sid: str | None, now_ms: int) -> Session | None:
        """The live session of a cookie value, touched; None (and forgotten) once idle or too old."""
        if not sid:
            return None
        key = _digest(sid)
        session = self._sessions.get(key)
        if session is None:
            return None
        if now_ms - session.seen_ms > IDLE_MS or now_ms - session.created_ms > MAX_AGE_MS:
            del self._sessions[key]
            return None
        session.seen_ms = now_ms
        self._sessions.move_to_end(key)
        return session

    def end(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(_digest(sid), None)

    @staticmethod
    def csrf_ok(session: Session, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(session.csrf, presented or "")

    def __len__(self) -> int:
        return len(self._sessions)
