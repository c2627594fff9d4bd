"""Skill packages: manifest checks, signatures, trust store and install-time refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from skills.kit import build, new_key, publisher, skill_store  # noqa: F401 - fixtures

from palyra_ops.errors import Conflict, PalyraError
from palyra_ops.skills.manifest import parse_manifest, semver_key
from palyra_ops.skills.package import payload_bytes, sign_package, write_archive
from palyra_ops.skills.store import SkillStore

BASE = b"id: demo\nversion: 1.0.0\npublisher: acme\nentry: demo.wasm\n"


def refuse(store: SkillStore, path: Path) -> str:
    with pytest.raises(PalyraError) as exc:
        store.install(path)
    assert not store.list(), "a refused install must change nothing"
    return exc.value.message


# --- manifest -----------------------------------------------------------------------------------


def test_manifest_defaults_and_capability_names() -> None:
    m = parse_manifest(
        BASE + b"capabilities:\n  filesystem: [/srv/data, {path: /tmp/out, writable: true}]\n"
        b"  http: [api.example.com, '*.example.org']\n  env: [API_TOKEN]\n"
        b"quotas: {fuel: 5000, memory: 2MiB, wall_time: 1500ms}\n"
    )
    assert m.capabilities.names() == [
        "fs:/srv/data", "fs-rw:/tmp/out", "http:api.example.com", "http:*.example.org", "env:API_TOKEN",
    ]
    assert (m.quotas.fuel, m.quotas.memory_bytes, m.quotas.wall_time_ms) == (5000, 2 * 1024 * 1024, 1500)
    assert parse_manifest(BASE).quotas.to_json() == {"fuel": 100_000_000, "memory": "64MiB", "wall_time": "5s"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + b"extra: 1\n", "skill.yaml: extra: unknown field (allowed: capabilities, description, entry, id, modules, publisher, quotas, version)"),
        (BASE.replace(b"1.0.0", b"v1.0.0"), "skill.yaml: version: 'v1.0.0' is not a semantic version such as 1.2.0"),
        (BASE.replace(b"1.0.0", b"1.0"), "skill.yaml: version: expected a semantic version such as 1.2.0 as text, got the number 1.0 (quote it)"),
        (BASE.replace(b"demo.wasm", b"../demo.wasm"), "skill.yaml: entry: '../demo.wasm' must be a normalised path inside the package"),
        (BASE.replace(b"id: demo", b"id: Demo!"), "skill.yaml: id: 'Demo!' is not a valid skill id (lower-case letters, digits, '.', '_', '-')"),
        (BASE + b"quotas: {fuel: 0}\n", "skill.yaml: quotas.fuel: 0 must be an integer in 1..100000000000"),
        (BASE + b"quotas: {memory: 8GiB}\n", "skill.yaml: quotas.memory: 8GiB must be between 64KiB and 4GiB"),
        (BASE + b"quotas: {wall_time: soon}\n", "skill.yaml: quotas.wall_time: invalid duration 'soon': expected e.g. 500ms, 30s, 5m, 2h, 1d or 1h30m"),
        (BASE + b"capabilities: {filesystem: [relative/dir]}\n", "skill.yaml: capabilities.filesystem[0].path: 'relative/dir' must be an absolute, normalised path"),
        (BASE + b"capabilities: {filesystem: [/]}\n", "skill.yaml: capabilities.filesystem[0].path: the whole file system ('/') cannot be granted"),
        (BASE + b"capabilities: {env: [BAD-NAME]}\n", "skill.yaml: capabilities.env[0]: 'BAD-NAME' is not an environment variable name"),
        (BASE + b"capabilities: {sockets: [x]}\n", "skill.yaml: capabilities.sockets: unknown field (allowed: env, filesystem, http)"),
        (BASE + b"id: again\n", "skill.yaml:5:1: duplicate key 'id'"),
    ],
)
def test_manifest_refusals(text: bytes, message: str) -> None:
    with pytest.raises(PalyraError) as exc:
        parse_manifest(text)
    assert exc.value.message == message


def test_semver_precedence() -> None:
    versions = ["1.0.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "0.9.9", "1.0.0-alpha.beta", "2.0.0"]
    assert sorted(versions, key=semver_key) == [
        "0.9.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0", "2.0.0",
    ]


# --- signatures and install ----------------------------------------------------------------------


def test_payload_is_canonical_and_covers_every_file(tmp_path: Path, publisher) -> None:  # noqa: F811
    pkg = build("upper", tmp_path, key=publisher[0])
    sig = json.loads((pkg / "skill.sig").read_text())
    assert sorted(sig["files"]) == ["bin/upper.wasm", "skill.yaml"]
    text = payload_bytes(sig["files"]).decode()
    assert text.splitlines()[0] == "palyra-skill-payload/v1"
    assert text.splitlines()[1].endswith("  bin/upper.wasm")
    assert text.splitlines()[2].endswith("  skill.yaml")


def test_install_pins_sha256_and_is_idempotent(tmp_path: Path, skill_store: SkillStore, publisher) -> None:  # noqa: F811
    pkg = build("echo", tmp_path / "src", key=publisher[0])
    skill = skill_store.install(pkg)
    assert (skill.id, skill.version, skill.publisher, skill.status) == ("echo", "1.0.0", "acme", "active")
    assert skill.module_sha256 == json.loads((pkg / "skill.sig").read_text())["files"]["echo.wasm"]
    assert skill.path.parent == tmp_path / "state" / "skills" / "installed"
    assert skill_store.install(pkg) == skill
    index = json.loads((tmp_path / "state" / "skills" / "index.json").read_text())
    assert list(index["skills"]) == ["echo"]
    assert skill_store.ids() == {"echo"}


def test_install_from_archive(tmp_path: Path, skill_store: SkillStore, publisher) -> None:  # noqa: F811
    pkg = build("upper", tmp_path / "src", key=publisher[0])
    write_archive(pkg, tmp_path / "upper.tar.gz")
    assert skill_store.install(tmp_path / "upper.tar.gz").id == "upper"


def test_unsigned_package_is_refused(tmp_path: Path, skill_store: SkillStore) -> None:  # noqa: F811
    pkg = build("echo", tmp_path)
    assert refuse(skill_store, pkg) == "package is unsigned: no skill.sig"


def test_unknown_publisher_is_refused(tmp_path: Path, publisher) -> None:  # noqa: F811
    store = SkillStore(tmp_path / "state")
    pkg = build("echo", tmp_path, key=publisher[0])
    assert refuse(store, pkg) == "unknown publisher 'acme': not in the trust store"


def test_package_signed_with_untrusted_key_is_refused(tmp_path: Path, skill_store: SkillStore) -> None:  # noqa: F811
    other, _ = new_key()
    pkg = build("echo", tmp_path, key=other)
    msg = refuse(skill_store, pkg)
    assert msg.startswith("package is signed with key SHA256:")
    assert msg.endswith(", which is not trusted for publisher 'acme'")


def test_forged_signature_is_refused(tmp_path: Path, skill_store: SkillStore, publisher) -> None:  # noqa: F811
    pkg = build("echo", tmp_path, key=publisher[0])
    sig = json.loads((pkg / "skill.sig").read_text())
    other, _ = new_key()
    import base64

    sig["signature"] = base64.b64encode(other.sign(b"something else")).decode()
    (pkg / "skill.sig").write_text(json.dumps(sig))
    assert refuse(skill_store, pkg) == "signature does not verify: the package was not signed by this key"


@pytest.mark.parametrize("how", ["modify", "add", "remove", "rewrite-map"])
def test_tampered_package_is_refused(tmp_path: Path, skill_store: SkillStore, publisher, how: str) -> None:  # noqa: F811
    pkg = build("upper", tmp_path, key=publisher[0])
    if how == "modify":
        with open(pkg / "bin" / "upper.wasm", "ab") as f:
            f.write(b"\x00")
        expected = "file 'bin/upper.wasm' was modified: sha256 "
    elif how == "add":
        (pkg / "README").write_text("not signed")
        expected = "file 'README' is not covered by the signature"
    elif how == "remove":
        (pkg / "bin" / "upper.wasm").unlink()
        expected = "file 'bin/upper.wasm' is covered by the signature but missing"
    else:  # edit the file map to match modified bytes: the signed payload hash no longer agrees
        (pkg / "skill.yaml").write_text((pkg / "skill.yaml").read_text() + "# edited\n")
        sig = json.loads((pkg / "skill.sig").read_text())
        import hashlib

        sig["files"]["skill.yaml"] = hashlib.sha256((pkg / "skill.yaml").read_bytes()).hexdigest()
        (pkg / "skill.sig").write_text(json.dumps(sig))
        expected = "skill.sig: file list does not match the signed payload hash"
    assert refuse(skill_store, pkg).startswith(expected)


def test_symlink_in_package_is_refused(tmp_path: Path, skill_store: SkillStore, publisher) -> None:  # noqa: F811
    pkg = build("echo", tmp_path, key=publisher[0])
    os.symlink("/etc/passwd", pkg / "data")
    assert refuse(skill_store, pkg) == "package file 'data' is a symbolic link; packages may hold only regular files"


def test_undeclared_filesystem_import_is_refused(tmp_path: Path, skill_store: SkillStore, publisher) -> None:  # noqa: F811
    pkg = build("fsopen", tmp_path, key=publisher[0])
    assert refuse(skill_store, pkg) == (
        "module 'fsopen.wasm' imports WASI filesystem function wasi_snapshot_preview1.path_open "
        "but the manifest declares no filesystem capability"
    )


def test_declared_filesystem_import_is_accepted(tmp_path: Path, skill_store: SkillStore, publisher) -> None:  # noqa: F811
    text = (Path(__file__).parent / "skills" / "fsopen" / "skill.yaml").read_text()
    pkg = build("fsopen", tmp_path, key=publisher[0], manifest=text + f"capabilities: {{filesystem: [{tmp_path}]}}\n")
    assert skill_store.install(pkg).capabilities == (f"fs:{tmp_path}",)


def test_module_quota_and_abi_checks(tmp_path: Path, skill_store: SkillStore, publisher) -> None:  # noqa: F811
    text = (Path(__file__).parent / "skills" / "echo" / "skill.yaml").read_text().replace("memory: 1MiB", "memory: 64KiB")
    pkg = build("echo", tmp_path, key=publisher[0], manifest=text)
    assert refuse(skill_store, pkg) == "module 'echo.wasm' needs 128KiB of memory at start, above its quota of 64KiB"
    pkg = build("echo", tmp_path, key=None)
    (pkg / "echo.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00\x05")
    sign_package(pkg, publisher[0])
    assert refuse(skill_store, pkg).startswith("module 'echo.wasm' is not valid WebAssembly: ")


def test_downgrade_and_quarantined_replace_are_refused(tmp_path: Path, skill_store: SkillStore, publisher) -> None:  # noqa: F811
    text = (Path(__file__).parent / "skills" / "echo" / "skill.yaml").read_text()
    skill_store.install(build("echo", tmp_path / "v2", key=publisher[0], manifest=text.replace("1.0.0", "2.0.0")))
    old = build("echo", tmp_path / "v1", key=publisher[0])
    with pytest.raises(Conflict) as exc:
        skill_store.install(old)
    assert exc.value.message == "skill 'echo' 2.0.0 is installed; refusing to downgrade to 1.0.0 without --force"
    assert skill_store.install(old, force=True).version == "1.0.0"
    assert len(list((tmp_path / "state" / "skills" / "installed").iterdir())) == 1
    skill_store.quarantine("echo", "operator says so")
    with pytest.raises(Conflict) as exc:
        skill_store.install(build("echo", tmp_path / "v3", key=publisher[0], manifest=text.replace("1.0.0", "3.0.0")))
    assert exc.value.message == "skill 'echo' is quarantined (operator says so); release or remove it first"


def test_trust_store_add_remove(tmp_path: Path) -> None:
    store = SkillStore(tmp_path / "state")
    _, pub = new_key()
    assert store.trust.add("acme", pub) == pub
    assert store.trust.publishers() == {"acme": [pub]}
    with pytest.raises(PalyraError) as exc:
        store.trust.add("acme", "ed25519:AAAA")
    assert exc.value.message == "'ed25519:AAAA' is not an Ed25519 public key (expected ed25519:<base64 of 32 bytes>)"
    store.trust.remove("acme")
    assert store.trust.keys_for("acme") is None


def test_a_missing_index_is_empty_and_a_broken_one_is_named(tmp_path: Path) -> None:
    store = SkillStore(tmp_path / "state")
    assert store.ids() == set() and store.trust.publishers() == {}
    store.index_path.parent.mkdir(parents=True, exist_ok=True)
    for path, what, shape in ((store.index_path, "skills index", ""),
                              (store.trust.path, "trust store", " (expected {'publishers': {...}})")):
        path.write_text('{"version": 1}')
        with pytest.raises(PalyraError) as e:
            store.ids() if what == "skills index" else store.trust.publishers()
        assert e.value.message == f"{path}: malformed {what}{shape}"
        path.write_text("{not json")
        with pytest.raises(PalyraError, match=rf"^{path}: unreadable {what} \(Expecting property name"):
            store.ids() if what == "skills index" else store.trust.publishers()
