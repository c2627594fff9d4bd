"""Named fault-injection points for crash tests.

Reliability tests must kill a process *inside* an apply transaction. Timing a SIGKILL from outside
is flaky, so the code marks the interesting instants with `failpoint(name)`; a test sets
`PALYRA_FAILPOINTS="apply.mid_transaction=pause"` and `PALYRA_FAILPOINT_DIR=/tmp/x`, waits for the
marker file `/tmp/x/apply.mid_transaction` and kills the process while it sleeps there.
Unset (production), a failpoint is one dict lookup.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def _parse(spec: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in spec.split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k.strip()] = v.strip()
    return out


_ACTIVE = _parse(os.environ.get("PALYRA_FAILPOINTS", ""))


def failpoint(name: str) -> None:
    action = _ACTIVE.get(name)
    if action is None:
        return
    marker_dir = os.environ.get("PALYRA_FAILPOINT_DIR")
    if marker_dir:
        Path(marker_dir, name).write_text(str(os.getpid()))
    if action == "pause":
        time.sleep(3600)
    elif action == "crash":
        os._exit(137)
