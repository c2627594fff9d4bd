"""Signed webhooks (SPEC §6): GitHub's X-Hub-Signature-256 and Standard Webhooks, authenticated by the
signature alone; checked against the `standardwebhooks` package as the independent implementation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from palyra_ops import webhooks

standardwebhooks = pytest.importorskip("standardwebhooks")

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
GH_SECRET = "gh-s3cret"
RUN_KEYS = {"run_id", "routine_id", "scheduled_at", "started_at", "finished_at", "attempt", "status", "reason",
            "trigger_kind", "trigger_payload", "dedupe_key", "first_run_id", "policy_rule", "delivery_status",
            "delivery_error", "skipped_count", "skipped_times", "created_at", "output"}


def _doc(name: str, integration: str, event: str | None = None) -> dict[str, Any]:
    hook: dict[str, Any] = {"integration": integration}
    if event:
        hook["event"] = event
    return {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": name},
            "spec": {"prompt": name, "trigger": {"kind": "webhook", "webhook": hook}}}


def std_headers(body: bytes, msg_id: str, ts: float | None = None, secret: str = SECRET) -> dict[str, str]:
    """Signed by the reference implementation, not ours."""
    when = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    sig = standardwebhooks.Webhook(secret).sign(msg_id, when, body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())), "webhook-signature": sig,
            "content-type": "application/json"}


def gh_headers(body: bytes, secret: str = GH_SECRET, event: str = "push") -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
            "X-GitHub-Event": event, "content-type": "application/json"}


@pytest.fixture
def hooked(daemon_factory) -> Any:
    d = daemon_factory(config={"integrations": {"svix": {"secret": {"env": "WH_STD"}},
                                                "github": {"secret": {"env": "WH_GH"}},
                                                "unset": {"secret": {"env": "WH_NOT_SET"}},
                                                "plain": {}}},
                       env={"WH_STD": SECRET, "WH_GH": GH_SECRET})
    d.write("w.yaml", [_doc("on-invoice", "svix", "invoice.paid"), _doc("on-push", "github", "push"),
                       _doc("on-plain", "plain"), _doc("on-adhoc", "adhoc")])
    d.apply()
    return d


def post(d: Any, integration: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """Without the bearer token: what GitHub or a Standard Webhooks sender can send."""
    return httpx.post(f"{d.base_url}/webhooks/{integration}", content=body, headers=headers, timeout=10)


def test_standard_webhooks_signature_alone_runs_the_routine_and_a_repeat_is_dropped(hooked) -> None:
    body = json.dumps({"type": "invoice.paid", "data": {"id": "in_1"}}).encode()
    h = std_headers(body, "msg_1")
    r = post(hooked, "svix", body, h)
    assert r.status_code == 202, r.text
    out = r.json()
    assert (out["integration"], out["event"], out["duplicate"]) == ("svix", "invoice.paid", False)
    [run] = out["runs"]
    assert set(run) == RUN_KEYS and run["routine_id"] == "on-invoice" and run["trigger_kind"] == "webhook"
    assert run["scheduled_at"] is None and run["dedupe_key"] == "msg_1"
    assert run["trigger_payload"] == {"integration": "svix", "event": "invoice.paid",
                                      "body": {"type": "invoice.paid", "data": {"id": "in_1"}}}
    again = post(hooked, "svix", body, h)  # the sender's retry of the same message
    assert again.status_code == 200
    assert again.json() == {"integration": "svix", "event": "invoice.paid", "duplicate": True, "runs": []}
    fresh = post(hooked, "svix", body, std_headers(body, "msg_2"))
    assert fresh.status_code == 202 and len(fresh.json()["runs"]) == 1
    hooked.wait_for(lambda: len([x for x in hooked.runs("on-invoice") if x["status"] == "succeeded"]) == 2,
                    what="two webhook runs")
    assert [x["dedupe_key"] for x in hooked.runs("on-invoice")] == ["msg_1", "msg_2"]


def test_standard_webhooks_refusals(hooked) -> None:
    body = b'{"type":"invoice.paid"}'
    old = std_headers(body, "msg_old", ts=time.time() - 6 * 60)
    future = std_headers(body, "msg_future", ts=time.time() + 6 * 60)
    wrong_key = std_headers(body, "msg_wk", secret="whsec_" + base64.b64encode(b"another key of 32 bytes!!!!!!!!!").decode())
    tampered = {**std_headers(body, "msg_t"), "webhook-id": "msg_other"}
    missing = {k: v for k, v in std_headers(body, "msg_m").items() if k != "webhook-timestamp"}
    garbage = {**std_headers(body, "msg_g"), "webhook-signature": "v1 ,,, v1,%%%notbase64 v2,abc"}
    for name, headers in (("old", old), ("future", future), ("wrong key", wrong_key), ("tampered id", tampered),
                          ("missing timestamp", missing), ("garbage", garbage), ("none", {})):
        r = post(hooked, "svix", body, headers)
        assert r.status_code == 401, (name, r.text)
        assert r.json()["error"]["code"] == "bad_signature", name
    assert "5 minutes" in post(hooked, "svix", body, old).json()["error"]["message"]
    non_ascii = {**std_headers(body, "msg_n"), "webhook-signature": "v1,\xe9\xe9".encode("latin-1")}
    assert post(hooked, "svix", body, non_ascii).status_code == 401  # type: ignore[arg-type]
    # a message that first failed is not remembered: the genuine one with that id still runs
    assert post(hooked, "svix", body, std_headers(body, "msg_t")).status_code == 202
    assert [x["dedupe_key"] for x in hooked.runs("on-invoice")] == ["msg_t"]


def test_github_signature_alone_and_non_ascii_signature_is_401(hooked) -> None:
    body = b'{"ref":"main"}'
    r = post(hooked, "github", body, gh_headers(body))
    assert r.status_code == 202 and [x["routine_id"] for x in r.json()["runs"]] == ["on-push"]
    bad = post(hooked, "github", body, gh_headers(body, secret="wrong"))
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "bad_signature"
    for value in ("sha256=\xe9" + "0" * 63, "\xff" * 10):  # was a TypeError → 500
        r = post(hooked, "github", body, {"X-Hub-Signature-256": value.encode("latin-1")})  # type: ignore[dict-item]
        assert r.status_code == 401 and r.json()["error"]["code"] == "bad_signature", r.text
    # a bearer token is no substitute for the signature of an integration with a secret
    r = hooked.client().post("/webhooks/github", content=body, headers={"X-GitHub-Event": "push"})
    assert r.status_code == 401 and "missing signature" in r.json()["error"]["message"]
    assert len(hooked.runs("on-push")) == 1


def test_integrations_without_a_secret_need_the_token_and_unknown_ones_are_404(hooked) -> None:
    body = b'{"x":1}'
    r = post(hooked, "plain", body, {"content-type": "application/json"})
    assert r.status_code == 401 and r.json() == {"error": {"code": "unauthorized", "message": "missing bearer token"}}
    assert r.headers["www-authenticate"] == 'Bearer realm="palyra"'
    c = hooked.client()
    ok = c.post("/webhooks/plain", content=body)
    assert ok.status_code == 202 and [x["routine_id"] for x in ok.json()["runs"]] == ["on-plain"]
    adhoc = c.post("/webhooks/adhoc", content=body)  # not configured, but a routine listens to it
    assert adhoc.status_code == 202 and [x["routine_id"] for x in adhoc.json()["runs"]] == ["on-adhoc"]
    unknown = c.post("/webhooks/nobody", content=body)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert post(hooked, "nobody", body, {}).status_code == 401  # no token: nothing said about what exists
    unset = post(hooked, "unset", body, gh_headers(body))
    assert unset.status_code == 503 and "WH_NOT_SET" in unset.json()["error"]["message"]


def test_a_replayed_id_after_a_restart_is_recorded_as_a_duplicate_not_run_twice(hooked) -> None:
    body = b'{"type":"invoice.paid"}'
    h = std_headers(body, "msg_restart")
    assert post(hooked, "svix", body, h).status_code == 202
    hooked.restart()
    r = post(hooked, "svix", body, h)
    assert r.status_code == 202 and r.json()["runs"][0]["status"] == "skipped"
    assert r.json()["runs"][0]["reason"].startswith("duplicate: dedupe key 'msg_restart'")


# -- the scheme itself, against the reference implementation, on an injected clock -----------------


def test_verify_standard_matches_the_reference_and_uses_the_given_clock() -> None:
    body = "{\"é\": 1}".encode()
    now_s = 1_800_000_000
    sig = standardwebhooks.Webhook(SECRET).sign("id-1", datetime.fromtimestamp(now_s, tz=UTC), body.decode())
    args = (SECRET, body, "id-1", str(now_s), f"v1,bogus {sig}")
    assert webhooks.verify_standard(*args, now_ms=now_s * 1000).ok
    assert webhooks.verify_standard(*args, now_ms=(now_s + 300) * 1000).ok  # exactly 5 minutes: still in
    assert not webhooks.verify_standard(*args, now_ms=(now_s + 301) * 1000).ok
    assert not webhooks.verify_standard(*args, now_ms=(now_s - 301) * 1000).ok
    assert not webhooks.verify_standard(SECRET, body + b" ", "id-1", str(now_s), sig, now_ms=now_s * 1000).ok


def test_sign_standard_is_accepted_by_the_reference_verifier() -> None:
    body = b'{"run_id":"01ABC","output":"ok \xc3\xa9"}'
    headers = webhooks.sign_standard(SECRET, "01ABC", int(time.time()), body)
    assert standardwebhooks.Webhook(SECRET).verify(body, headers) == json.loads(body)
    headers["webhook-id"] = "01ABD"
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(body, headers)


def test_replay_cache_forgets_after_the_window() -> None:
    cache = webhooks.ReplayCache(ttl_ms=1000)
    assert cache.first_sighting("a", "1", 0) and not cache.first_sighting("a", "1", 500)
    assert cache.first_sighting("b", "1", 500)  # per integration
    assert cache.first_sighting("a", "1", 1501)
