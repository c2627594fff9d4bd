"""`palyra-ops skills ...`: install, inspect, audit and quarantine skills; publisher tooling."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from palyra_ops.cli._common import add_output_flag, as_json, command_group, emit, state_paths
from palyra_ops.errors import PalyraError

if TYPE_CHECKING:
    from palyra_ops.skills.sandbox import SkillResult
    from palyra_ops.skills.store import AuditResult, InstalledSkill, SkillStore
    from palyra_ops.statepaths import StatePaths


def register(subparsers: argparse._SubParsersAction) -> None:
    _, sub = command_group(subparsers, "skills", "manage WASM skills (install, list, audit, quarantine, ...)",
                           metavar="SUBCOMMAND")

    s = sub.add_parser("install", help="verify a skill package (directory or .tar.gz) and install it")
    s.add_argument("path", type=Path)
    s.add_argument("--force", action="store_true", help="allow installing a lower version")
    add_output_flag(s)
    s.set_defaults(func=_install)

    for name, text, func in (
        ("list", "list installed skills", _list),
        ("audit", "re-verify every installed skill now; quarantines failures (exit 1 if any)", _audit),
    ):
        s = sub.add_parser(name, help=text)
        add_output_flag(s)
        s.set_defaults(func=func)

    s = sub.add_parser("quarantine", help="stop a skill from running until released")
    s.add_argument("skill_id")
    s.add_argument("--reason", default="quarantined by operator")
    s.set_defaults(func=_quarantine)

    for name, text, func in (
        ("release", "lift a quarantine (the skill must verify again)", _release),
        ("remove", "uninstall a skill", _remove),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("skill_id")
        s.set_defaults(func=func)

    s = sub.add_parser("run", help="run an installed skill locally (capabilities only via --grant)")
    s.add_argument("skill_id")
    s.add_argument("--input", default="{}", help="JSON object passed as the skill's `input`")
    s.add_argument("--prompt", default="")
    s.add_argument("--grant", action="append", default=[], metavar="CAP", help="grant a declared capability")
    add_output_flag(s)
    s.set_defaults(func=_run)

    s = sub.add_parser("keygen", help="create an Ed25519 publisher key (PEM, mode 0600); prints the public key")
    s.add_argument("keyfile", type=Path)
    s.set_defaults(func=_keygen)

    s = sub.add_parser("sign", help="sign a package directory with a publisher key (writes skill.sig)")
    s.add_argument("dir", type=Path)
    s.add_argument("--key", type=Path, required=True)
    s.add_argument("--archive", type=Path, default=None, help="also write the signed package as .tar.gz")
    s.set_defaults(func=_sign)

    t = sub.add_parser("trust", help="manage trusted publisher keys")
    tsub = t.add_subparsers(dest="trust_command", metavar="SUBCOMMAND")
    tsub.required = True
    s = tsub.add_parser("add", help="trust PUBKEY (ed25519:<base64>) for PUBLISHER")
    s.add_argument("publisher")
    s.add_argument("pubkey")
    s.set_defaults(func=_trust_add)
    s = tsub.add_parser("remove", help="revoke a key, or the whole publisher without PUBKEY")
    s.add_argument("publisher")
    s.add_argument("pubkey", nargs="?")
    s.set_defaults(func=_trust_remove)
    s = tsub.add_parser("list", help="list trusted publishers and key fingerprints")
    add_output_flag(s)
    s.set_defaults(func=_trust_list)


def _store(paths: StatePaths | None = None) -> SkillStore:
    """Imported lazily so `palyra-ops --help` does not load wasmtime."""
    from palyra_ops.skills.store import SkillStore

    return SkillStore((paths or state_paths()).root)


def _install(args: argparse.Namespace) -> int:
    emit(_store().install(args.path, force=args.force), args.output, lambda skill: (
        f"installed {skill.id} {skill.version} from {skill.publisher} (sha256 {skill.module_sha256[:16]}…, "
        f"capabilities: {', '.join(skill.capabilities) or 'none'})"))
    return 0


def _list(args: argparse.Namespace) -> int:
    emit(_store().list(), args.output, {
        "text": _skills_table,
        "json": lambda skills: as_json({"skills": [s.to_json() for s in skills]}),
    })
    return 0


def _skills_table(skills: list[InstalledSkill]) -> str:
    if not skills:
        return "no skills installed"
    rows = [("ID", "VERSION", "PUBLISHER", "STATUS", "SHA256", "CAPABILITIES")]
    rows += [(s.id, s.version, s.publisher, s.status, s.module_sha256[:12], ", ".join(s.capabilities) or "-")
             for s in skills]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1] for r in rows]
    lines += [f"{s.id}: quarantined: {s.quarantine_reason}" for s in skills if s.quarantined]
    return "\n".join(lines)


def _audit(args: argparse.Namespace) -> int:
    results = _store().audit()
    emit(results, args.output, {
        "text": _audit_text,
        "json": lambda results: as_json({"results": [r.to_json() for r in results]}),
    })
    return 0 if all(r.ok for r in results) else 1


def _audit_text(results: list[AuditResult]) -> str:
    if not results:
        return "no skills installed"
    return "\n".join(
        f"{r.skill_id}: ok" if r.ok
        else f"{r.skill_id}: FAILED ({'quarantined' if r.newly_quarantined else 'still failing'}): {r.reason}"
        for r in results
    )


def _quarantine(args: argparse.Namespace) -> int:
    _store().quarantine(args.skill_id, args.reason)
    print(f"{args.skill_id}: quarantined")
    return 0


def _release(args: argparse.Namespace) -> int:
    _store().release(args.skill_id)
    print(f"{args.skill_id}: released")
    return 0


def _remove(args: argparse.Namespace) -> int:
    _store().remove(args.skill_id)
    print(f"{args.skill_id}: removed")
    return 0


def _run(args: argparse.Namespace) -> int:
    from palyra_ops.skills.sandbox import SkillRunner, default_cache_dir

    try:
        user_input = json.loads(args.input)
    except ValueError as exc:
        raise PalyraError(f"--input is not JSON: {exc}") from None
    if not isinstance(user_input, dict):
        raise PalyraError("--input must be a JSON object")
    paths = state_paths()
    store = _store(paths)
    runner = SkillRunner(store, default_cache_dir(paths.root))
    try:
        result = runner.run(
            args.skill_id,
            {"prompt": args.prompt, "trigger": {"kind": "manual"}, "input": user_input},
            granted=set(args.grant),
        )
    finally:
        runner.close()
    emit(result, args.output, _run_text)
    if not result.ok:
        print(f"palyra-ops: {'denied' if result.denied else 'failed'}: {result.reason}", file=sys.stderr)
        return 1
    return 0


def _run_text(result: SkillResult) -> str:
    """The skill's output as it is (a final newline of its own kept); nothing for a failed run."""
    if not result.ok:
        return ""
    out = result.output
    return (json.dumps(out, ensure_ascii=False) if isinstance(out, dict) else str(out)) + "\n"


