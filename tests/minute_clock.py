"""Minute-scale instants for the FakeClock runtime tests of the operator features (pause, explain):
T0 is a Monday 08:00 UTC, `t(m)` is m minutes after it, `every_minute` a schedule routine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from palyra_ops.clock import to_ms

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
M = 60_000


def t(minutes: float) -> int:
    return to_ms(T0) + int(minutes * M)


def every_minute(rt: Any, name: str, **spec: Any) -> None:
    rt.routine(name, trigger={"kind": "schedule", "schedule": {"every": "1m"}}, **spec)
