"""Webhook POSTs over keep-alive HTTP/1.1 connections, answers parsed by httptools (issue 14).

Why not httpcore: after the loopback calls were batched and deliveries moved to the delivery
worker, the worker's httpcore pool and h11 (pure Python) cost 0.9–1.5 ms of CPU per POST, and a
top-of-minute herd waited on them: the last of 1,000 runs was started 0.4 s after its instant and
delivered 1.4 s after it. A delivery needs little of an HTTP client: one request line, the headers
the deliverer prepared, the body; from the answer only its status (the body is read and dropped
so the connection can be reused). Written straight to an asyncio transport and parsed by
httptools (C, a dependency already: uvicorn's parser) that is a few tens of microseconds.

What stays as it was: the egress rules are applied where the socket is made — `GuardedBackend`
resolves the host, refuses the connection when any address is forbidden and the connection goes
to a checked address (docs/security.md); the URL keeps its name for `Host`, TLS SNI and the
certificate check (httpx's default SSL context); no redirect is followed, no environment proxy
is used. Failures are the httpx exceptions `Deliverer.post_prepared` already handles
(`ConnectError`, `ConnectTimeout`/`ReadTimeout`, `RemoteProtocolError`, `TargetRefused`), so the
retry rules and the recorded errors read the same. Idle connections are retired after
`KEEPALIVE_S`, below the 5 s idle timeout common servers (uvicorn, nginx's default is 75 s) use.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque

import httpcore
import httptools
import httpx

from palyra_ops.egress import GuardedBackend

#: an idle pooled connection is not reused after this long (the server may be closing it)
KEEPALIVE_S = 4.0
#: idle connections kept per destination
MAX_IDLE = 64


class _Conn(asyncio.Protocol):
    """One connection; one request at a time on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._done: asyncio.Future[tuple[int, bool]] | None = None
        self._status = 0
        self._headers_done = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is not a subclass)

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # bytes nobody asked for: the connection is not reusable
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - an upgrade answer to a POST
            self._fail(httpx.RemoteProtocolError("the receiver answered with a protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._done is not None and not self._done.done():
            if self._headers_done:  # a body delimited by the connection's end: the answer is complete
                self._done.set_result((self._status, False))
            else:
                self._done.set_exception(httpx.RemoteProtocolError("Server disconnected without sending a response."))

    # -- httptools callbacks ------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_message_complete(self) -> None:
        if self._status < 200:  # an interim answer (100 Continue): the real one follows
            self._headers_done = False
            return
        assert self._parser is not None
        keep = self._parser.should_keep_alive()
        self._parser = None
        if self._done is not None and not self._done.done():
            self._done.set_result((self._status, keep))

    # -- use ----------------------------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, head: bytes, content: bytes) -> tuple[int, bool]:
        """Send one request; (status, whether the connection may be reused)."""
        assert self.transport is not None
        self._parser = httptools.HttpResponseParser(self)
        self._status, self._headers_done = 0, False
        self._done = asyncio.get_running_loop().create_future()
        self.transport.write(head + content if len(content) < 65_536 else head)
        if len(content) >= 65_536:
            self.transport.write(content)
        try:
            return await self._done
        finally:
            self._done = None


class FastPoster:
    """A pool of keep-alive connections per destination (scheme, host, port)."""

    def __init__(self, backend: GuardedBackend) -> None:
        self.backend = backend
        self._idle: dict[tuple[bytes, bytes, int], deque[_Conn]] = {}
        self._ssl: ssl.SSLContext | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()  # httpx's CA choice, as the httpcore pool had
        return self._ssl

    async def _connect(self, scheme: bytes, host: str, port: int) -> _Conn:
        try:
            addresses = await self.backend.addresses(host, port)  # raises TargetRefused
        except httpcore.ConnectError as exc:
            raise httpx.ConnectError(str(exc)) from None
        loop = asyncio.get_running_loop()
        last: Exception | None = None
        for addr in addresses:
            try:
                if scheme == b"https":
                    _, conn = await loop.create_connection(_Conn, addr, port, ssl=self._ssl_context(),
                                                           server_hostname=host)
                else:
                    _, conn = await loop.create_connection(_Conn, addr, port)
                return conn
            except ssl.SSLError as exc:
                raise httpx.ConnectError(f"TLS: {exc}") from None
            except OSError as exc:
                last = exc
        raise httpx.ConnectError(str(last or "no address to connect to")) from None

    def _take(self, key: tuple[bytes, bytes, int]) -> _Conn | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be closing
            if not conn.closed and now - conn.idle_since < KEEPALIVE_S:
                return conn
            conn.close()
        return None

    async def post(self, url: httpx.URL, content: bytes, headers: dict[str, str], timeout: float) -> int:
        """POST `content` with `headers` (already checked: no CR/LF); the answer's status."""
        scheme, raw_host, port = url.raw_scheme, url.raw_host, url.port or (443 if url.raw_scheme == b"https" else 80)
        key = (scheme, raw_host, port)
        lines = [b"POST ", url.raw_path, b" HTTP/1.1\r\nHost: ", url.netloc, b"\r\n"]
        for k, v in headers.items():
            lines += [k.encode("latin-1"), b": ", v.encode("utf-8"), b"\r\n"]
        lines += [b"Content-Length: ", str(len(content)).encode(), b"\r\n\r\n"]
        head = b"".join(lines)
        conn = self._take(key)
        connecting = conn is None
        try:
            async with asyncio.timeout(timeout):
                if conn is None:
                    conn = await self._connect(scheme, raw_host.decode("ascii"), port)
                connecting = False
                status, keep = await conn.request(head, content)
        except TimeoutError:
            if conn is not None:
                conn.close()
            raise (httpx.ConnectTimeout if connecting else httpx.ReadTimeout)(f"timed out after {timeout:g}s") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        if keep and not conn.closed:
            conn.idle_since = time.monotonic()
            idle = self._idle.setdefault(key, deque())
            if len(idle) < MAX_IDLE:
                idle.append(conn)
            else:
                conn.close()
        else:
            conn.close()
        return status

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
