"""Skill packages on disk: the file set, its canonical payload hash, and the detached signature.

A package is a directory (or a `.tar.gz` of one) holding `skill.yaml`, the `.wasm` module(s), any
other files, and `skill.sig`. The signature covers *every* file through one canonical payload:

    palyra-skill-payload/v1\\n
    <sha256 hex>  <path>\\n        one line per file except skill.sig, sorted by UTF-8 bytes of path

The Ed25519 signature is over `palyra-skill-signature/v1\\0` + the payload's SHA-256 hex, so a
signature made for something else (another protocol, another payload version) never verifies here.
Because the payload lists every path, adding, removing or renaming a file breaks it as surely as
editing one; `skill.sig` also carries the per-file map so a refusal can name the file at fault.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from palyra_ops.errors import PalyraError
from palyra_ops.fsmodes import private_dir
from palyra_ops.skills.manifest import MANIFEST_FILE, Manifest, parse_manifest

SIGNATURE_FILE = "skill.sig"
PAYLOAD_HEADER = b"palyra-skill-payload/v1\n"
SIGNATURE_DOMAIN = b"palyra-skill-signature/v1\x00"
SIGNATURE_FORMAT = "palyra-skill-signature/v1"

MAX_FILES = 256
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_PACKAGE_BYTES = 64 * 1024 * 1024


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def collect_files(root: Path) -> dict[str, str]:
    """Map every regular file under `root` (except skill.sig) to its SHA-256.

    Symlinks and special files are refused outright: a link could point the verified bytes
    somewhere else after install, and a FIFO could block the verifier.
    """
    if not root.is_dir():
        raise PalyraError(f"{root}: not a skill package directory")
    files: dict[str, str] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            size = _payload_file_size(full, rel)
            if size is None:
                continue
            total += size
            if total > MAX_PACKAGE_BYTES:
                raise PalyraError(f"package is larger than {MAX_PACKAGE_BYTES} bytes")
            if len(files) >= MAX_FILES:
                raise PalyraError(f"package holds more than {MAX_FILES} files")
            files[rel] = sha256_file(full)
    return files


def _payload_file_size(full: Path, rel: str) -> int | None:
    """The size of a package entry that is part of the signed payload; None for a directory or the
    signature itself; PalyraError for anything a package may not hold."""
    st = full.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise PalyraError(f"package file {rel!r} is a symbolic link; packages may hold only regular files")
    if stat.S_ISDIR(st.st_mode):
        return None
    if not stat.S_ISREG(st.st_mode):
        raise PalyraError(f"package file {rel!r} is not a regular file")
    if "\n" in rel or "\\" in rel:
        raise PalyraError(f"package file name {rel!r} contains a newline or backslash")
    if rel == SIGNATURE_FILE:
        return None
    if st.st_size > MAX_FILE_BYTES:
        raise PalyraError(f"package file {rel!r} is larger than {MAX_FILE_BYTES} bytes")
    return st.st_size


def payload_bytes(files: dict[str, str]) -> bytes:
    lines = [PAYLOAD_HEADER]
    for rel in sorted(files, key=lambda p: p.encode("utf-8")):
        lines.append(f"{files[rel]}  {rel}\n".encode())
    return b"".join(lines)


def payload_sha256(files: dict[str, str]) -> str:
    return hashlib.sha256(payload_bytes(files)).hexdigest()


def _signed_message(payload_hex: str) -> bytes:
    return SIGNATURE_DOMAIN + payload_hex.encode("ascii")


# --- keys -----------------------------------------------------------------------------------------


def encode_public_key(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + base64.b64encode(raw).decode("ascii")


def decode_public_key(text: str) -> Ed25519PublicKey:
    """Accept `ed25519:<base64>` or bare base64 of the 32 raw key bytes."""
    body = text.strip()
    if body.startswith("ed25519:"):
        body = body[len("ed25519:"):]
    try:
        raw = base64.b64decode(body, validate=True)
        if len(raw) != 32:
            raise ValueError
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise PalyraError(f"{text!r} is not an Ed25519 public key (expected ed25519:<base64 of 32 bytes>)") from None


def key_fingerprint(text: str) -> str:
    """Short stable id of a public key for messages and listings (SHA-256 of the raw key, 16 hex)."""
    raw = decode_public_key(text).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(private_path: Path) -> str:
    """Write a new PEM private key with mode 0600 and return the encoded public key."""
    if private_path.exists():
        raise PalyraError(f"{private_path}: already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_dir(private_path.parent)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return encode_public_key(key.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise PalyraError(f"{path}: no such key file") from None
    except (ValueError, TypeError) as exc:
        raise PalyraError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PalyraError(f"{path}: not an Ed25519 private key")
    return key


# --- signing and reading signatures ---------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    publisher: str
    public_key: str  # ed25519:<base64>
    payload_sha256: str
    files: dict[str, str]
    signature: bytes


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST_FILE
    if not path.is_file() or path.is_symlink():
        raise PalyraError(f"package has no {MANIFEST_FILE}")
    return parse_manifest(path.read_bytes())


def sign_package(root: Path, private_key: Ed25519PrivateKey) -> Signature:
    """Write `skill.sig` for the package at `root` (publisher taken from its manifest)."""
    manifest = read_manifest(root)
    files = collect_files(root)
    payload = payload_sha256(files)
    sig = private_key.sign(_signed_message(payload))
    doc = {
        "format": SIGNATURE_FORMAT,
        "publisher": manifest.publisher,
        "public_key": encode_public_key(private_key.public_key()),
        "payload_sha256": payload,
        "files": dict(sorted(files.items())),
        "signature": base64.b64encode(sig).decode("ascii"),
    }
    tmp = root / (SIGNATURE_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / SIGNATURE_FILE)
    return Signature(manifest.publisher, doc["public_key"], payload, files, sig)


def read_signature(root: Path) -> Signature:
    path = root / SIGNATURE_FILE
    if not path.exists():
        raise PalyraError(f"package is unsigned: no {SIGNATURE_FILE}", code="unsigned")
    if path.is_symlink() or not path.is_file():
        raise PalyraError(f"{SIGNATURE_FILE} is not a regular file", code="bad_signature")
    try:
        doc = json.loads(path.read_bytes()[:1 << 20])
        if doc.get("format") != SIGNATURE_FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, expected {SIGNATURE_FORMAT!r}")
        files = doc["files"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise ValueError("files must map paths to SHA-256 hex")
        return Signature(
            publisher=str(doc["publisher"]),
            public_key=str(doc["public_key"]),
            payload_sha256=str(doc["payload_sha256"]),
            files=files,
            signature=base64.b64decode(doc["signature"], validate=True),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PalyraError(f"{SIGNATURE_FILE} is malformed: {exc}", code="bad_signature") from None


def verify_signature(sig: Signature, trusted_keys: list[str]) -> None:
    """Check the signature against the publisher's trusted keys and that the file map matches it.

    Only keys from the trust store count; the key embedded in `skill.sig` merely says which one was
    used, so a package signed with an attacker's own key is refused as "not trusted".
    """
    if sig.public_key not in trusted_keys:
        raise PalyraError(
            f"package is signed with key {_fp(sig.public_key)}, which is not trusted for publisher "
            f"{sig.publisher!r}",
            code="untrusted_key",
        )
    try:
        decode_public_key(sig.public_key).verify(sig.signature, _signed_message(sig.payload_sha256))
    except InvalidSignature:
        raise PalyraError("signature does not verify: the package was not signed by this key", code="bad_signature") from None
    if payload_sha256(sig.files) != sig.payload_sha256:
        raise PalyraError(f"{SIGNATURE_FILE}: file list does not match the signed payload hash", code="bad_signature")


def _fp(key: str) -> str:
    try:
        return key_fingerprint(key)
    except PalyraError:
        return repr(key)


def compare_files(signed: dict[str, str], actual: dict[str, str]) -> None:
    """Name the first difference between the signed file map and what is on disk."""
    for rel in sorted(set(signed) | set(actual)):
        if rel not in actual:
            raise PalyraError(f"file {rel!r} is covered by the signature but missing", code="tampered")
        if rel not in signed:
            raise PalyraError(f"file {rel!r} is not covered by the signature", code="tampered")
        if signed[rel] != actual[rel]:
            raise PalyraError(
                f"file {rel!r} was modified: sha256 {actual[rel][:16]}… does not match signed {signed[rel][:16]}…",
                code="tampered",
            )


# --- archives --------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_package(path: Path) -> Iterator[Path]:
    """Yield a directory holding the package at `path` (a directory, or a .tar.gz extracted safely)."""
    if path.is_dir():
        yield path
        return
    if not path.exists():
        raise PalyraError(f"{path}: no such file or directory")
    if not (path.name.endswith(".tar.gz") or path.name.endswith(".tgz")):
        raise PalyraError(f"{path}: expected a package directory or a .tar.gz archive")
    with tempfile.TemporaryDirectory(prefix="palyra-skill-") as tmp:
        dest = Path(tmp)
        _extract(path, dest)
        entries = [p for p in dest.iterdir()]
        if len(entries) == 1 and entries[0].is_dir() and not (dest / MANIFEST_FILE).exists():
            yield entries[0]
        else:
            yield dest


def _extract(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            if len(members) > MAX_FILES * 2:
                raise PalyraError(f"{archive}: more than {MAX_FILES} entries")
            total = 0
            for m in members:
                if not (m.isfile() or m.isdir()):
                    raise PalyraError(f"{archive}: entry {m.name!r} is not a regular file or directory")
                total += m.size
                if total > MAX_PACKAGE_BYTES:
                    raise PalyraError(f"{archive}: larger than {MAX_PACKAGE_BYTES} bytes unpacked")
            # the 'data' filter refuses absolute paths, '..' and links leaving the destination
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PalyraError(f"{archive}: not a readable .tar.gz package ({exc})") from None


def write_archive(root: Path, archive: Path) -> None:
    """Pack a (signed) package directory as .tar.gz with a single top-level directory."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=root.name)
