"""The gateway: the one path every message and every routine run takes (see core.py).

One module per stage — gates, execution, approvals — on a shared base (base.py); the loopback
client the scheduler dispatches through (loopback.py); metrics are `palyra_ops.metrics`.
"""

from __future__ import annotations

from palyra_ops.gateway.base import (
    DAEMON_DEVICE_ID,
    DAEMON_PRINCIPAL,
    GATES,
    TRIGGER_KINDS,
    PolicyDecision,
    SkillDenied,
    SleepUntil,
    baseline_policy,
    default_policy_fn,
    log_finished,
    real_sleep_until,
)
from palyra_ops.gateway.core import Gateway
from palyra_ops.gateway.loopback import Loopback, describe_error, loopback_keepalive_s
from palyra_ops.metrics import Metrics

__all__ = [
    "DAEMON_DEVICE_ID",
    "DAEMON_PRINCIPAL",
    "GATES",
    "TRIGGER_KINDS",
    "Gateway",
    "Loopback",
    "Metrics",
    "PolicyDecision",
    "SkillDenied",
    "SleepUntil",
    "baseline_policy",
    "default_policy_fn",
    "describe_error",
    "log_finished",
    "loopback_keepalive_s",
    "real_sleep_until",
]
