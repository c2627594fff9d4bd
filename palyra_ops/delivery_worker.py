"""Webhook POSTs in a child process, so deliveries use the second core (issue 14, Build 2).

After the loopback calls were batched, the webhook POST (httpcore's pool and h11, pure Python) was
half of what a run cost the daemon's one event loop. A thread would share the GIL; a child process
does not. The daemon prepares each delivery as before — the URL checks, headers read from the
environment, the signing secret, the JSON body, all in `Deliverer._post` — and hands the prepared
POST to the child, which sends it with the same code (`Deliverer.post_prepared`: the guarded
transport that checks every resolved address at connect time, the Standard Webhooks signature per
attempt, the retries). Only the outcome comes back: nothing, or the error the run records.

Frames on the child's stdin/stdout: a 4-byte big-endian length, then JSON. A child that exits
fails the deliveries it held (recorded `failed`, never lost silently) and is started again by the
next delivery.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import struct
import sys
from typing import TypedDict

log = logging.getLogger("palyra_ops.delivery")

FRAME = struct.Struct(">I")


class PostJob(TypedDict):
    """One prepared webhook POST (what `Deliverer.post_prepared` takes)."""

    name: str
    url: str
    headers: dict[str, str]
    content: str
    timeout: float
    retries: int
    secret: str | None
    run_id: str


class WorkerGone(Exception):
    pass


class DeliveryWorker:
    """The daemon's side: starts the child, sends jobs, matches answers to waiting deliveries."""

    def __init__(self, *, allow_link_local: bool, retry_base_s: float) -> None:
        self.allow_link_local = allow_link_local
        self.retry_base_s = retry_base_s
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[str | None]] = {}
        self._ids = itertools.count(1)
        self._starting: asyncio.Lock | None = None

    async def start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._proc is not None and self._proc.returncode is None:
                return
            args = json.dumps({"allow_link_local": self.allow_link_local, "retry_base_s": self.retry_base_s})
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "palyra_ops.delivery_child", args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            self._reader = asyncio.ensure_future(self._read(self._proc))

    async def post(self, job: PostJob) -> str | None:
        """Send one prepared POST; its error message, or None when the receiver accepted it."""
        if self._proc is None or self._proc.returncode is not None:
            await self.start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        rid = next(self._ids)
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        data = json.dumps({"id": rid, **job}).encode()
        try:
            proc.stdin.write(FRAME.pack(len(data)) + data)
            await proc.stdin.drain()
            return await fut
        except (ConnectionError, WorkerGone) as exc:
            return f"webhook {job['url']}: the delivery worker exited ({exc or type(exc).__name__})"
        finally:
            self._pending.pop(rid, None)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while True:
                (n,) = FRAME.unpack(await proc.stdout.readexactly(FRAME.size))
                msg = json.loads(await proc.stdout.readexactly(n))
                fut = self._pending.get(msg["id"])
                if fut is not None and not fut.done():
                    fut.set_result(msg.get("error"))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            if self._pending:
                log.warning("delivery worker exited with %d deliveries in flight (%s)", len(self._pending),
                            type(exc).__name__)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(WorkerGone("it stopped answering"))

    async def aclose(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
