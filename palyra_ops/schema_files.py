"""Where the JSON Schemas live.

`schemas/` at the project root is the single source of truth for the YAML format (SPEC §1); both
validation (`source`) and default-filling (`model`) read it from here so they can never disagree.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

_REPO_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
# A wheel install has no repository around it; the build ships schemas/ as palyra_ops/_schemas.
SCHEMA_DIR = _REPO_SCHEMAS if _REPO_SCHEMAS.is_dir() else Path(__file__).resolve().parent / "_schemas"


def schema_path(name: str = "routine.schema.json") -> Path:
    return SCHEMA_DIR / name


@cache
def load_schema(name: str = "routine.schema.json") -> dict[str, Any]:
    return json.loads(schema_path(name).read_text(encoding="utf-8"))
