"""The delivery worker's HTTP/1.1 poster (palyra_ops/fastpost.py) against a raw socket server: the
answers a receiver may give (content-length, chunked, close-delimited, interim 100), keep-alive
reuse, a server that closes without answering, a timeout, and the egress check at connect time."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from palyra_ops.egress import GuardedBackend
from palyra_ops.fastpost import FastPoster
from palyra_ops.targets import TargetRefused


async def _server(answers: list[bytes | None], seen: list[bytes], conns: list[int]) -> asyncio.Server:
    """Answers requests in order with the given raw bytes; None: close without answering."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                seen.append(head + await reader.readexactly(length))
                answer = answers.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if answer.startswith(b"HTTP/1.1 201"):  # the close-delimited answer
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _allow_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def _poster() -> FastPoster:
    backend = GuardedBackend()
    backend.addresses = _allow_loopback  # type: ignore[method-assign]  # the bench's receiver is on loopback
    return FastPoster(backend)


def test_answers_keep_alive_and_request_bytes() -> None:
    async def main() -> None:
        seen: list[bytes] = []
        conns: list[int] = []
        answers: list[bytes | None] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 201 Created\r\n\r\nuntil the end",  # close-delimited body
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ]
        server = await _server(answers, seen, conns)
        port = server.sockets[0].getsockname()[1]
        p = _poster()
        url = httpx.URL(f"http://127.0.0.1:{port}/hook?x=1")
        got = [await p.post(url, b'{"a":1}', {"Content-Type": "application/json", "X-Note": "ü"}, 5) for _ in range(5)]
        assert got == [200, 204, 503, 201, 200]
        assert len(conns) == 2  # reused until the close-delimited answer ended the first connection
        assert seen[0] == (f"POST /hook?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                           f"X-Note: ".encode() + "ü".encode() + b'\r\nContent-Length: 7\r\n\r\n{"a":1}')
        await p.aclose()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_disconnect_timeout_refused() -> None:
    async def main() -> None:
        seen: list[bytes] = []
        conns: list[int] = []
        server = await _server([None], seen, conns)
        port = server.sockets[0].getsockname()[1]
        p = _poster()
        url = httpx.URL(f"http://127.0.0.1:{port}/")
        with pytest.raises(httpx.RemoteProtocolError):
            await p.post(url, b"x", {}, 5)

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)

        quiet = await asyncio.start_server(silent, "127.0.0.1", 0)
        with pytest.raises(httpx.ReadTimeout):
            await p.post(httpx.URL(f"http://127.0.0.1:{quiet.sockets[0].getsockname()[1]}/"), b"x", {}, 0.2)
        quiet.close()
        server.close()
        await server.wait_closed()
        with pytest.raises(httpx.ConnectError):  # nobody listens there any more
            await p.post(url, b"x", {}, 5)
        guarded = FastPoster(GuardedBackend())  # the real rules: link-local refused at connect time
        with pytest.raises(TargetRefused, match="link-local"):
            await guarded.post(httpx.URL("http://169.254.1.1/"), b"x", {}, 5)
        await p.aclose()

    asyncio.run(main())
