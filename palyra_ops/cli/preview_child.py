"""`apply --auto-approve` of a large plan: the preview is written by a forked child while this
process writes the journal, and the transaction commits only once the preview is out.

The text preview of 100,000 creates is ~140 MB (~1.6 s of formatting) and the journal writes are
~1.5 s; nothing in one needs the other, so on two cores they overlap. What the user sees is the
same bytes in the same order: the child writes the preview to the inherited stdout and this process
writes nothing there until the child has exited. What happens is the same too: if the preview
cannot be written (a closed pipe, a full disk) the transaction is rolled back, exactly as when the
preview failed before anything was written. Only where stdout is a real file descriptor (not a
test's in-memory capture), on Linux, with a plan big enough to pay for a fork.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from palyra_ops.errors import PalyraError
from palyra_ops.source.parallel import can_fork, usable_cores

#: changes from which the preview is rendered beside the writes (a fork is ~10 ms)
OVERLAP_MIN_CHANGES = 5_000
_BROKEN_PIPE = 3


def usable(fmt: str, changes: int) -> bool:
    """Whether the preview (shown only in the text view, like `emit_progress`) goes to a child."""
    if fmt != "text" or changes < OVERLAP_MIN_CHANGES or not can_fork() or usable_cores() < 2:
        return False
    try:
        sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False
    return True


class Preview:
    """A forked child running `write()` (which writes to stdout); `wait()` returns once it is all
    written, or raises what writing it raised here (BrokenPipeError, or a one-line error)."""

    def __init__(self, write: Callable[[], None]) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                write()
                sys.stdout.flush()
                code = 0
            except BrokenPipeError:
                code = _BROKEN_PIPE
            finally:
                os._exit(code)
        self.status: int | None = None

    def wait_quietly(self) -> None:
        """Reap the child (its output is complete after this), whatever it did."""
        if self.status is None:
            _, status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(status)

    def wait(self) -> None:
        self.wait_quietly()
        if self.status == _BROKEN_PIPE:
            raise BrokenPipeError("stdout closed while the plan was written")
        if self.status != 0:
            raise PalyraError(f"the plan could not be written to stdout (exit {self.status}); nothing applied")
