"""WASM skills: signed packages, the trust store, installed-skill index, sandbox and re-audit.

Entry points for the daemon: `SkillStore` (install, quarantine, `audit()` for the scheduler's
re-audit), `SkillRunner.run()` (the gateway's execution step) and `palyra_ops.policy.evaluate`.
"""

from palyra_ops.skills.sandbox import SkillResult, SkillRunner
from palyra_ops.skills.store import AuditResult, InstalledSkill, SkillStore

__all__ = ["AuditResult", "InstalledSkill", "SkillResult", "SkillRunner", "SkillStore"]
