"""`palyra-ops skills ...`: install, inspect, audit and quarantine skills; publisher tooling."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from palyra_ops.cli._common import Lazy, add_output_flag, emit, state_paths
from palyra_ops.errors import PalyraError
from palyra_ops.statepaths import StatePaths

if TYPE_CHECKING:
    from palyra_ops.skills.store import SkillStore


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("skills", help="manage WASM skills (install, list, audit, quarantine, ...)")
    sub = p.add_subparsers(dest="skills_command", metavar="SUBCOMMAND")
    sub.required = True

    s = sub.add_parser("install", help="verify a skill package (directory or .tar.gz) and install it")
    s.add_argument("path", type=Path, help="skill package: a directory or a .tar.gz")
    s.add_argument("--force", action="store_true", help="allow installing a lower version")
    add_output_flag(s)
    s.set_defaults(func=_install)

    s = sub.add_parser("list", help="list installed skills")
    add_output_flag(s)
    s.set_defaults(func=_list)

    s = sub.add_parser("audit", help="re-verify every installed skill now; quarantines failures (exit 1 if any)")
    add_output_flag(s)
    s.set_defaults(func=_audit)

    for name, text in _STATE_CHANGES.items():
        s = sub.add_parser(name, help=text)
        s.add_argument("skill_id", help="installed skill id")
        if name == "quarantine":
            s.add_argument("--reason", default="quarantined by operator",
                           help="why, recorded with the quarantine (default: quarantined by operator)")
        s.set_defaults(func=_change_state)

    s = sub.add_parser("run", help="run an installed skill locally (capabilities only via --grant)")
    s.add_argument("skill_id", help="installed skill id")
    s.add_argument("--input", default="{}", help="JSON object passed as the skill's `input`")
    s.add_argument("--prompt", default="", help="text passed as the skill's `prompt` (default empty)")
    s.add_argument("--grant", action="append", default=[], metavar="CAP", help="grant a declared capability")
    add_output_flag(s)
    s.set_defaults(func=_run)

    s = sub.add_parser("keygen", help="create an Ed25519 publisher key (PEM, mode 0600); prints the public key")
    s.add_argument("keyfile", type=Path, help="where to write the private key (PEM)")
    s.set_defaults(func=_keygen)

    s = sub.add_parser("sign", help="sign a package directory with a publisher key (writes skill.sig)")
    s.add_argument("dir", type=Path, help="skill package directory to sign")
    s.add_argument("--key", type=Path, required=True, help="publisher private key (PEM, from `skills keygen`)")
    s.add_argument("--archive", type=Path, default=None, help="also write the signed package as .tar.gz")
    s.set_defaults(func=_sign)

    t = sub.add_parser("trust", help="manage trusted publisher keys")
    tsub = t.add_subparsers(dest="trust_command", metavar="SUBCOMMAND")
    tsub.required = True
    s = tsub.add_parser("add", help="trust PUBKEY (ed25519:<base64>) for PUBLISHER")
    s.add_argument("publisher", help="publisher name")
    s.add_argument("pubkey", help="public key, ed25519:<base64>")
    s.set_defaults(func=_trust_add)
    s = tsub.add_parser("remove", help="revoke a key, or the whole publisher without PUBKEY")
    s.add_argument("publisher", help="publisher name")
    s.add_argument("pubkey", nargs="?", help="the key to revoke (default: every key of PUBLISHER)")
    s.set_defaults(func=_trust_remove)
    s = tsub.add_parser("list", help="list trusted publishers and key fingerprints")
    add_output_flag(s)
    s.set_defaults(func=_trust_list)


#: skill state changes: sub-command → help (each prints `ID: <past tense>`)
_STATE_CHANGES = {
    "quarantine": "stop a skill from running until released",
    "release": "lift a quarantine (the skill must verify again)",
    "remove": "uninstall a skill",
}
_DONE = {"quarantine": "quarantined", "release": "released", "remove": "removed"}


def _paths(args: argparse.Namespace) -> StatePaths:
    return state_paths(args)


def _store(args: argparse.Namespace) -> SkillStore:
    """Imported lazily so `palyra-ops --help` does not load wasmtime."""
    from palyra_ops.skills.store import SkillStore

    return SkillStore(_paths(args).root)


def _install(args: argparse.Namespace) -> int:
    emit(_store(args).install(args.path, force=args.force), args.output, _installed_text)
    return 0


def _installed_text(skill: Any) -> str:
    caps = ", ".join(skill.capabilities) or "none"
    return (f"installed {skill.id} {skill.version} from {skill.publisher} "
            f"(sha256 {skill.module_sha256[:16]}…, capabilities: {caps})")


def _list(args: argparse.Namespace) -> int:
    skills = _store(args).list()
    emit(Lazy(lambda: {"skills": [s.to_json() for s in skills]}), args.output, lambda _: _skills_text(skills))
    return 0


def _skills_text(skills: list[Any]) -> str:
    if not skills:
        return "no skills installed"
    rows = [("ID", "VERSION", "PUBLISHER", "STATUS", "SHA256", "CAPABILITIES")]
    for s in skills:
        rows.append((s.id, s.version, s.publisher, s.status, s.module_sha256[:12], ", ".join(s.capabilities) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1] for r in rows]
    lines += [f"{s.id}: quarantined: {s.quarantine_reason}" for s in skills if s.quarantined]
    return "\n".join(lines)


def _audit(args: argparse.Namespace) -> int:
    results = _store(args).audit()
    emit(Lazy(lambda: {"results": [r.to_json() for r in results]}), args.output, lambda _: _audit_text(results))
    return 0 if all(r.ok for r in results) else 1


def _audit_text(results: list[Any]) -> str:
    lines = [] if results else ["no skills installed"]
    for r in results:
        tag = "quarantined" if r.newly_quarantined else "still failing"
        lines.append(f"{r.skill_id}: ok" if r.ok else f"{r.skill_id}: FAILED ({tag}): {r.reason}")
    return "\n".join(lines)


def _change_state(args: argparse.Namespace) -> int:
    store = _store(args)
    action = args.skills_command
    if action == "quarantine":
        store.quarantine(args.skill_id, args.reason)
    elif action == "release":
        store.release(args.skill_id)
    else:
        store.remove(args.skill_id)
    print(f"{args.skill_id}: {_DONE[action]}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from palyra_ops.skills.sandbox import SkillRunner, default_cache_dir

    try:
        user_input = json.loads(args.input)
    except ValueError as exc:
        raise PalyraError(f"--input is not JSON: {exc}") from None
    if not isinstance(user_input, dict):
        raise PalyraError("--input must be a JSON object")
    store = _store(args)
    runner = SkillRunner(store, default_cache_dir(_paths(args).root))
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


def _run_text(result: Any) -> str:
    """The skill's output (a dict as one JSON line); a failed run prints nothing here (the reason goes
    to stderr)."""
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

    key = _store(args).trust.add(args.publisher, args.pubkey)
    print(f"trusting {key_fingerprint(key)} for publisher {args.publisher}")
    return 0


def _trust_remove(args: argparse.Namespace) -> int:
    _store(args).trust.remove(args.publisher, args.pubkey)
    what = "key" if args.pubkey else "publisher"
    print(f"removed {what} from the trust store; run `palyra-ops skills audit` to quarantine what it signed")
    return 0


def _trust_list(args: argparse.Namespace) -> int:
    from palyra_ops.skills.package import key_fingerprint

    pubs = _store(args).trust.publishers()
    doc = {"publishers": {p: [{"key": k, "fingerprint": key_fingerprint(k)} for k in keys] for p, keys in pubs.items()}}
    emit(doc, args.output, _publishers_text)
    return 0


def _publishers_text(doc: dict[str, Any]) -> str:
    if not doc["publishers"]:
        return "no trusted publishers"
    return "\n".join(f"{p}  {k['fingerprint']}  {k['key']}" for p, keys in doc["publishers"].items() for k in keys)
