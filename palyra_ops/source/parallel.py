"""Checking a directory's files on two cores: the parent and one forked child share the work.

Parsing and validating is CPU-bound Python (libyaml's composer calls back into Python for every
node), ~100 µs per routine, and a cold plan/apply/forecast of a large directory spends most of its
time there while the second core idles. The files are independent (cross-file checks run after), so
the parent takes files from the front of the list and one forked child from the back, each claiming
the next file under a lock until they meet: whoever is slowed down by other work on the machine
simply checks fewer files.

What crosses back is only what the caller's `work` returns for the child's files, pickled once at
the end: compact results (canonical JSON strings, hashes, findings), never parsed bodies, whose
pickling cost more than it saved when that was tried. The child's result is complete or ignored: if
it dies or its answer does not unpickle, the parent checks the child's files itself, so a result is
the same with or without it. Only on Linux with fork (the child inherits the parent's state, so
`work` needs no pickling) and only for callers that know no threads hold locks (the CLI commands,
not the daemon).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import sys
from collections.abc import Callable
from typing import TypeVar

R = TypeVar("R")

#: below this many bytes of files a fork costs more than the second core saves
PARALLEL_MIN_BYTES = 1 << 20


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def can_fork() -> bool:
    return sys.platform == "linux" and hasattr(os, "fork")


def run_split(n: int, work: Callable[[int], R]) -> list[R]:
    """`[work(i) for i in range(n)]`, computed by this process and one forked child.

    `work` must be deterministic and free of side effects the parent relies on (the child's are
    lost), and its results picklable. Falls back to doing everything here when forking fails.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    bounds = ctx.RawArray(ctypes.c_long, [0, n])  # [next from the front, end of the unclaimed range)
    lock = ctx.Lock()

    def claim(front: bool) -> int | None:
        with lock:
            lo, hi = bounds[0], bounds[1]
            if lo >= hi:
                return None
            if front:
                bounds[0] = lo + 1
                return lo
            bounds[1] = hi - 1
            return hi - 1

    for stream in (sys.stdout, sys.stderr):  # a child must not write the parent's buffered output again
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return [work(i) for i in range(n)]
    if pid == 0:  # the child: check from the back, send everything at once, leave without cleanup
        code = 1
        try:
            os.close(r)
            done: dict[int, R] = {}
            while (i := claim(False)) is not None:
                done[i] = work(i)
            payload = pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL)
            with open(w, "wb") as fh:
                fh.write(payload)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    results: dict[int, R] = {}
    while (i := claim(True)) is not None:
        results[i] = work(i)
    with open(r, "rb") as fh:
        payload = fh.read()
    _, status = os.waitpid(pid, 0)
    child: dict[int, R] = {}
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        try:
            child = pickle.loads(payload)  # noqa: S301 - our own forked child's answer, through our pipe
        except Exception:  # a damaged answer: its files are checked here instead
            child = {}
    del payload
    results.update(child)
    return [results[i] if i in results else work(i) for i in range(n)]
