"""`palyra-ops token`: print the console API token (SPEC §6)."""

from __future__ import annotations

import argparse

from palyra_ops.cli._common import state_paths
from palyra_ops.errors import PalyraError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="print the console API token",
                       description="Print the bearer token of the console API, kept in the state root "
                                   "($PALYRA_STATE_ROOT/token, mode 0600). The daemon creates it on first start.")
    p.add_argument("--create", action="store_true", help="create the token now if there is none yet")
    p.add_argument("--path", action="store_true", help="print the token file's path instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from palyra_ops.client import resolve_target
    from palyra_ops.daemon import ensure_token, read_token, token_path

    # the token of the daemon the other commands would talk to (e.g. the one `make run` started in
    # ./.palyra), unless creating one, which is always for $PALYRA_STATE_ROOT / the default root
    root = state_paths(args).root if args.create else resolve_target().state_root
    if args.path:
        print(token_path(root))
        return 0
    tok = ensure_token(root) if args.create else read_token(root)
    if tok is None:
        raise PalyraError(f"no token at {token_path(root)} yet: start the daemon once (or run `palyra-ops token --create`)")
    print(tok)
    return 0
