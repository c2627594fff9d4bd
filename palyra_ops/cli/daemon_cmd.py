"""`palyra-ops daemon`: run the scheduler, gateway and console API in one process (SPEC §5)."""

from __future__ import annotations

import argparse
from pathlib import Path

from palyra_ops.cli._common import add_journal_flag
from palyra_ops.statepaths import StatePaths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daemon", help="run the daemon: HTTP API, scheduler and maintenance tasks",
                       description="Run the daemon: the HTTP API (console + gateway), the embedded scheduler "
                                   "and the maintenance tasks, in one process.")
    p.add_argument("--config", type=Path, default=None, help="daemon config file (palyra.yaml); flags override it")
    p.add_argument("--dir", type=Path, default=None, help="routine directory (default: routines.d)")
    p.add_argument("--watch", action="store_true", default=None, help="reload the routine directory on change")
    p.add_argument("--self-heal", action="store_true", default=None,
                   help="with --watch: put managed routines changed through the API back to the git version")
    p.add_argument("--rescan-interval", default=None,
                   help="with --watch: full rescan period catching dropped events (default 5m)")
    add_journal_flag(p)
    p.add_argument("--listen", default=None, help="HOST:PORT to bind (default 127.0.0.1:7142)")
    p.add_argument("--allow-remote", action="store_true", default=None,
                   help="allow a non-loopback listen address (only behind TLS termination)")
    p.add_argument("--backend", choices=["echo", "http", "openai"], default=None, help="agent backend (default echo)")
    p.add_argument("--backend-url", default=None, help="URL of the http/openai backend")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None,
                   help="log verbosity (default info)")
    p.add_argument("--tracing", choices=["off", "otel"], default=None,
                   help="otel: export spans of every run (dispatch, run, delivery) to OpenTelemetry "
                        "(needs palyra-ops[otel]); the W3C traceparent is carried either way")
    p.add_argument("--log-format", choices=["text", "json"], default=None,
                   help="log lines as text (default) or JSON lines (one object per line; runs carry their fields)")
    p.add_argument("--skills-audit-interval", default=None,
                   help="re-verify installed skills this often (default 6h; 0 disables)")
    p.add_argument("--max-body-bytes", default=None, type=int,
                   help="refuse request bodies larger than this with 413 (default 1048576 = 1 MiB)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from palyra_ops.config import load_config
    from palyra_ops.daemon import run_daemon

    config = load_config(
        args.config,
        listen=args.listen,
        journal=args.journal,
        dir=args.dir,
        watch=args.watch,
        self_heal=args.self_heal,
        rescan_interval=args.rescan_interval,
        allow_remote=args.allow_remote,
        backend=args.backend,
        backend_url=args.backend_url,
        log_level=args.log_level,
        log_format=args.log_format,
        tracing=args.tracing,
        skills_audit_interval=args.skills_audit_interval,
        max_body_bytes=args.max_body_bytes,
    )
    # the config file may name the state root and the journal: the paths are built from it, once
    return run_daemon(config, StatePaths.from_env(root=config.state_root, journal=config.journal))
