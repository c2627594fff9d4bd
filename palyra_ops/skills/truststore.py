"""The trust store: which publishers' keys this daemon accepts skill signatures from.

Stored as JSON at `<state_root>/skills/trust.json`:

    {"version": 1, "publishers": {"acme": {"keys": ["ed25519:<base64>"], "added_at": "<rfc3339>"}}}

It is deliberately separate from the installed-skills index: removing a publisher's key here is how
an operator revokes it, and the next re-audit quarantines every skill that key had signed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from palyra_ops.clock import Clock, SystemClock, rfc3339
from palyra_ops.errors import NotFound, PalyraError
from palyra_ops.fsmodes import write_private
from palyra_ops.skills.manifest import PUBLISHER_PATTERN
from palyra_ops.skills.package import decode_public_key, encode_public_key, key_fingerprint

TRUST_FILE = "trust.json"


def atomic_write_json(path: Path, doc: Any) -> None:
    """Write-then-rename so a crash never leaves a half-written file that would lock operators out."""
    write_private(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def read_json_doc(path: Path, key: str, what: str, shape: str = "") -> dict[str, Any]:
    """One of our JSON documents, `{"version": 1, key: {...}}`: a missing file is an empty one (nothing
    installed or trusted yet), an unreadable or malformed one an error naming `what` it is."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"version": 1, key: {}}
    except (OSError, ValueError) as exc:
        raise PalyraError(f"{path}: unreadable {what} ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(key), dict):
        raise PalyraError(f"{path}: malformed {what}{shape}")
    return doc


class TrustStore:
    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock or SystemClock()

    def _load(self) -> dict[str, Any]:
        return read_json_doc(self.path, "publishers", "trust store", " (expected {'publishers': {...}})")

    def keys_for(self, publisher: str) -> list[str] | None:
        """Trusted keys of `publisher`, or None when the publisher is unknown."""
        entry = self._load()["publishers"].get(publisher)
        if entry is None:
            return None
        return [str(k) for k in entry.get("keys", [])]

    def publishers(self) -> dict[str, list[str]]:
        return {p: [str(k) for k in e.get("keys", [])] for p, e in sorted(self._load()["publishers"].items())}

    def add(self, publisher: str, public_key: str) -> str:
        """Trust `public_key` for `publisher`; returns the key's normalised form."""
        if not PUBLISHER_PATTERN.match(publisher):
            raise PalyraError(f"{publisher!r} is not a valid publisher name")
        key = encode_public_key(decode_public_key(public_key))
        doc = self._load()
        entry = doc["publishers"].setdefault(publisher, {"keys": [], "added_at": rfc3339(self.clock.now_ms())})
        if key not in entry["keys"]:
            entry["keys"].append(key)
        atomic_write_json(self.path, doc)
        return key

    def remove(self, publisher: str, public_key: str | None = None) -> None:
        """Revoke one key of a publisher, or the whole publisher when no key is given."""
        doc = self._load()
        if publisher not in doc["publishers"]:
            raise NotFound(f"publisher {publisher!r} is not in the trust store")
        if public_key is None:
            del doc["publishers"][publisher]
        else:
            key = encode_public_key(decode_public_key(public_key))
            keys = doc["publishers"][publisher]["keys"]
            if key not in keys:
                raise NotFound(f"key {key_fingerprint(key)} is not trusted for publisher {publisher!r}")
            keys.remove(key)
            if not keys:
                del doc["publishers"][publisher]
        atomic_write_json(self.path, doc)