def _keygen(args: argparse.Namespace) -> int:
    from palyra_ops.skills.package import generate_keypair, key_fingerprint

    pub = generate_keypair(args.keyfile)
    print(pub)
    print(f"wrote private key to {args.keyfile} (fingerprint {key_fingerprint(pub)})", file=sys.stderr)
    return 0


def _sign(args: argparse.Namespace) -> int:
    from palyra_ops.skills.package import key_fingerprint, load_private_key, sign_package, write_archive

    sig = sign_package(args.dir, load_private_key(args.key))
    print(f"signed {len(sig.files)} files as {sig.publisher} with {key_fingerprint(sig.public_key)} (payload sha256 {sig.payload_sha256})")
    if args.archive is not None:
        write_archive(args.dir, args.archive)
        print(f"wrote {args.archive}")
    return 0


def _trust_add(args: argparse.Namespace) -> int:
    from palyra_ops.skills.package import key_fingerprint

    key = _store().trust.add(args.publisher, args.pubkey)
    print(f"trusting {key_fingerprint(key)} for publisher {args.publisher}")
    return 0


def _trust_remove(args: argparse.Namespace) -> int:
    _store().trust.remove(args.publisher, args.pubkey)
    what = "key" if args.pubkey else "publisher"
    print(f"removed {what} from the trust store; run `palyra-ops skills audit` to quarantine what it signed")
    return 0


def _trust_list(args: argparse.Namespace) -> int:
    from palyra_ops.skills.package import key_fingerprint

    emit(_store().trust.publishers(), args.output, {
        "text": lambda pubs: "\n".join(f"{p}  {key_fingerprint(k)}  {k}" for p, keys in pubs.items() for k in keys)
        if pubs else "no trusted publishers",
        "json": lambda pubs: as_json({"publishers": {
            p: [{"key": k, "fingerprint": key_fingerprint(k)} for k in keys] for p, keys in pubs.items()}}),
    })
    return 0
