"""Outbound HTTP for webhook deliveries, with the address rules of `palyra_ops.targets`.

Checking a URL's host before the request and letting the HTTP client resolve it again afterwards
leaves a gap a DNS answer can slip through (rebinding: public at the check, 169.254.169.254 at the
connect). So the check sits where the socket is made: a network backend for httpcore resolves the
name itself, refuses the connection when any address is forbidden, and connects to the checked
address. The URL keeps its host name, so TLS SNI, certificate checks and the connection pool work
on the name as usual.

The transport is built on httpx's and httpcore's public interfaces (`AsyncBaseTransport`,
`AsyncConnectionPool(network_backend=...)`); httpcore errors are mapped to the httpx exceptions the
deliverer handles. Environment proxies are not used for deliveries: a proxy would make the
connection-time check meaningless.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from palyra_ops.targets import TargetRefused, address_problem

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address, then connects to an allowed one."""

    def __init__(self, *, allow_link_local: bool = False, resolver: Resolver | None = None) -> None:
        self.allow_link_local = allow_link_local
        self.resolver = resolver or system_resolver
        self._inner = httpcore.AnyIOBackend()

    async def addresses(self, host: str, port: int) -> list[str]:
        try:
            literal = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            literal = None
        if literal is not None:
            found = [host]
        else:
            try:
                found = await self.resolver(host, port)
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from None
        if not found:
            raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
        for addr in found:
            why = address_problem(ipaddress.ip_address(addr.split("%", 1)[0]), allow_link_local=self.allow_link_local)
            if why:
                shown = f"{addr} is" if addr == host else f"{host} resolves to {addr},"
                raise TargetRefused(f"{shown} {why}")
        return found

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        for addr in await self.addresses(host, port):
            try:
                return await self._inner.connect_tcp(addr, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("unix sockets are not delivery targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _exception_map() -> list[tuple[type[Exception], type[httpx.HTTPError]]]:
    """httpcore exception → the httpx exception of the same name, most specific first."""
    pairs = []
    for name in dir(httpcore):
        core, mapped = getattr(httpcore, name), getattr(httpx, name, None)
        if isinstance(core, type) and issubclass(core, Exception) and isinstance(mapped, type) \
                and issubclass(mapped, httpx.HTTPError):
            pairs.append((core, mapped))
    return sorted(pairs, key=lambda p: -len(p[0].__mro__))


_EXC_MAP = _exception_map()


def _mapped(exc: Exception, request: httpx.Request) -> Exception:
    for core, mapped in _EXC_MAP:
        if isinstance(exc, core):
            if issubclass(mapped, httpx.RequestError):
                return mapped(str(exc), request=request)
            return mapped(str(exc))  # type: ignore[call-arg]
    return exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: Any, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except httpcore.TimeoutException as exc:
            raise _mapped(exc, self._request) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise _mapped(exc, self._request) from exc

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, allow_link_local: bool = False, resolver: Resolver | None = None,
                 max_connections: int = 32) -> None:
        self.backend = GuardedBackend(allow_link_local=allow_link_local, resolver=resolver)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=max_connections,  # httpx's CA choice
            max_keepalive_connections=max_connections, keepalive_expiry=5.0, network_backend=self.backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        req = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port,
                             target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions,
        )
        try:
            resp = await self._pool.handle_async_request(req)
        except TargetRefused:
            raise
        except Exception as exc:
            mapped = _mapped(exc, request)
            if mapped is exc:
                raise
            raise mapped from exc
        return httpx.Response(status_code=resp.status, headers=resp.headers, stream=_Body(resp.stream, request),
                              extensions=resp.extensions)

    async def aclose(self) -> None:
        await self._pool.aclose()
