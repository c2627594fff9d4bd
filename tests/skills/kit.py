"""Build signed skill packages from the WAT sources in this directory (tests and bench share it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import wasmtime
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from palyra_ops.skills.package import encode_public_key, sign_package

HERE = Path(__file__).parent


def build(
    name: str,
    dest: Path,
    *,
    key: Ed25519PrivateKey | None = None,
    manifest: str | None = None,
    subst: dict[str, str] | None = None,
) -> Path:
    """Copy tests/skills/<name> to dest/<name>, compile each .wat to the .wasm the manifest names
    (same stem, placed where `entry` points), and sign it when a key is given."""
    src = HERE / name
    out = dest / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    text = manifest if manifest is not None else (src / "skill.yaml").read_text()
    wat_text = next(iter(src.glob("*.wat"))).read_text()
    for old, new in (subst or {}).items():  # placeholders such as PORT in tests/skills/fetch
        text = text.replace(old, new)
        wat_text = wat_text.replace(old, new)
    (out / "skill.yaml").write_text(text)
    entry = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("entry:"))
    target = out / entry
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(wasmtime.wat2wasm(wat_text))
    if key is not None:
        sign_package(out, key)
    return out


def new_key() -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    return key, encode_public_key(key.public_key())


# --- pytest fixtures shared by tests/test_skills_*.py (imported there by name) ----------------------

import pytest  # noqa: E402

from palyra_ops.skills.store import SkillStore  # noqa: E402


@pytest.fixture
def publisher() -> tuple[Ed25519PrivateKey, str]:
    return new_key()


@pytest.fixture
def skill_store(tmp_path: Path, publisher: tuple[Ed25519PrivateKey, str]) -> SkillStore:
    store = SkillStore(tmp_path / "state")
    store.trust.add("acme", publisher[1])
    return store
