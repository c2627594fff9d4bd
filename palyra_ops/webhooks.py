"""Webhook signatures, inbound and outbound (SPEC §6).

Inbound, an integration with a secret is authenticated by its signature alone — GitHub and most
SaaS senders cannot add a bearer token. Two schemes are understood, chosen by the headers a request
carries:

- GitHub style: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>` (also accepted as
  `X-Palyra-Signature`, with or without the `sha256=` prefix). The key is the secret's UTF-8 bytes.
- Standard Webhooks (standardwebhooks.com): `webhook-id`, `webhook-timestamp` (Unix seconds) and
  `webhook-signature` (space-separated `v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}`). The
  secret is `whsec_<base64 key>`, as senders show it. A timestamp more than 5 minutes from the
  daemon's clock is refused, and an id seen before (within that window) is dropped as a replay.

Outbound, a `webhook` Channel with a `signing_secret` signs each delivery the Standard Webhooks way
(`sign_standard`), so receivers can verify it with any Standard Webhooks library.

Everything here works on bytes and the injected clock's milliseconds; a header that is not ASCII, a
malformed signature list or bad base64 is a failed verification (401), never an exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

TOLERANCE_MS = 5 * 60_000
SECRET_PREFIX = "whsec_"
GITHUB_HEADERS = ("x-hub-signature-256", "x-palyra-signature")
STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
MAX_ID_LENGTH = 256
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    scheme: str | None  # "github" | "standard" | None (no signature headers)
    reason: str = ""
    message_id: str | None = None  # Standard Webhooks: the webhook-id


def _ascii(value: str | None) -> bytes | None:
    """Header text as bytes, or None when it is absent or not plain ASCII (a forged or broken header)."""
    if value is None:
        return None
    try:
        return value.strip().encode("ascii")
    except UnicodeEncodeError:
        return None


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (`whsec_` + base64), decoded as the reference
    implementation decodes it so the same secret string means the same key on both ends."""
    text = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(text + "==")
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ValueError("a Standard Webhooks secret must be whsec_ followed by base64")
    return key


def verify_github(secret: str, body: bytes, header: str | None) -> Verdict:
    presented = _ascii(header)
    if not presented:
        return Verdict(False, "github", "missing or non-ASCII signature header")
    if presented[:7].lower() == b"sha256=":
        presented = presented[7:]
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(expected, presented.lower()):
        return Verdict(False, "github", "HMAC-SHA256 signature does not match the body")
    return Verdict(True, "github")


def verify_standard(secret: str, body: bytes, msg_id: str | None, timestamp: str | None,
                    signature: str | None, *, now_ms: int) -> Verdict:
    mid, ts, sig = _ascii(msg_id), _ascii(timestamp), _ascii(signature)
    if not mid or not ts or not sig:
        return Verdict(False, "standard", "webhook-id, webhook-timestamp and webhook-signature are all required "
                                          "(as ASCII)")
    if len(mid) > MAX_ID_LENGTH:
        return Verdict(False, "standard", f"webhook-id is longer than {MAX_ID_LENGTH} characters")
    if not _TIMESTAMP.match(ts.decode()):
        return Verdict(False, "standard", "webhook-timestamp must be Unix seconds")
    if abs(int(ts) * 1000 - now_ms) > TOLERANCE_MS:
        return Verdict(False, "standard", "webhook-timestamp is more than 5 minutes from the daemon's clock")
    try:
        key = standard_key(secret)
    except ValueError as exc:
        return Verdict(False, "standard", str(exc))
    expected = hmac.new(key, mid + b"." + ts + b"." + body, hashlib.sha256).digest()
    for item in sig.split():
        version, _, value = item.partition(b",")
        if version != b"v1" or not value:
            continue  # other versions (v1a: asymmetric) are not ours to check
        try:
            presented = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, presented):
            return Verdict(True, "standard", message_id=mid.decode())
    return Verdict(False, "standard", "no webhook-signature entry matches the body", message_id=None)


def verify(secret: str, body: bytes, headers: Mapping[str, str], *, now_ms: int) -> Verdict:
    """Check whichever scheme the request's headers use; Standard Webhooks wins when both appear.
    `headers` looks names up case-insensitively (Starlette's Headers) or holds them in lower case."""
    get = headers.get
    if any(get(h) is not None for h in STANDARD_HEADERS):
        return verify_standard(secret, body, get("webhook-id"), get("webhook-timestamp"), get("webhook-signature"),
                               now_ms=now_ms)
    for name in GITHUB_HEADERS:
        value = get(name)
        if value is not None:
            return verify_github(secret, body, value)
    return Verdict(False, None, "missing signature: send X-Hub-Signature-256 or the Standard Webhooks headers")


def sign_standard(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one outbound delivery attempt."""
    key = standard_key(secret)
    digest = hmac.new(key, f"{msg_id}.{timestamp_s}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


class ReplayCache:
    """Standard Webhooks ids seen within the tolerance window, per integration.

    An id older than twice the tolerance cannot come back with a valid timestamp, so entries expire
    then and the cache stays bounded by the traffic of ten minutes (and by `max_entries`). It is
    per process: after a restart the id still reaches the runs as their dedupe key, so a replay is
    recorded as a skipped duplicate rather than executed twice.
    """

    def __init__(self, ttl_ms: int = 2 * TOLERANCE_MS, max_entries: int = 100_000) -> None:
        self.ttl_ms = ttl_ms
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = threading.Lock()

    def first_sighting(self, integration: str, msg_id: str, now_ms: int) -> bool:
        """Record the id; False when it was already seen (a replay or a sender's retry)."""
        key = (integration, msg_id)
        with self._lock:
            while self._seen:
                oldest_key, at = next(iter(self._seen.items()))
                if now_ms - at <= self.ttl_ms and len(self._seen) < self.max_entries:
                    break
                del self._seen[oldest_key]
            if key in self._seen:
                return False
            self._seen[key] = now_ms
            return True
