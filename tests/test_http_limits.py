"""Request body limits and hostile JSON on the real daemon (SPEC §6): 413 before the body is read,
400 (never 500) for malformed, non-standard or too deeply nested JSON — on every route that reads a
body, the gateway fast path and signed webhooks included."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from typing import Any

import httpx
import pytest

from palyra_ops.config import build_config
from palyra_ops.errors import PalyraError
from palyra_ops.server.body import MAX_JSON_DEPTH, json_depth_exceeds, parse_json

MIB = 1 << 20
BODY_ROUTES = ("/gateway/v1/messages", "/console/v1/routines/upsert", "/console/v1/routines/dispatch",
               "/console/v1/routines/schedule-preview", "/console/v1/memory/items", "/console/v1/events/deploy",
               "/webhooks/plain", "/webhooks/github")
TOO_LARGE = {"error": {"code": "too_large", "message": f"request body is larger than the limit of {MIB} bytes "
                                                       "(max_body_bytes in the daemon config)"}}


def _doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "palyra/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def _padded(size: int, prefix: bytes = b'{"principal":"user:a","text":"', suffix: bytes = b'"}') -> bytes:
    body = prefix + b"a" * (size - len(prefix) - len(suffix)) + suffix
    assert len(body) == size
    return body


@pytest.fixture
def limited(daemon_factory) -> Any:
    d = daemon_factory(config={"integrations": {"github": {"secret": {"env": "LIM_SECRET"}}, "plain": {}}},
                       env={"LIM_SECRET": "s3cret"})
    d.write("r.yaml", [
        _doc("Routine", "on-deploy", {"prompt": "deployed", "trigger": {"kind": "hook", "event": "deploy"}}),
        _doc("Routine", "on-push", {"prompt": "push", "trigger": {"kind": "webhook",
                                                                  "webhook": {"integration": "github"}}}),
    ])
    d.apply()
    return d


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(limited) -> None:
    # headers only: a server that read the body first would wait for 100 MB that never come
    for path, auth in (("/gateway/v1/messages", True), ("/console/v1/routines/upsert", True),
                       ("/webhooks/github", False), ("/console/v1/events/deploy", True)):
        with socket.create_connection(("127.0.0.1", limited.paths.port), timeout=10) as s:
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n"
            if auth:
                head += f"Authorization: Bearer {limited.token}\r\n"
            s.sendall((head + "\r\n").encode())
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        status_line, _, rest = reply.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 413"), (path, reply[:200])
        assert json.loads(rest.partition(b"\r\n\r\n")[2]) == TOO_LARGE


def test_one_byte_over_the_limit_is_413_and_one_under_is_served(limited) -> None:
    c = limited.client(timeout=30)
    for path in BODY_ROUTES:
        r = c.post(path, content=_padded(MIB + 1), headers={"content-type": "application/json"})
        assert (r.status_code, r.json()) == (413, TOO_LARGE), path
    ok = c.post("/gateway/v1/messages", content=_padded(MIB - 1), headers={"content-type": "application/json"})
    assert ok.status_code == 200 and len(ok.json()["output"]) > MIB - 64
    # an event payload just under the limit runs its hook routine: the daemon's own loopback message
    # around it (larger than 1 MiB) is not refused by the same limit
    event = _padded(MIB - 1, b'{"blob":"', b'"}')
    r = c.post("/console/v1/events/deploy", content=event, headers={"content-type": "application/json"})
    assert r.status_code == 202 and [x["routine_id"] for x in r.json()["runs"]] == ["on-deploy"]
    assert r.json()["runs"][0]["status"] in ("running", "succeeded")
    limited.wait_for(lambda: [x for x in limited.runs("on-deploy") if x["status"] == "succeeded"], what="hook run")


def test_a_chunked_body_is_cut_off_at_the_limit(limited) -> None:
    sent = []

    def chunks():
        for _ in range(100):  # 6.4 MB offered, in 64 KiB pieces
            sent.append(1)
            yield b"a" * 65536

    c = limited.client(timeout=30)
    r = c.post("/gateway/v1/messages", content=chunks(), headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == (413, TOO_LARGE)
    small = c.post("/gateway/v1/messages", content=iter([b'{"principal":"user:a",', b'"text":"hi"}']))
    assert small.status_code == 200 and small.json()["output"] == "hi [trigger=message]"


def test_a_large_unsigned_webhook_is_413_without_a_token_or_signature(limited) -> None:
    r = httpx.post(limited.base_url + "/webhooks/github", content=_padded(MIB + 1), timeout=30)
    assert (r.status_code, r.json()) == (413, TOO_LARGE)
    body = b'{"a":1}'
    sig = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    r = httpx.post(limited.base_url + "/webhooks/github", content=body, headers={"X-Hub-Signature-256": sig}, timeout=30)
    assert r.status_code == 202  # the same route without a token: the signature is the credential
    assert [x["routine_id"] for x in r.json()["runs"]] == ["on-push"]


def test_the_limit_is_configurable_by_config_and_flag(daemon_factory) -> None:
    d = daemon_factory(config={"max_body_bytes": 4096})
    c = d.client()
    assert c.post("/gateway/v1/messages", content=_padded(4096)).status_code == 200
    r = c.post("/gateway/v1/messages", content=_padded(4097))
    assert r.status_code == 413 and "limit of 4096 bytes" in r.json()["error"]["message"]
    f = daemon_factory(extra_args=["--max-body-bytes", "2048"])
    assert f.client().post("/gateway/v1/messages", content=_padded(2049)).status_code == 413
    assert f.client().post("/gateway/v1/messages", content=_padded(2048)).status_code == 200


@pytest.mark.parametrize("value", [0, 100, -1, "1MiB", True, 2 << 30])
def test_a_bad_limit_is_a_clear_config_error(value: Any) -> None:
    with pytest.raises(PalyraError, match="max_body_bytes: expected an integer between 1024 and 1073741824"):
        build_config({"max_body_bytes": value})


def test_deep_and_non_standard_json_is_400_everywhere(limited) -> None:
    c = limited.client()
    cases = {
        "recursion": b"[" * 200_000 + b"]" * 200_000,  # deeper than Python's recursion limit
        "depth": b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1),  # parses, too deep to use
        "nan": b'{"principal":"user:a","text":"x","context":NaN}',
        "broken": b'{"principal":',
        "latin1": b'{"text":"\xe9"}',
    }
    for name, raw in cases.items():
        for path in BODY_ROUTES:
            headers = {"content-type": "application/json"}
            if path == "/webhooks/github":
                headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
            r = c.post(path, content=raw, headers=headers)
            assert r.status_code == 400, (name, path, r.status_code, r.text[:200])
            assert r.json()["error"]["code"] == "bad_request", (name, path)
            if name in ("recursion", "depth"):
                assert "nested too deeply (at most 64 levels)" in r.json()["error"]["message"], (name, path)
    assert "Traceback" not in limited.log()


def test_parse_json_depth_rule() -> None:
    ok = json.loads('{"a":' * MAX_JSON_DEPTH + "1" + "}" * MAX_JSON_DEPTH)
    assert not json_depth_exceeds(ok, MAX_JSON_DEPTH) and json_depth_exceeds({"x": ok}, MAX_JSON_DEPTH)
    assert parse_json(b'[[1], {"a": []}]') == [[1], {"a": []}]
    assert parse_json(b'"a"') == "a"
