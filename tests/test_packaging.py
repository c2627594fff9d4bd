"""The wheel ships every subpackage and the schemas (pyproject lists packages explicitly)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "palyra_ops").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert on_disk <= listed, f"add to [tool.setuptools].packages: {sorted(on_disk - listed)}"
    assert cfg["package-dir"]["palyra_ops._schemas"] == "schemas"
    assert (ROOT / "schemas" / "routine.schema.json").is_file()
