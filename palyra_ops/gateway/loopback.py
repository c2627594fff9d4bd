"""The scheduler's loopback call: pooled keep-alive HTTP to the daemon's own gateway.

Every run enters through `POST /gateway/v1/messages`, so this client is on the hot path and on the
correctness path at once: it must be cheap (prebuilt requests straight to the transports) and it must
not lose a run to the transport (retry what the gateway may not have received; the gateway is
idempotent by run id). Answers are turned back into the domain errors the gateway raised.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from palyra_ops import errors
from palyra_ops.answers import answer_error

#: transport failures after which the gateway may not have received the whole request. Retrying
#: them is safe because the gateway is idempotent by run id (a repeat gets the first receipt).
#: Timeouts are not among them: a call that timed out was received and is slow, not lost.
RETRYABLE_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.NetworkError, httpx.RemoteProtocolError,
                                                           httpx.ConnectTimeout)
#: waits before the 2nd, 3rd and 4th try: the first retry goes out at once on a fresh connection
#: (the usual case is one pooled connection the server was closing), the others ride out a blip
RETRY_DELAYS_S = (0.0, 0.05, 0.25)
#: the server's keep-alive idle timeout (uvicorn's default is 5 s)
SERVER_KEEP_ALIVE_S = 20.0


def loopback_keepalive_s(server_keep_alive_s: float) -> float:
    """How long the loopback client reuses an idle pooled connection: clearly below the server's
    keep-alive (a quarter of it, at most 5 s). With both at 5 s (httpx's and uvicorn's defaults) a
    connection the server was closing got reused, and the call died with `httpx.ReadError`."""
    return max(0.0, min(5.0, server_keep_alive_s / 4))


def describe_error(exc: BaseException) -> str:
    """`Type: message` for any failure, never empty: httpx's ReadError often has an empty message,
    which made run reasons read `dispatch_failed: ` with nothing after it."""
    if isinstance(exc, errors.PalyraError):
        return exc.message
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = str(cur).strip()
        if text:
            return f"{type(exc).__name__}: {text}"
        cur = cur.__cause__ or cur.__context__
    return f"{type(exc).__name__} (the transport gave no detail)"


class Loopback:
    """Pooled keep-alive connections to the daemon's own gateway.

    A few small pools beat one shared client: httpx's pool gets slower as concurrency on one pool
    grows. Calls go straight to each pool's transport with a prebuilt request: the client layers
    (URL merging, auth and redirect handling, cookies) cost ~40% of a loopback call and do nothing here.

    No run may be lost to the transport: pooled connections are retired well before the server's
    keep-alive closes them (`loopback_keepalive_s`), and a call that fails in a way that means the
    gateway may not have it (connection reset or closed, refused) is sent again, up to
    `len(RETRY_DELAYS_S)` more times. The gateway answers a repeat of a message it already has with
    that run's receipt, so a retry never executes a run twice.
    """

    def __init__(self, base_url: str, internal_token: str, *, clients: int = 4, timeout_s: float = 30.0,
                 keepalive_expiry_s: float | None = None) -> None:
        self.url = httpx.URL(base_url.rstrip("/") + "/gateway/v1/messages")
        self.headers = {"Authorization": f"Bearer {internal_token}", "Content-Type": "application/json"}
        self.extensions = {"timeout": {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}}
        expiry = loopback_keepalive_s(SERVER_KEEP_ALIVE_S) if keepalive_expiry_s is None else keepalive_expiry_s
        self.keepalive_expiry_s = expiry
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32, keepalive_expiry=expiry)
        self.transports = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(max(1, clients))]
        self._rr = itertools.cycle(self.transports)
        #: calls sent again after a transport failure, and calls that failed every try
        self.retries = 0
        self.failures = 0

    async def post(self, message: Mapping[str, object], *, traceparent: str | None = None) -> dict[str, Any]:
        headers = self.headers if traceparent is None else {**self.headers, "traceparent": traceparent}
        status, raw = await self._call(json.dumps(message).encode(), headers)
        return self._answer(status, raw)

    async def post_batch(self, messages: Sequence[Mapping[str, object]]) -> list[dict[str, Any] | errors.PalyraError]:
        """Many messages in one call (the batch body); per message its receipt or the domain error
        the gateway answered for it. A call refused as a whole, or lost to the transport, raises."""
        status, raw = await self._call(json.dumps({"messages": messages}).encode(), self.headers)
        body = self._answer(status, raw)
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list) or len(results) != len(messages):
            raise errors.DispatchFailed("loopback batch call: the gateway's answer does not list every message")
        out: list[dict[str, Any] | errors.PalyraError] = []
        for item in results:
            st = item.get("status") if isinstance(item, dict) else None
            if isinstance(st, int) and st < 400 and isinstance(item.get("result"), dict):
                out.append(item["result"])
                continue
            err = item.get("error", {}) if isinstance(item, dict) and isinstance(item.get("error"), dict) else {}
            code = err.get("code") if isinstance(err.get("code"), str) else None
            message = err.get("message") if isinstance(err.get("message"), str) else None
            out.append(answer_error(st if isinstance(st, int) else 500, code, message or f"gateway answered HTTP {st}"))
        return out

    async def _call(self, content: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """One POST, sent again on the transport failures that may have lost it (see the class)."""
        last: Exception | None = None
        for delay in (None, *RETRY_DELAYS_S):
            if delay is not None:
                self.retries += 1
                if delay:
                    await asyncio.sleep(delay)
            req = httpx.Request("POST", self.url, content=content, headers=headers, extensions=self.extensions)
            try:
                resp = await next(self._rr).handle_async_request(req)
                try:
                    raw = await resp.aread()
                finally:
                    await resp.aclose()
            except RETRYABLE_TRANSPORT_ERRORS as exc:
                last = exc
                continue
            except httpx.HTTPError as exc:
                self.failures += 1
                raise errors.DispatchFailed(f"loopback call failed: {describe_error(exc)}") from None
            return resp.status_code, raw
        self.failures += 1
        assert last is not None
        raise errors.DispatchFailed(f"loopback call failed {1 + len(RETRY_DELAYS_S)} times: {describe_error(last)}")

    @staticmethod
    def _answer(status: int, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        if status >= 400:
            err = body.get("error", {}) if isinstance(body, dict) else {}
            code = err.get("code") if isinstance(err.get("code"), str) else None
            message = err.get("message") if isinstance(err.get("message"), str) else None
            raise answer_error(status, code, message or f"gateway answered HTTP {status}")
        return body

    async def aclose(self) -> None:
        for t in self.transports:
            await t.aclose()


