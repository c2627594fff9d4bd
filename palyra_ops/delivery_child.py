"""The delivery worker's child process (`python -m palyra_ops.delivery_child`): posts the webhook
deliveries the daemon prepared (see palyra_ops/delivery_worker.py for the protocol and why)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import cast

from palyra_ops.clock import SystemClock
from palyra_ops.delivery import Deliverer, DeliveryError
from palyra_ops.delivery_worker import FRAME, PostJob
from palyra_ops.journal import Journal


async def _serve(allow_link_local: bool, retry_base_s: float) -> None:
    """The child: read jobs from stdin, post each concurrently, write each outcome to stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout.buffer)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    # no journal: the child only posts (channels, files and memory stay with the daemon)
    poster = Deliverer(cast(Journal, None), SystemClock(), allow_link_local=allow_link_local,
                       retry_base_s=retry_base_s)
    tasks: set[asyncio.Task[None]] = set()

    async def one(msg: dict[str, object]) -> None:
        job = cast(PostJob, msg)
        try:
            await poster.post_prepared(job["name"], job["url"], dict(job["headers"]), job["content"].encode(),
                                       float(job["timeout"]), int(job["retries"]), job["secret"], job["run_id"])
            error = None
        except DeliveryError as exc:
            error = str(exc)
        except Exception as exc:  # never leave the daemon waiting
            error = f"webhook {job['url']}: delivery worker: {type(exc).__name__}: {exc}"
        data = json.dumps({"id": msg["id"], "error": error}).encode()
        writer.write(FRAME.pack(len(data)) + data)
        await writer.drain()

    try:
        while True:
            (n,) = FRAME.unpack(await reader.readexactly(FRAME.size))
            task = asyncio.ensure_future(one(json.loads(await reader.readexactly(n))))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except asyncio.IncompleteReadError:  # the daemon closed our stdin: finish what we hold, then exit
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    await poster.aclose()


if __name__ == "__main__":
    # Ctrl-C and a unit's SIGTERM reach the whole process group: the daemon decides when we stop
    # (it closes our stdin; so does its death), so the deliveries we hold are finished, not lost
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    opts = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    try:  # the daemon's loop (a dependency on POSIX), without importing the daemon
        from uvloop import new_event_loop as factory
    except ImportError:  # pragma: no cover - Windows
        factory = None  # type: ignore[assignment]
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(bool(opts.get("allow_link_local", False)), float(opts.get("retry_base_s", 0.25))))
